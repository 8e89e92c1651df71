"""Joint sets as data: names, parents, bones, default bone widths, and maps between sets.

Every joint set names its joints with its own conventional names (``names``) and
with a shared anatomical vocabulary (``canonical``, e.g. ``"left_knee"``). Maps
between joint sets go through that vocabulary: a target joint is copied from the
source joint with the same canonical name, or built as a weighted mean of source
joints (``DERIVED`` below, e.g. a pelvis centre from the two hips), or is missing.

Left/right always mean the subject's own left and right.

Trees are rooted at one real joint (``parents[root] == -1``). Joint sets without a
pelvis centre (COCO-17, BODY_25B) use the neck or nose as root; that is a choice
of tree only, it does not change any joint.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engine import MarionetteError

# Default Gaussian widths (metres, 1-sigma radius across the bone) by body part,
# from Rochette et al. Keys are matched against the *child* joint's canonical name.
PART_WIDTHS = {
    "thigh": 0.075,
    "shin": 0.05,
    "upper_arm": 0.04,
    "forearm": 0.035,
    "hand": 0.03,
    "foot": 0.035,
    "toe": 0.025,
    "head": 0.02,
    "neck": 0.02,
    "spine": 0.05,
    "collar": 0.045,
    "hip": 0.06,
}


def part_of_bone(parent: str, child: str) -> str:
    """Body part of the bone parent->child, from canonical joint names."""
    c, p = child, parent
    if c.endswith("knee"):
        return "thigh"
    if c.endswith("ankle"):
        return "shin"
    if c.endswith("elbow"):
        return "upper_arm"
    if c.endswith("wrist"):
        return "forearm"
    if c.endswith("hand"):
        return "hand"
    if c.endswith("heel") or c.endswith("foot"):
        return "foot"
    if "toe" in c:
        return "toe"
    if c.endswith("shoulder"):
        return "collar" if (p.startswith("neck") or p.startswith("spine") or p.endswith("collar") or p == "thorax") else "spine"
    if c.endswith("collar"):
        return "collar"
    if c.endswith("hip"):
        # a hip hanging off the pelvis is a short pelvis bone; off the neck it is the torso side
        return "hip" if p in ("pelvis",) else "spine"
    if c in ("nose", "head", "head_top") or "eye" in c or "ear" in c:
        return "head"
    if c.startswith("neck") or c == "upper_neck":
        # a neck joint hanging off the pelvis closes the whole torso
        return "spine" if (p == "pelvis" or p.startswith("spine") or p == "thorax") else "neck"
    return "spine"


@dataclass(frozen=True)
class JointSet:
    """A named joint set: joint names, a kinematic tree and the bones to render.

    names:     conventional names, as in the source format (e.g. OpenPose's ``"RKnee"``)
    canonical: shared anatomical names used to map between sets (``"right_knee"``)
    parents:   parent index per joint, -1 for the root
    extra_bones: bones rendered in addition to the tree edges (e.g. across the hips)
    """

    name: str
    names: tuple[str, ...]
    canonical: tuple[str, ...]
    parents: tuple[int, ...]
    extra_bones: tuple[tuple[int, int], ...] = field(default=())
    description: str = ""

    def __post_init__(self):
        n = len(self.names)
        if not (len(self.canonical) == len(self.parents) == n):
            raise ValueError(f"joint set {self.name}: names, canonical and parents differ in length")
        roots = [i for i, p in enumerate(self.parents) if p == -1]
        if len(roots) != 1:
            raise ValueError(f"joint set {self.name}: expected exactly one root, got {roots}")
        # every joint must reach the root (no cycles)
        for i in range(n):
            seen, j = set(), i
            while j != -1:
                if j in seen:
                    raise ValueError(f"joint set {self.name}: cycle through joint {self.names[j]}")
                seen.add(j)
                j = self.parents[j]

    @property
    def num_joints(self) -> int:
        return len(self.names)

    @property
    def root(self) -> int:
        return self.parents.index(-1)

    @property
    def tree_bones(self) -> list[tuple[int, int]]:
        """(parent, child) for every non-root joint, in joint order."""
        return [(p, c) for c, p in enumerate(self.parents) if p >= 0]

    @property
    def bones(self) -> list[tuple[int, int]]:
        """Bones rendered as Gaussian primitives: tree edges, then extra bones."""
        return self.tree_bones + list(self.extra_bones)

    @property
    def bone_array(self) -> np.ndarray:
        return np.asarray(self.bones, dtype=np.int64).reshape(-1, 2)

    @property
    def bone_names(self) -> list[str]:
        return [f"{self.names[a]}-{self.names[b]}" for a, b in self.bones]

    @property
    def default_widths(self) -> np.ndarray:
        """Default 1-sigma width in metres of every bone in ``bones``."""
        return np.array(
            [PART_WIDTHS[part_of_bone(self.canonical[a], self.canonical[b])] for a, b in self.bones],
            dtype=np.float32,
        )

    def index(self, name: str) -> int:
        """Index of a joint by conventional or canonical name."""
        if name in self.names:
            return self.names.index(name)
        if name in self.canonical:
            return self.canonical.index(name)
        raise KeyError(f"joint set {self.name} has no joint named {name!r}")

    def children(self, joint: int) -> list[int]:
        return [c for c, p in enumerate(self.parents) if p == joint]

    def topological_order(self) -> list[int]:
        """Joint indices with every parent before its children."""
        order, frontier = [], [self.root]
        while frontier:
            j = frontier.pop(0)
            order.append(j)
            frontier.extend(self.children(j))
        return order


def _set(name, rows, extra=(), description=""):
    """rows: (name, canonical, parent name or None)."""
    names = tuple(r[0] for r in rows)
    parents = tuple(-1 if r[2] is None else names.index(r[2]) for r in rows)
    extra_idx = tuple((names.index(a), names.index(b)) for a, b in extra)
    return JointSet(name, names, tuple(r[1] for r in rows), parents, extra_idx, description)


BODY_25 = _set(
    "BODY_25",
    [
        ("Nose", "nose", "Neck"),
        ("Neck", "neck", "MidHip"),
        ("RShoulder", "right_shoulder", "Neck"),
        ("RElbow", "right_elbow", "RShoulder"),
        ("RWrist", "right_wrist", "RElbow"),
        ("LShoulder", "left_shoulder", "Neck"),
        ("LElbow", "left_elbow", "LShoulder"),
        ("LWrist", "left_wrist", "LElbow"),
        ("MidHip", "pelvis", None),
        ("RHip", "right_hip", "MidHip"),
        ("RKnee", "right_knee", "RHip"),
        ("RAnkle", "right_ankle", "RKnee"),
        ("LHip", "left_hip", "MidHip"),
        ("LKnee", "left_knee", "LHip"),
        ("LAnkle", "left_ankle", "LKnee"),
        ("REye", "right_eye", "Nose"),
        ("LEye", "left_eye", "Nose"),
        ("REar", "right_ear", "REye"),
        ("LEar", "left_ear", "LEye"),
        ("LBigToe", "left_big_toe", "LAnkle"),
        ("LSmallToe", "left_small_toe", "LBigToe"),
        ("LHeel", "left_heel", "LAnkle"),
        ("RBigToe", "right_big_toe", "RAnkle"),
        ("RSmallToe", "right_small_toe", "RBigToe"),
        ("RHeel", "right_heel", "RAnkle"),
    ],
    description="OpenPose BODY_25 (the default OpenPose body model)",
)

BODY_25B = _set(
    "BODY_25B",
    [
        ("Nose", "nose", "Neck"),
        ("LEye", "left_eye", "Nose"),
        ("REye", "right_eye", "Nose"),
        ("LEar", "left_ear", "LEye"),
        ("REar", "right_ear", "REye"),
        ("LShoulder", "left_shoulder", "Neck"),
        ("RShoulder", "right_shoulder", "Neck"),
        ("LElbow", "left_elbow", "LShoulder"),
        ("RElbow", "right_elbow", "RShoulder"),
        ("LWrist", "left_wrist", "LElbow"),
        ("RWrist", "right_wrist", "RElbow"),
        ("LHip", "left_hip", "Neck"),
        ("RHip", "right_hip", "Neck"),
        ("LKnee", "left_knee", "LHip"),
        ("RKnee", "right_knee", "RHip"),
        ("LAnkle", "left_ankle", "LKnee"),
        ("RAnkle", "right_ankle", "RKnee"),
        # BODY_25B's "UpperNeck" sits higher than BODY_25's Neck (between the shoulders).
        ("Neck", "upper_neck", None),
        ("HeadTop", "head_top", "Neck"),
        ("LBigToe", "left_big_toe", "LAnkle"),
        ("LSmallToe", "left_small_toe", "LBigToe"),
        ("LHeel", "left_heel", "LAnkle"),
        ("RBigToe", "right_big_toe", "RAnkle"),
        ("RSmallToe", "right_small_toe", "RBigToe"),
        ("RHeel", "right_heel", "RAnkle"),
    ],
    extra=(("LHip", "RHip"), ("LShoulder", "RShoulder")),
    description="OpenPose experimental BODY_25B (used by Pose2Sim); index 17 is the upper neck, 18 the head top",
)

COCO_17 = _set(
    "COCO_17",
    [
        ("nose", "nose", None),
        ("left_eye", "left_eye", "nose"),
        ("right_eye", "right_eye", "nose"),
        ("left_ear", "left_ear", "left_eye"),
        ("right_ear", "right_ear", "right_eye"),
        ("left_shoulder", "left_shoulder", "nose"),
        ("right_shoulder", "right_shoulder", "nose"),
        ("left_elbow", "left_elbow", "left_shoulder"),
        ("right_elbow", "right_elbow", "right_shoulder"),
        ("left_wrist", "left_wrist", "left_elbow"),
        ("right_wrist", "right_wrist", "right_elbow"),
        ("left_hip", "left_hip", "left_shoulder"),
        ("right_hip", "right_hip", "right_shoulder"),
        ("left_knee", "left_knee", "left_hip"),
        ("right_knee", "right_knee", "right_hip"),
        ("left_ankle", "left_ankle", "left_knee"),
        ("right_ankle", "right_ankle", "right_knee"),
    ],
    extra=(("left_hip", "right_hip"), ("left_shoulder", "right_shoulder")),
    description="COCO keypoints (17 joints)",
)

PANOPTIC_19 = _set(
    "PANOPTIC_19",
    [
        ("Neck", "neck", "BodyCenter"),
        ("Nose", "nose", "Neck"),
        ("BodyCenter", "pelvis", None),
        ("lShoulder", "left_shoulder", "Neck"),
        ("lElbow", "left_elbow", "lShoulder"),
        ("lWrist", "left_wrist", "lElbow"),
        ("lHip", "left_hip", "BodyCenter"),
        ("lKnee", "left_knee", "lHip"),
        ("lAnkle", "left_ankle", "lKnee"),
        ("rShoulder", "right_shoulder", "Neck"),
        ("rElbow", "right_elbow", "rShoulder"),
        ("rWrist", "right_wrist", "rElbow"),
        ("rHip", "right_hip", "BodyCenter"),
        ("rKnee", "right_knee", "rHip"),
        ("rAnkle", "right_ankle", "rKnee"),
        ("lEye", "left_eye", "Nose"),
        ("lEar", "left_ear", "lEye"),
        ("rEye", "right_eye", "Nose"),
        ("rEar", "right_ear", "rEye"),
    ],
    description="CMU Panoptic Studio 19 joints (coco19)",
)

H36M_17 = _set(
    "H36M_17",
    [
        ("Hip", "pelvis", None),
        ("RHip", "right_hip", "Hip"),
        ("RKnee", "right_knee", "RHip"),
        ("RFoot", "right_ankle", "RKnee"),
        ("LHip", "left_hip", "Hip"),
        ("LKnee", "left_knee", "LHip"),
        ("LFoot", "left_ankle", "LKnee"),
        ("Spine", "spine", "Hip"),
        ("Thorax", "thorax", "Spine"),
        ("Neck/Nose", "nose", "Thorax"),
        ("Head", "head_top", "Neck/Nose"),
        ("LShoulder", "left_shoulder", "Thorax"),
        ("LElbow", "left_elbow", "LShoulder"),
        ("LWrist", "left_wrist", "LElbow"),
        ("RShoulder", "right_shoulder", "Thorax"),
        ("RElbow", "right_elbow", "RShoulder"),
        ("RWrist", "right_wrist", "RElbow"),
    ],
    description="Human3.6M 17-joint subset (as used by most 3D pose papers)",
)

SMPL_24 = _set(
    "SMPL_24",
    [
        ("pelvis", "pelvis", None),
        ("left_hip", "smpl_left_hip", "pelvis"),
        ("right_hip", "smpl_right_hip", "pelvis"),
        ("spine1", "spine1", "pelvis"),
        ("left_knee", "left_knee", "left_hip"),
        ("right_knee", "right_knee", "right_hip"),
        ("spine2", "spine2", "spine1"),
        ("left_ankle", "left_ankle", "left_knee"),
        ("right_ankle", "right_ankle", "right_knee"),
        ("spine3", "spine3", "spine2"),
        ("left_foot", "left_foot", "left_ankle"),
        ("right_foot", "right_foot", "right_ankle"),
        ("neck", "neck_base", "spine3"),
        ("left_collar", "left_collar", "spine3"),
        ("right_collar", "right_collar", "spine3"),
        ("head", "head", "neck"),
        ("left_shoulder", "left_shoulder", "left_collar"),
        ("right_shoulder", "right_shoulder", "right_collar"),
        ("left_elbow", "left_elbow", "left_shoulder"),
        ("right_elbow", "right_elbow", "right_shoulder"),
        ("left_wrist", "left_wrist", "left_elbow"),
        ("right_wrist", "right_wrist", "right_elbow"),
        ("left_hand", "left_hand", "left_wrist"),
        ("right_hand", "right_hand", "right_wrist"),
    ],
    description="SMPL body model, 24 joints (kintree order)",
)


# ---------------------------------------------------------------------- BlazePose (MediaPipe Pose)
# The 33 landmarks of MediaPipe's BlazePose in the model's own order (what ``marionette ingest``
# detects). BlazePose has no pelvis or neck joint: the tree is rooted at the left hip, the
# head hangs off the left shoulder, and extra bones close the shoulders and the head's
# other side so the rendered primitives stay symmetric.
BLAZEPOSE_33 = _set(
    "BLAZEPOSE_33",
    [
        ("nose", "nose", "left_shoulder"),
        ("left_eye_inner", "left_eye_inner", "nose"),
        ("left_eye", "left_eye", "left_eye_inner"),
        ("left_eye_outer", "left_eye_outer", "left_eye"),
        ("right_eye_inner", "right_eye_inner", "nose"),
        ("right_eye", "right_eye", "right_eye_inner"),
        ("right_eye_outer", "right_eye_outer", "right_eye"),
        ("left_ear", "left_ear", "left_eye_outer"),
        ("right_ear", "right_ear", "right_eye_outer"),
        ("mouth_left", "mouth_left", "nose"),
        ("mouth_right", "mouth_right", "nose"),
        ("left_shoulder", "left_shoulder", "left_hip"),
        ("right_shoulder", "right_shoulder", "right_hip"),
        ("left_elbow", "left_elbow", "left_shoulder"),
        ("right_elbow", "right_elbow", "right_shoulder"),
        ("left_wrist", "left_wrist", "left_elbow"),
        ("right_wrist", "right_wrist", "right_elbow"),
        ("left_pinky", "left_pinky_knuckle", "left_wrist"),
        ("right_pinky", "right_pinky_knuckle", "right_wrist"),
        ("left_index", "left_index_knuckle", "left_wrist"),
        ("right_index", "right_index_knuckle", "right_wrist"),
        ("left_thumb", "left_thumb", "left_wrist"),
        ("right_thumb", "right_thumb", "right_wrist"),
        ("left_hip", "left_hip", None),
        ("right_hip", "right_hip", "left_hip"),
        ("left_knee", "left_knee", "left_hip"),
        ("right_knee", "right_knee", "right_hip"),
        ("left_ankle", "left_ankle", "left_knee"),
        ("right_ankle", "right_ankle", "right_knee"),
        ("left_heel", "left_heel", "left_ankle"),
        ("right_heel", "right_heel", "right_ankle"),
        ("left_foot_index", "left_foot_index", "left_ankle"),
        ("right_foot_index", "right_foot_index", "right_ankle"),
    ],
    extra=(("left_shoulder", "right_shoulder"), ("right_shoulder", "nose"), ("left_heel", "left_foot_index"),
           ("right_heel", "right_foot_index")),
    description="MediaPipe BlazePose, 33 landmarks (what marionette ingest detects); rooted at the left hip",
)

JOINT_SETS: dict[str, JointSet] = {
    s.name: s for s in (BODY_25, BODY_25B, COCO_17, PANOPTIC_19, H36M_17, SMPL_24, BLAZEPOSE_33)
}

# Canonical joints that may be built from others when a set lacks them: name -> [(joint, weight)].
# SMPL's hips sit inside the pelvis, higher and more medial than keypoint detectors'
# hips, so they get their own canonical names ("smpl_left_hip") and are NOT copied
# onto detector hips; SMPL fitting (engine.smpl) models that offset explicitly.
DERIVED: dict[str, list[tuple[str, float]]] = {
    "pelvis": [("left_hip", 0.5), ("right_hip", 0.5)],
    "neck": [("left_shoulder", 0.5), ("right_shoulder", 0.5)],
    "thorax": [("left_shoulder", 0.5), ("right_shoulder", 0.5)],
    "left_hip": [("smpl_left_hip", 1.0)],
    "right_hip": [("smpl_right_hip", 1.0)],
    "smpl_left_hip": [("left_hip", 1.0)],
    "smpl_right_hip": [("right_hip", 1.0)],
    "neck_base": [("neck", 1.0)],
    "upper_neck": [("neck", 0.5), ("nose", 0.5)],
    "left_foot": [("left_big_toe", 0.5), ("left_small_toe", 0.5)],
    "right_foot": [("right_big_toe", 0.5), ("right_small_toe", 0.5)],
    "spine": [("pelvis", 0.5), ("neck", 0.5)],
    "head": [("head_top", 0.5), ("nose", 0.5)],
    # BlazePose's foot index is the tip of the foot, in front of the big and second toes;
    # its hand points are the knuckles of the index and little fingers
    "left_big_toe": [("left_foot_index", 1.0)],
    "right_big_toe": [("right_foot_index", 1.0)],
    "left_small_toe": [("left_foot_index", 1.0)],
    "right_small_toe": [("right_foot_index", 1.0)],
    "left_hand": [("left_index_knuckle", 0.5), ("left_pinky_knuckle", 0.5)],
    "right_hand": [("right_index_knuckle", 0.5), ("right_pinky_knuckle", 0.5)],
}
# Derived entries that are approximations (a consumer that needs exactness can refuse them).
APPROXIMATE = {"left_big_toe", "right_big_toe", "left_small_toe", "right_small_toe", "left_hand", "right_hand",
               "neck", "thorax", "left_hip", "right_hip", "smpl_left_hip", "smpl_right_hip", "neck_base", "upper_neck", "left_foot",
               "right_foot", "spine", "head"}


def get_joint_set(name: str) -> JointSet:
    """Look up a joint set by name (case-insensitive; ``"body25b"`` works)."""
    key = name.upper().replace("-", "_")
    aliases = {"BODY25": "BODY_25", "BODY25B": "BODY_25B", "COCO": "COCO_17", "COCO17": "COCO_17",
               "PANOPTIC": "PANOPTIC_19", "H36M": "H36M_17", "SMPL": "SMPL_24", "SMPL24": "SMPL_24",
               "BLAZEPOSE": "BLAZEPOSE_33", "MEDIAPIPE": "BLAZEPOSE_33", "BLAZEPOSE33": "BLAZEPOSE_33"}
    key = aliases.get(key, key)
    if key not in JOINT_SETS:
        raise MarionetteError(f"unknown joint set {name!r}; expected one of {', '.join(JOINT_SETS)}")
    return JOINT_SETS[key]


def mapping_matrix(source: JointSet, target: JointSet, allow_approximate: bool = True,
                   _depth: int = 0) -> np.ndarray:
    """Linear map [target.J, source.J] taking source joints to target joints.

    A target row of zeros means the joint cannot be obtained from the source;
    ``map_joints`` turns those into NaN.
    """
    src = {c: i for i, c in enumerate(source.canonical)}
    M = np.zeros((target.num_joints, source.num_joints), dtype=np.float64)

    def resolve(canon: str, depth: int) -> np.ndarray | None:
        if canon in src:
            row = np.zeros(source.num_joints)
            row[src[canon]] = 1.0
            return row
        if depth > 3 or canon not in DERIVED:
            return None
        if canon in APPROXIMATE and not allow_approximate:
            return None
        row = np.zeros(source.num_joints)
        for part, w in DERIVED[canon]:
            sub = resolve(part, depth + 1)
            if sub is None:
                return None
            row += w * sub
        return row

    for j, canon in enumerate(target.canonical):
        row = resolve(canon, 0)
        if row is not None:
            M[j] = row
    return M


def map_joints(joints: np.ndarray, source: JointSet, target: JointSet,
               allow_approximate: bool = True) -> np.ndarray:
    """Map joint positions [..., source.J, D] to [..., target.J, D]; unobtainable joints are NaN.

    NaN source joints make every target joint that uses them NaN.
    """
    joints = np.asarray(joints, dtype=np.float64)
    if joints.shape[-2] != source.num_joints:
        raise MarionetteError(
            f"joints have {joints.shape[-2]} entries but joint set {source.name} has {source.num_joints}")
    M = mapping_matrix(source, target, allow_approximate)
    out = np.einsum("ts,...sd->...td", M, np.nan_to_num(joints, nan=0.0))
    # propagate missing: a target is missing if any contributing source is
    missing_src = np.isnan(joints).any(axis=-1).astype(np.float64)  # [..., S]
    missing_tgt = np.einsum("ts,...s->...t", (M != 0).astype(np.float64), missing_src) > 0
    unobtainable = ~(M != 0).any(axis=1)
    out[..., unobtainable, :] = np.nan
    out[missing_tgt, :] = np.nan
    return out


def mapped_fraction(source: JointSet, target: JointSet, allow_approximate: bool = True) -> float:
    """Fraction of the target's joints obtainable from the source."""
    M = mapping_matrix(source, target, allow_approximate)
    return float((M != 0).any(axis=1).mean())
