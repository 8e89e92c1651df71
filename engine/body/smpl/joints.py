"""How SMPL's body corresponds to the keypoints of other joint sets, as data.

A keypoint is modelled as a weighted sum of *points on the SMPL body* (``POINTS``). A point is
either a surface landmark (a mesh vertex, used when the model defines it: real SMPL topology or
the synthetic model), or an SMPL joint plus a fixed offset carried by some joint's rotation (the
fallback, and the form used for keypoints that are not SMPL joints).

Keypoints are looked up by canonical name (``engine.body.joint_sets``), so one table serves BODY_25,
BODY_25B, COCO-17, Panoptic-19 and H3.6M-17; ``SET_OVERRIDES`` adjusts a few per set.

How the joints that do not line up are handled
----------------------------------------------
* **Hips.** SMPL's hip joints sit inside the pelvis at the femoral heads; detector / mocap hips
  (OpenPose, COCO, Panoptic, H3.6M) are lower and more lateral. They are modelled as SMPL hip +
  an offset in the pelvis frame (3 cm outwards, 4 cm down), *learnable* per sequence (one 3-vector
  shared by all frames, regularised towards the prior, mirrored left/right) and weighted 0.5 so
  they inform but do not dominate the pelvis.
* **Pelvis / MidHip / BodyCenter / H3.6M Hip** is the midpoint of the two detector hips above,
  not SMPL's pelvis joint (which sits higher), weight 0.5.
* **Neck** (OpenPose/Panoptic, between the shoulders) and **H3.6M Thorax**: SMPL neck joint 3 cm
  lower, weight 0.7 / 0.5. **BODY_25B upper neck**: SMPL neck 4 cm up the neck, weight 0.5.
  **H3.6M Spine**: halfway between the detector pelvis and the thorax, weight 0.3.
* **Shoulders, elbows, wrists, knees, ankles**: SMPL joints directly, weight 1 (detector
  shoulders are slightly higher than the gleno-humeral centre; that error is left to the robust
  data term).
* **Nose, eyes, ears, head top, big/small toes, heels**: mesh landmarks (vertex ids from
  ``engine.body.smpl.model.SMPL_LANDMARKS`` on real SMPL topology); on a model without landmarks an
  offset from the head / foot / ankle joint instead. Face points get weight 0.5 (many, close
  together, and they only fix head rotation), H3.6M's ``Neck/Nose`` 0.3 (it sits between chin
  and nose).
* Joints of a set not listed here are excluded (weight 0) and reported by ``describe``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine import MarionetteError
from engine.body.joint_sets import SMPL_24, JointSet

# SMPL joint indices
PELVIS, L_HIP, R_HIP, SPINE1, L_KNEE, R_KNEE, SPINE2, L_ANKLE, R_ANKLE, SPINE3, L_FOOT, R_FOOT, NECK, \
    L_COLLAR, R_COLLAR, HEAD, L_SHOULDER, R_SHOULDER, L_ELBOW, R_ELBOW, L_WRIST, R_WRIST, L_HAND, R_HAND = range(24)


@dataclass(frozen=True)
class Point:
    """A point on the SMPL body.

    anchor:   SMPL joint whose posed position the point starts from
    frame:    SMPL joint whose world rotation carries ``offset``
    offset:   metres, in SMPL's rest frame (Y up, +Z forward, +X the subject's left)
    landmark: name of a mesh landmark used instead when the model has it
    learnable: the fit may learn one per-sequence correction to ``offset`` (regularised)
    mirror_of: for a learnable point, the point whose correction it shares (X mirrored)
    """

    anchor: int
    frame: int
    offset: tuple = (0.0, 0.0, 0.0)
    landmark: str | None = None
    learnable: bool = False
    mirror_of: str | None = None


POINTS: dict[str, Point] = {
    **{name: Point(i, i) for i, name in enumerate(SMPL_24.names)},  # "smpl" joints themselves, by SMPL name
    "det_left_hip": Point(L_HIP, PELVIS, (0.03, -0.04, 0.0), learnable=True),
    "det_right_hip": Point(R_HIP, PELVIS, (-0.03, -0.04, 0.0), learnable=True, mirror_of="det_left_hip"),
    "det_neck": Point(NECK, SPINE3, (0.0, -0.03, 0.0)),
    "det_upper_neck": Point(NECK, NECK, (0.0, 0.04, 0.01)),
    "nose": Point(HEAD, HEAD, (0.0, 0.02, 0.11), landmark="nose"),
    "left_eye": Point(HEAD, HEAD, (0.035, 0.055, 0.085), landmark="left_eye"),
    "right_eye": Point(HEAD, HEAD, (-0.035, 0.055, 0.085), landmark="right_eye"),
    "left_ear": Point(HEAD, HEAD, (0.075, 0.03, 0.0), landmark="left_ear"),
    "right_ear": Point(HEAD, HEAD, (-0.075, 0.03, 0.0), landmark="right_ear"),
    "head_top": Point(HEAD, HEAD, (0.0, 0.175, 0.0), landmark="head_top"),
    "left_big_toe": Point(L_FOOT, L_FOOT, (-0.015, -0.03, 0.08), landmark="left_big_toe"),
    "left_small_toe": Point(L_FOOT, L_FOOT, (0.04, -0.03, 0.05), landmark="left_small_toe"),
    "left_heel": Point(L_ANKLE, L_ANKLE, (0.0, -0.07, -0.07), landmark="left_heel"),
    "right_big_toe": Point(R_FOOT, R_FOOT, (0.015, -0.03, 0.08), landmark="right_big_toe"),
    "right_small_toe": Point(R_FOOT, R_FOOT, (-0.04, -0.03, 0.05), landmark="right_small_toe"),
    "right_heel": Point(R_ANKLE, R_ANKLE, (0.0, -0.07, -0.07), landmark="right_heel"),
}

# canonical keypoint name -> (terms [(point, coefficient)], weight, note)
CANONICAL: dict[str, tuple[tuple[tuple[str, float], ...], float, str]] = {
    "left_hip": ((("det_left_hip", 1.0),), 0.5, "SMPL hip + learnable offset (lower, lateral)"),
    "right_hip": ((("det_right_hip", 1.0),), 0.5, "SMPL hip + learnable offset (lower, lateral)"),
    "pelvis": ((("det_left_hip", 0.5), ("det_right_hip", 0.5)), 0.5, "midpoint of the detector hips"),
    "neck": ((("det_neck", 1.0),), 0.7, "SMPL neck, 3 cm lower"),
    "thorax": ((("det_neck", 1.0),), 0.5, "SMPL neck, 3 cm lower"),
    "upper_neck": ((("det_upper_neck", 1.0),), 0.5, "SMPL neck, 4 cm higher"),
    "spine": ((("det_left_hip", 0.25), ("det_right_hip", 0.25), ("det_neck", 0.5)), 0.3,
              "halfway between detector pelvis and neck"),
    "left_shoulder": ((("left_shoulder", 1.0),), 1.0, "SMPL joint"),
    "right_shoulder": ((("right_shoulder", 1.0),), 1.0, "SMPL joint"),
    "left_elbow": ((("left_elbow", 1.0),), 1.0, "SMPL joint"),
    "right_elbow": ((("right_elbow", 1.0),), 1.0, "SMPL joint"),
    "left_wrist": ((("left_wrist", 1.0),), 1.0, "SMPL joint"),
    "right_wrist": ((("right_wrist", 1.0),), 1.0, "SMPL joint"),
    "left_knee": ((("left_knee", 1.0),), 1.0, "SMPL joint"),
    "right_knee": ((("right_knee", 1.0),), 1.0, "SMPL joint"),
    "left_ankle": ((("left_ankle", 1.0),), 1.0, "SMPL joint"),
    "right_ankle": ((("right_ankle", 1.0),), 1.0, "SMPL joint"),
    "nose": ((("nose", 1.0),), 0.5, "mesh landmark"),
    "left_eye": ((("left_eye", 1.0),), 0.5, "mesh landmark"),
    "right_eye": ((("right_eye", 1.0),), 0.5, "mesh landmark"),
    "left_ear": ((("left_ear", 1.0),), 0.5, "mesh landmark"),
    "right_ear": ((("right_ear", 1.0),), 0.5, "mesh landmark"),
    "head_top": ((("head_top", 1.0),), 0.5, "mesh landmark"),
    "left_big_toe": ((("left_big_toe", 1.0),), 0.7, "mesh landmark"),
    "left_small_toe": ((("left_small_toe", 1.0),), 0.7, "mesh landmark"),
    "left_heel": ((("left_heel", 1.0),), 0.7, "mesh landmark"),
    "right_big_toe": ((("right_big_toe", 1.0),), 0.7, "mesh landmark"),
    "right_small_toe": ((("right_small_toe", 1.0),), 0.7, "mesh landmark"),
    "right_heel": ((("right_heel", 1.0),), 0.7, "mesh landmark"),
}

# per joint set: canonical name -> replacement entry
SET_OVERRIDES: dict[str, dict[str, tuple]] = {
    "H36M_17": {"nose": ((("nose", 1.0),), 0.3, "H3.6M 'Neck/Nose' sits between chin and nose: nose landmark, low weight")},
}

SUPPORTED_SETS = ("BODY_25", "BODY_25B", "COCO_17", "PANOPTIC_19", "H36M_17", "SMPL_24")


@dataclass
class Correspondence:
    """A joint set's keypoints as linear combinations of SMPL body points.

    point_names [P]; A [J, P] (keypoint = A @ points); weights [J] (0 = excluded); notes [J].
    """

    joint_set: JointSet
    point_names: list[str]
    A: np.ndarray
    weights: np.ndarray
    notes: list[str]

    @property
    def points(self) -> list[Point]:
        return [POINTS[n] for n in self.point_names]

    @property
    def used(self) -> np.ndarray:
        return self.weights > 0

    def describe(self) -> str:
        rows = [f"{self.joint_set.name} -> SMPL"]
        for j, name in enumerate(self.joint_set.names):
            terms = " + ".join(f"{self.A[j, p]:g}*{self.point_names[p]}" for p in np.nonzero(self.A[j])[0])
            rows.append(f"  {name:<12} w={self.weights[j]:.2f}  {terms or '(excluded)'}  {self.notes[j]}")
        return "\n".join(rows)


def correspondence(joint_set: JointSet) -> Correspondence:
    """The correspondence of ``joint_set`` to SMPL; MarionetteError if there is none."""
    if joint_set.name not in SUPPORTED_SETS:
        raise MarionetteError(f"joint set {joint_set.name!r} has no SMPL correspondence; supported: "
                              f"{', '.join(SUPPORTED_SETS)}")
    entries = []
    if joint_set.name == "SMPL_24":
        entries = [(((n, 1.0),), 1.0, "SMPL joint") for n in SMPL_24.names]
    else:
        table = {**CANONICAL, **SET_OVERRIDES.get(joint_set.name, {})}
        for canon in joint_set.canonical:
            entries.append(table.get(canon, ((), 0.0, "no SMPL counterpart: excluded")))
    names: list[str] = []
    for terms, _, _ in entries:
        for p, _ in terms:
            if p not in names:
                names.append(p)
    # learnable mirrored points need their partner present
    for p in list(names):
        m = POINTS[p].mirror_of
        if m and m not in names:
            names.append(m)
    A = np.zeros((joint_set.num_joints, len(names)))
    for j, (terms, _, _) in enumerate(entries):
        for p, c in terms:
            A[j, names.index(p)] += c
    weights = np.array([w for _, w, _ in entries], dtype=np.float64)
    notes = [n for _, _, n in entries]
    return Correspondence(joint_set, names, A, weights, notes)


def learnable_groups(corr: Correspondence) -> tuple[list[int], list[int], np.ndarray]:
    """For the learnable points: (point index, parameter index, sign vector [P_l, 3])."""
    params: list[str] = []
    pidx, gidx, signs = [], [], []
    for i, name in enumerate(corr.point_names):
        pt = POINTS[name]
        if not pt.learnable:
            continue
        owner = pt.mirror_of or name
        if owner not in params:
            params.append(owner)
        pidx.append(i)
        gidx.append(params.index(owner))
        signs.append((-1.0, 1.0, 1.0) if pt.mirror_of else (1.0, 1.0, 1.0))
    return pidx, gidx, np.asarray(signs, dtype=np.float64).reshape(-1, 3)


class PointEvaluator:
    """Evaluates a correspondence's body points on posed SMPL output, in torch.

    ``vertex_ids``: the landmark vertices to skin (pass to ``SMPLTorch.forward``);
    ``__call__(joints [B,24,3], rot [B,24,3,3], landmark_vertices [B,L,3] | None,
    offset_delta [G,3] | None) -> points [B,P,3]``.
    """

    def __init__(self, corr: Correspondence, landmarks: dict, device="cpu", dtype=None):
        import torch

        dtype = dtype or torch.float32
        self.corr = corr
        pts = corr.points
        use_lm = [p.landmark is not None and p.landmark in landmarks for p in pts]
        self.lm_slots = [i for i, u in enumerate(use_lm) if u]
        self.vertex_ids = [int(landmarks[pts[i].landmark]) for i in self.lm_slots] or None
        self.jt_slots = [i for i, u in enumerate(use_lm) if not u]
        t = lambda a, dt=dtype: torch.as_tensor(np.asarray(a), dtype=dt, device=device)  # noqa: E731
        self.anchor = t([pts[i].anchor for i in self.jt_slots], torch.long)
        self.frame = t([pts[i].frame for i in self.jt_slots], torch.long)
        self.offset = t(np.array([pts[i].offset for i in self.jt_slots], dtype=np.float64).reshape(-1, 3))
        # learnable corrections, placed into the joint-offset slots
        pidx, gidx, signs = learnable_groups(corr)
        self.num_learnable = (max(gidx) + 1) if gidx else 0
        slot_of = {p: k for k, p in enumerate(self.jt_slots)}
        self.learn_slots = t([slot_of[p] for p in pidx], torch.long)
        self.learn_group = t(gidx, torch.long)
        self.learn_sign = t(signs)
        perm = self.lm_slots + self.jt_slots
        self.inverse = t(np.argsort(perm), torch.long)
        self.A = t(corr.A)

    def points(self, joints, rot, landmark_vertices=None, offset_delta=None):
        import torch

        off = self.offset
        if offset_delta is not None and self.num_learnable:
            add = torch.zeros_like(off).index_add(0, self.learn_slots, offset_delta[self.learn_group] * self.learn_sign)
            off = off + add
        jp = joints[:, self.anchor] + (rot[:, self.frame] @ off[None, :, :, None])[..., 0]
        parts = [landmark_vertices, jp] if self.lm_slots else [jp]
        allp = torch.cat(parts, dim=1)
        return allp[:, self.inverse]

    def keypoints(self, joints, rot, landmark_vertices=None, offset_delta=None):
        """-> [B, J, 3] keypoints of the target joint set."""
        import torch

        return torch.einsum("jp,bpc->bjc", self.A, self.points(joints, rot, landmark_vertices, offset_delta))
