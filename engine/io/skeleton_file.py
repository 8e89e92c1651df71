"""The skeleton sequence file (``.npz``) that triangulation writes and everything else reads.

Keys (all arrays; strings as numpy unicode):

==================  =============  ==================================================
key                 shape / type   meaning
==================  =============  ==================================================
format              str            ``"marionette.skeleton"``
version             int            1
joints              [T, J, 3] f32  joint positions in metres; NaN where missing
confidence          [T, J] f32     0..1; 0 where missing
joint_set           str            name of an ``engine.body.joint_sets`` joint set
joint_names         [J] str        that set's joint names, in order
parents             [J] int        parent index per joint, -1 for the root
fps                 float          frames per second
up_axis             str            world up axis: ``"Z"`` or ``"Y"`` (``"-Y"`` etc. allowed)
frame_indices       [T] int        (optional) source frame number of every row
reprojection_error  [T, J] f32     (optional) mean reprojection error in pixels
views_used          [T, J] i32     (optional) cameras that contributed to each joint
==================  =============  ==================================================

Readers accept files without ``format``/``version`` (plain ``joints`` + ``joint_set``)
so hand-made files work.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine import MarionetteError
from engine.fileio import read_npz
from engine.body.joint_sets import JointSet, get_joint_set

SKELETON_FORMAT = "marionette.skeleton"
SKELETON_VERSION = 1
UP_AXES = ("X", "Y", "Z", "-X", "-Y", "-Z")


@dataclass
class SkeletonSequence:
    joints: np.ndarray  # [T, J, 3] float32, NaN missing
    joint_set: JointSet
    fps: float
    confidence: np.ndarray | None = None  # [T, J]
    up_axis: str = "Z"
    extras: dict = field(default_factory=dict)  # optional arrays (reprojection_error, views_used, ...)

    def __post_init__(self):
        self.joints = np.asarray(self.joints, dtype=np.float32)
        J = self.joint_set.num_joints
        if self.joints.ndim != 3 or self.joints.shape[1:] != (J, 3):
            raise MarionetteError(f"joints: expected shape [T, {J}, 3] for joint set {self.joint_set.name}, "
                                  f"got {list(self.joints.shape)}")
        if self.confidence is None:
            self.confidence = np.isfinite(self.joints).all(-1).astype(np.float32)
        self.confidence = np.asarray(self.confidence, dtype=np.float32)
        if self.confidence.shape != self.joints.shape[:2]:
            raise MarionetteError(f"confidence: expected shape {list(self.joints.shape[:2])}, "
                                  f"got {list(self.confidence.shape)}")
        if not (np.isfinite(self.fps) and self.fps > 0):
            raise MarionetteError(f"fps: expected a positive number, got {self.fps}")
        if self.up_axis not in UP_AXES:
            raise MarionetteError(f"up_axis: expected one of {UP_AXES}, got {self.up_axis!r}")
        # a joint is missing when either marker says so; keep both markers consistent
        missing = ~np.isfinite(self.joints).all(-1) | ~(self.confidence > 0)
        self.joints[missing] = np.nan
        self.confidence = np.where(missing, 0.0, np.nan_to_num(self.confidence, nan=0.0)).astype(np.float32)

    @property
    def num_frames(self) -> int:
        return self.joints.shape[0]

    @property
    def missing(self) -> np.ndarray:
        """[T, J] bool."""
        return ~np.isfinite(self.joints).all(-1)


def save_skeleton(path, seq: SkeletonSequence) -> None:
    """Write atomically (a temporary file renamed into place), so a partial file never exists."""
    path = Path(path)
    if path.suffix != ".npz":
        raise MarionetteError(f"{path}: skeleton files must end in .npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = dict(
        format=np.array(SKELETON_FORMAT), version=np.array(SKELETON_VERSION),
        joints=seq.joints.astype(np.float32), confidence=seq.confidence.astype(np.float32),
        joint_set=np.array(seq.joint_set.name), joint_names=np.array(seq.joint_set.names),
        parents=np.array(seq.joint_set.parents, dtype=np.int64), fps=np.array(float(seq.fps)),
        up_axis=np.array(seq.up_axis),
    )
    for key, value in seq.extras.items():
        arrays[key] = np.asarray(value)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)


def load_skeleton(path) -> SkeletonSequence:
    """Read and validate a skeleton ``.npz``; errors name the file and the field."""
    path = Path(path)
    arrays = read_npz(path)
    fmt = str(arrays.get("format", SKELETON_FORMAT))
    if fmt != SKELETON_FORMAT:
        raise MarionetteError(f"{path}: field 'format' is {fmt!r}, expected {SKELETON_FORMAT!r}")
    version = int(arrays.get("version", SKELETON_VERSION))
    if version > SKELETON_VERSION:
        raise MarionetteError(f"{path}: skeleton file version {version} is newer than supported ({SKELETON_VERSION})")
    if "joints" not in arrays:
        raise MarionetteError(f"{path}: missing field 'joints' (expected [T, J, 3] positions in metres)")
    if "joint_set" not in arrays:
        raise MarionetteError(f"{path}: missing field 'joint_set' (expected a name such as 'BODY_25B')")
    try:
        joint_set = get_joint_set(str(arrays["joint_set"]))
    except MarionetteError as exc:
        raise MarionetteError(f"{path}: field 'joint_set': {exc}") from None
    joints = arrays["joints"]
    if joints.ndim != 3 or joints.shape[1:] != (joint_set.num_joints, 3):
        raise MarionetteError(f"{path}: field 'joints' has shape {list(joints.shape)}, expected "
                              f"[T, {joint_set.num_joints}, 3] for joint set {joint_set.name}")
    if joints.shape[0] == 0:
        raise MarionetteError(f"{path}: field 'joints' has zero frames")
    if "joint_names" in arrays and [str(n) for n in arrays["joint_names"]] != list(joint_set.names):
        raise MarionetteError(f"{path}: field 'joint_names' does not match joint set {joint_set.name}")
    fps = float(arrays.get("fps", np.nan))
    if not (np.isfinite(fps) and fps > 0):
        raise MarionetteError(f"{path}: field 'fps' must be a positive number, got {arrays.get('fps')}")
    known = {"format", "version", "joints", "confidence", "joint_set", "joint_names", "parents", "fps", "up_axis"}
    extras = {k: v for k, v in arrays.items() if k not in known}
    try:
        return SkeletonSequence(joints=joints, joint_set=joint_set, fps=fps,
                                confidence=arrays.get("confidence"), up_axis=str(arrays.get("up_axis", "Z")),
                                extras=extras)
    except MarionetteError as exc:
        raise MarionetteError(f"{path}: {exc}") from None
