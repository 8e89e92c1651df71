"""Joint sets as data: names, parents, bones, default bone widths, and maps between sets.

Every joint set names its joints with its own conventional names (``names``) and
with a shared anatomical vocabulary (``canonical``, e.g. ``"left_knee"``). Maps
between joint sets go through that vocabulary: a target joint is copied from the
source joint with the same canonical name, or estimated from body proportions
(``ESTIMATED`` below: a head top beyond the ears from the neck, heels and toes in the
shin's frame, ...), or built as a weighted mean of source joints (``DERIVED``, e.g. a
pelvis centre from the two hips), or is missing. The rules are data; ``joint_map``
turns them into a map between two sets that says which joints are estimated.

Left/right always mean the subject's own left and right.

Trees are rooted at one real joint (``parents[root] == -1``). Joint sets without a
pelvis centre (COCO-17, BODY_25B) use the neck or nose as root; that is a choice
of tree only, it does not change any joint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

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

# ---------------------------------------------------------------------- joints a set lacks
# A target joint is obtained from a source set by, in this order:
#   1. a copy of the source joint with the same canonical name;
#   2. the first rule of ESTIMATED[name] whose inputs the source can provide (body-proportion
#      estimates; the later rules are per-frame fallbacks when the earlier ones' inputs are NaN);
#   3. DERIVED[name], a weighted mean (also read by engine.motion.retarget).
# Rule inputs are canonical names, resolved the same way (so estimates may build on estimates),
# or a tuple of names meaning their midpoint.

# Weighted means: name -> [(joint, weight)].
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
# Every ESTIMATED rule is an approximation too.
APPROXIMATE = {"left_big_toe", "right_big_toe", "left_small_toe", "right_small_toe", "left_hand", "right_hand",
               "neck", "thorax", "left_hip", "right_hip", "smpl_left_hip", "smpl_right_hip", "neck_base", "upper_neck", "left_foot",
               "right_foot", "spine", "head"}


# Rules of ESTIMATED. A point is a canonical joint name, or a tuple of names meaning their midpoint.
@dataclass(frozen=True)
class Mean:
    """``sum(weight * point)``. Weights summing to 1 give a point of the body (an affine
    combination); a negative weight extrapolates along a line, see :func:`beyond`."""

    terms: tuple[tuple[str | tuple[str, ...], float], ...]


@dataclass(frozen=True)
class InFrame:
    """A fixed offset in a body frame: ``origin + L * (x * left + y * up + z * forward)``.

    ``up = unit(up[1] - up[0])`` and ``L = |up[1] - up[0]|``, so offsets scale with the body.
    The frame's turn about ``up`` comes from ``left`` (a pair whose difference points to the
    subject's left; forward = left x up) or ``forward`` (a pair pointing forward;
    left = up x forward), made orthogonal to ``up``. ``offset = (x, y, z)`` in units of L.
    """

    origin: str | tuple[str, ...]
    up: tuple[str | tuple[str, ...], str | tuple[str, ...]]
    offset: tuple[float, float, float]
    left: tuple[str | tuple[str, ...], str | tuple[str, ...]] | None = None
    forward: tuple[str | tuple[str, ...], str | tuple[str, ...]] | None = None

    def __post_init__(self):
        if (self.left is None) == (self.forward is None):
            raise ValueError("InFrame: give exactly one of 'left' and 'forward'")


def beyond(a, b, k: float) -> Mean:
    """The point ``k * |AB|`` beyond A on the line from B through A: ``A + k (A - B)``."""
    return Mean(((a, 1.0 + k), (b, -k)))


_EARS = ("left_ear", "right_ear")
_EYES = ("left_eye", "right_eye")
_TO_LEFT = ("right_shoulder", "left_shoulder")  # points to the subject's left
_HIPS_TO_LEFT = ("right_hip", "left_hip")
_HEAD_UP = ("neck", "head_top")


def _estimated() -> dict[str, tuple[Mean | InFrame, ...]]:
    # Proportions measured on two BODY_25B skeletons that have every joint: the demo actor's
    # body (MakeHuman, engine/data/demo_actor/reference_skeleton.npz) and the real Pose2Sim
    # capture triangulated from OpenPose (engine/data/pose2sim_demo); the values lie between
    # the two. "neck" is the shoulders' midpoint where a set has no neck keypoint (DERIVED).
    # Typical errors: head top 2-4 cm, upper neck 1-3 cm, heels 1.5 cm, toes 4-7 cm (the foot's
    # pitch is not in the ankle and knee); face joints without a face 2-4 cm and the head's
    # turn about the neck is unknown (the shoulders' is used).
    rules: dict[str, tuple[Mean | InFrame, ...]] = {
        # BODY_25B's upper neck: 40 % of the way from the neck to the ears
        "upper_neck": (Mean((("neck", 0.55), (_EARS, 0.4), ("nose", 0.05))),
                       Mean((("neck", 0.7), ("nose", 0.3)))),
        "head_top": (
            beyond(_EARS, "neck", 0.7),  # straight on from the neck through the ears
            InFrame(_EYES, up=("neck", _EYES), forward=("neck", "nose"), offset=(0.0, 0.23, -0.45)),
            InFrame("nose", up=("neck", "nose"), left=_TO_LEFT, offset=(0.0, 0.2, -0.68)),
            # SMPL: above and behind its head joint
            InFrame("head", up=("neck", "head"), left=_TO_LEFT, offset=(0.0, 0.17, -0.25)),
        ),
        "nose": (InFrame("head_top", up=_HEAD_UP, left=_TO_LEFT, offset=(0.0, -0.37, 0.36)),),
    }
    # eyes and ears below the head top, turned by the nose when there is one, else by the shoulders
    for side, out in (("left", 1.0), ("right", -1.0)):
        for joint, (x, y, z) in (("eye", (0.08, -0.29, 0.27)), ("ear", (0.23, -0.42, -0.02))):
            rules[f"{side}_{joint}"] = (
                InFrame("head_top", up=_HEAD_UP, forward=("neck", "nose"), offset=(out * x, y, z)),
                InFrame("head_top", up=_HEAD_UP, left=_TO_LEFT, offset=(out * x, y, z)),
            )
    # feet in the shin's frame (up along the shin, in units of the shin's length), turned by the
    # foot's own direction when the set has one (SMPL's foot joint), else by the hips
    for side, out in (("left", 1.0), ("right", -1.0)):
        ankle, shin = f"{side}_ankle", (f"{side}_ankle", f"{side}_knee")
        for joint, (x, y, z) in (("heel", (-0.02, -0.14, -0.08)), ("big_toe", (-0.03, -0.03, 0.46)),
                                 ("small_toe", (0.11, -0.06, 0.38))):
            offset = (out * x, y, z)
            tip = ()
            if joint != "heel":  # BlazePose: beside the foot's tip (between big and second toe)
                at_tip = (-0.03, 0.0, 0.0) if joint == "big_toe" else (0.12, 0.0, -0.1)
                tip = (InFrame(f"{side}_foot_index", up=shin, forward=(f"{side}_heel", f"{side}_foot_index"),
                               offset=(out * at_tip[0], at_tip[1], at_tip[2])),)
            rules[f"{side}_{joint}"] = tip + (
                InFrame(ankle, up=shin, forward=(ankle, f"{side}_foot"), offset=offset),
                InFrame(ankle, up=shin, left=_HIPS_TO_LEFT, offset=offset),
            )
    return rules


# Estimates of joints a set lacks, from body proportions: name -> rules, best first.
ESTIMATED: dict[str, tuple[Mean | InFrame, ...]] = _estimated()


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


# ---------------------------------------------------------------------- maps between sets

@dataclass(frozen=True)
class _Lin:
    """A weighted sum of source joints: ``row`` [S]."""

    row: tuple[float, ...]


@dataclass(frozen=True)
class _Sum:
    parts: tuple[tuple[object, float], ...]


@dataclass(frozen=True)
class _Frame:
    origin: object
    up: tuple[object, object]
    side: tuple[object, object]
    side_is_left: bool
    offset: tuple[float, float, float]


@dataclass(frozen=True)
class _First:
    """Alternatives: the first where it is finite, else the next (per frame)."""

    alts: tuple[object, ...]


def _anchor(e) -> np.ndarray:
    """The linear part of an expression: itself when linear, else the point it is placed around."""
    if isinstance(e, _Lin):
        return np.asarray(e.row)
    if isinstance(e, _Sum):
        return sum(w * _anchor(p) for p, w in e.parts)
    if isinstance(e, _Frame):
        return _anchor(e.origin)
    return _anchor(e.alts[0])


def _inputs(e) -> set[int]:
    """Source joints an expression reads (its first alternative's)."""
    if isinstance(e, _Lin):
        return {i for i, w in enumerate(e.row) if w != 0}
    if isinstance(e, _Sum):
        return set().union(*(_inputs(p) for p, _ in e.parts))
    if isinstance(e, _Frame):
        return set().union(_inputs(e.origin), *(_inputs(p) for p in e.up + e.side))
    return _inputs(e.alts[0])


def _evaluate(e, X: np.ndarray) -> np.ndarray:
    """Positions [..., D] of an expression over source joints X [..., S, D]; NaN inputs give NaN."""
    if isinstance(e, _Lin):
        idx = [i for i, w in enumerate(e.row) if w != 0]
        return np.einsum("s,...sd->...d", np.asarray([e.row[i] for i in idx]), X[..., idx, :])
    if isinstance(e, _Sum):
        return sum(w * _evaluate(p, X) for p, w in e.parts)
    if isinstance(e, _First):
        out = _evaluate(e.alts[0], X)
        for alt in e.alts[1:]:
            bad = ~np.isfinite(out).all(-1)
            if not bad.any():
                break
            out = np.where(bad[..., None], _evaluate(alt, X), out)
        return out
    with np.errstate(all="ignore"):
        o = _evaluate(e.origin, X)
        U = _evaluate(e.up[1], X) - _evaluate(e.up[0], X)
        L = np.linalg.norm(U, axis=-1, keepdims=True)
        u = U / L
        s = _evaluate(e.side[1], X) - _evaluate(e.side[0], X)
        s = s - np.sum(s * u, axis=-1, keepdims=True) * u
        s = s / np.linalg.norm(s, axis=-1, keepdims=True)
        left, fwd = (s, np.cross(s, u)) if e.side_is_left else (np.cross(u, s), s)
        x, y, z = e.offset
        out = o + L * (x * left + y * u + z * fwd)
    return np.where(np.isfinite(out).all(-1, keepdims=True), out, np.nan)


class _Resolver:
    """Builds the expression of every target joint from a source set (see the rules above)."""

    def __init__(self, source: JointSet, allow_approximate: bool):
        self.index = {c: i for i, c in enumerate(source.canonical)}
        self.S = source.num_joints
        self.approx = allow_approximate

    def point(self, p, visiting: frozenset):
        if isinstance(p, tuple):
            parts = [self.joint(c, visiting) for c in p]
            if any(x is None for x in parts):
                return None
            return _combine([(x, 1.0 / len(parts)) for x in parts])
        return self.joint(p, visiting)

    def joint(self, canon: str, visiting: frozenset = frozenset()):
        if canon in self.index:
            row = [0.0] * self.S
            row[self.index[canon]] = 1.0
            return _Lin(tuple(row))
        if canon in visiting or len(visiting) > 6:
            return None
        visiting = visiting | {canon}
        alts = []
        if self.approx:
            for rule in ESTIMATED.get(canon, ()):
                e = self.rule(rule, visiting)
                if e is not None:
                    alts.append(e)
        if canon in DERIVED and (self.approx or canon not in APPROXIMATE):
            e = self.rule(Mean(tuple(DERIVED[canon])), visiting)
            if e is not None:
                alts.append(e)
        if not alts:
            return None
        return alts[0] if len(alts) == 1 else _First(tuple(alts))

    def rule(self, rule, visiting):
        if isinstance(rule, Mean):
            parts = [(self.point(p, visiting), w) for p, w in rule.terms]
            return None if any(x is None for x, _ in parts) else _combine(parts)
        pts = [self.point(p, visiting) for p in (rule.origin, *rule.up, *(rule.left or rule.forward))]
        if any(x is None for x in pts):
            return None
        return _Frame(pts[0], (pts[1], pts[2]), (pts[3], pts[4]), rule.left is not None, tuple(rule.offset))


def _combine(parts):
    """A weighted sum of expressions, folded into one row when they are all linear."""
    if all(isinstance(p, _Lin) for p, _ in parts):
        row = sum(w * np.asarray(p.row) for p, w in parts)
        return _Lin(tuple(float(v) for v in row))
    return _Sum(tuple(parts))


@dataclass(frozen=True)
class JointMap:
    """How every joint of ``target`` is obtained from ``source`` joints (see :func:`joint_map`)."""

    source: JointSet
    target: JointSet
    exprs: tuple  # per target joint: an expression, or None when it cannot be obtained

    @property
    def obtainable(self) -> np.ndarray:
        """[target.J] bool."""
        return np.array([e is not None for e in self.exprs], dtype=bool)

    @property
    def matrix(self) -> np.ndarray:
        """[target.J, source.J]: the linear map; an estimated joint's row is the point it is placed
        around (its offset is added by :meth:`apply`); a row of zeros: cannot be obtained."""
        M = np.zeros((self.target.num_joints, self.source.num_joints))
        for j, e in enumerate(self.exprs):
            if e is not None:
                M[j] = _anchor(e)
        return M

    def is_copy(self, j: int) -> bool:
        """Is target joint ``j`` the source joint of the same canonical name (not derived or estimated)?"""
        return self.target.canonical[j] in self.source.canonical

    def estimated(self, joints=None) -> dict[str, list[str]]:
        """{target joint name: source joint names it is estimated from} for every obtainable target
        joint (of ``joints``, indices; default all) that is not a copy of a source joint."""
        idx = range(self.target.num_joints) if joints is None else joints
        return {self.target.names[j]: [self.source.names[i] for i in sorted(_inputs(self.exprs[j]))]
                for j in idx if self.exprs[j] is not None and not self.is_copy(j)}

    def missing(self, joints=None) -> list[str]:
        """Names of target joints (of ``joints``, indices; default all) that cannot be obtained."""
        idx = range(self.target.num_joints) if joints is None else joints
        return [self.target.names[j] for j in idx if self.exprs[j] is None]

    def apply(self, joints: np.ndarray) -> np.ndarray:
        """Map positions [..., source.J, D] to [..., target.J, D]; unobtainable joints are NaN, and so
        is every joint built from a NaN source joint (estimates fall back to their next rule)."""
        joints = np.asarray(joints, dtype=np.float64)
        if joints.shape[-2] != self.source.num_joints:
            raise MarionetteError(f"joints have {joints.shape[-2]} entries but joint set {self.source.name} "
                                  f"has {self.source.num_joints}")
        out = np.full(joints.shape[:-2] + (self.target.num_joints, joints.shape[-1]), np.nan)
        for j, e in enumerate(self.exprs):
            if e is not None:
                out[..., j, :] = _evaluate(e, joints)
        return out


@lru_cache(maxsize=256)
def joint_map(source: JointSet, target: JointSet, allow_approximate: bool = True) -> JointMap:
    """The map from ``source`` to ``target`` joints: copies by canonical name, then the rules in
    ``ESTIMATED`` and ``DERIVED`` (approximate ones only with ``allow_approximate``)."""
    r = _Resolver(source, allow_approximate)
    return JointMap(source, target, tuple(r.joint(c) for c in target.canonical))


def mapping_matrix(source: JointSet, target: JointSet, allow_approximate: bool = True) -> np.ndarray:
    """Linear map [target.J, source.J] taking source joints to target joints (``JointMap.matrix``).

    A target row of zeros means the joint cannot be obtained from the source. Joints estimated
    in a body frame are not linear: their row is the point they are placed around, and
    ``map_joints`` gives their positions.
    """
    return joint_map(source, target, allow_approximate).matrix


def map_joints(joints: np.ndarray, source: JointSet, target: JointSet,
               allow_approximate: bool = True) -> np.ndarray:
    """Map joint positions [..., source.J, D] to [..., target.J, D]; unobtainable joints are NaN.

    NaN source joints make every target joint that uses them NaN (an estimate falls back to its
    next rule on those frames).
    """
    return joint_map(source, target, allow_approximate).apply(joints)


def mapped_fraction(source: JointSet, target: JointSet, allow_approximate: bool = True) -> float:
    """Fraction of the target's joints obtainable from the source."""
    return float(joint_map(source, target, allow_approximate).obtainable.mean())


# ---------------------------------------------------------------------- sets from names

def generic_joint_set(names, parents, name: str = "GENERIC", where: str = "skeleton") -> JointSet:
    """A joint set of no known kind, from joint names and parents (e.g. another tool's skeleton).

    Its canonical names are its own names, so it maps onto no known set. Errors name ``where``.
    """
    names = [str(n) for n in names]
    try:
        parents = [int(p) for p in np.asarray(parents).reshape(-1)]
    except (TypeError, ValueError):
        raise MarionetteError(f"{where}: field 'parents' must hold integers") from None
    if not names:
        raise MarionetteError(f"{where}: field 'joint_names' is empty")
    if len(parents) != len(names):
        raise MarionetteError(f"{where}: field 'parents' has {len(parents)} entries but 'joint_names' has {len(names)}")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup or any(not n.strip() for n in names):
        raise MarionetteError(f"{where}: field 'joint_names' must hold distinct, non-empty names"
                              + (f" (repeated: {', '.join(dup[:5])})" if dup else ""))
    long = [n for n in names if len(n.encode()) > 63]
    if long:
        raise MarionetteError(f"{where}: joint names longer than 63 bytes (Blender's limit): {long[0]!r}")
    bad = [p for p in parents if not -1 <= p < len(names)]
    if bad:
        raise MarionetteError(f"{where}: field 'parents' holds {bad[0]}, expected -1 (root) or a joint index "
                              f"0..{len(names) - 1}")
    try:
        return JointSet(name, tuple(names), tuple(names), tuple(parents),
                        description="a skeleton of its own joint names and parents")
    except ValueError as exc:
        raise MarionetteError(f"{where}: field 'parents': {str(exc).split(': ', 1)[-1]}") from None


def _edges(parents) -> set[frozenset]:
    return {frozenset((c, int(p))) for c, p in enumerate(parents) if int(p) >= 0}


def infer_joint_set(names, parents=None) -> tuple[JointSet | None, str]:
    """The known joint set whose joint names are ``names`` in order, checked against ``parents``
    (the same tree, whatever its root) -> (set, "") or (None, why not)."""
    names = [str(n) for n in names]
    for js in JOINT_SETS.values():
        if list(js.names) != names:
            continue
        if parents is not None:
            try:
                p = [int(v) for v in np.asarray(parents).reshape(-1)]
            except (TypeError, ValueError):
                return None, "its field 'parents' does not hold integers"
            if len(p) != js.num_joints or _edges(p) != _edges(js.parents):
                return None, (f"its joint names are {js.name}'s but its parents describe another tree "
                              f"(write joint_set='{js.name}' into the file to use {js.name}'s)")
        return js, ""
    best = max(JOINT_SETS.values(), key=lambda js: len(set(js.names) & set(names)))
    common = len(set(best.names) & set(names))
    if common and len(names) == best.num_joints and set(names) == set(best.names):
        return None, f"its joint names are {best.name}'s in another order"
    if common:
        return None, (f"its {len(names)} joint names match no known joint set (closest: {best.name}, "
                      f"{common} of {best.num_joints} names in common)")
    return None, f"its {len(names)} joint names match no known joint set"
