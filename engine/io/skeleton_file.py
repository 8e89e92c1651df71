"""The skeleton sequence file (``.npz``) that triangulation writes and everything else reads.

Keys (all arrays; strings as numpy unicode):

==================  =============  ==================================================
key                 shape / type   meaning
==================  =============  ==================================================
format              str            ``"marionette.skeleton"``
version             int            1
joints              [T, J, 3] f32  joint positions in metres; NaN where missing
confidence          [T, J] f32     0..1; 0 where missing
joint_set           str            name of an ``engine.body.joint_sets`` joint set (may be left
                                   out when joint_names are a known set's; absent: generic skeleton)
joint_names         [J] str        that set's joint names, in order
parents             [J] int        parent index per joint, -1 for the root
fps                 float          frames per second
up_axis             str            world up axis: ``"Z"`` or ``"Y"`` (``"-Y"`` etc. allowed)
frame_indices       [T] int        (optional) source frame number of every row
reprojection_error  [T, J] f32     (optional) mean reprojection error in pixels
views_used          [T, J] i32     (optional) cameras that contributed to each joint
==================  =============  ==================================================

``load_skeleton``/``save_skeleton`` also read and write OpenSim ``.trc`` marker files
(``engine.io.trc``), chosen by the file's extension.

Readers accept files without ``format``/``version`` (plain ``joints`` + ``joint_set``)
so hand-made files work, and files without ``joint_set`` whose ``joint_names`` (and ``parents``:
the same tree, whatever its root) are a known set's, as other tools write them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine import MarionetteError
from engine.fileio import read_npz
from engine.body.joint_sets import JOINT_SETS, JointSet, generic_joint_set, get_joint_set, infer_joint_set
from engine.validate import MAX_FPS, MAX_FRAME_NUMBER, MAX_FRAMES, mkdir, number, output_file

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
    if path.suffix.lower() == ".trc":  # OpenSim's marker format (engine.io.trc)
        from engine.io.trc import write_trc

        return write_trc(path, seq)
    if path.suffix != ".npz":
        raise MarionetteError(f"{path}: skeleton files must end in .npz (or .trc)")
    output_file(path, "skeleton file")
    mkdir(path.parent, "folder for the skeleton file")
    arrays = dict(
        format=np.array(SKELETON_FORMAT), version=np.array(SKELETON_VERSION),
        joints=seq.joints.astype(np.float32), confidence=seq.confidence.astype(np.float32),
        joint_names=np.array(seq.joint_set.names),
        parents=np.array(seq.joint_set.parents, dtype=np.int64), fps=np.array(float(seq.fps)),
        up_axis=np.array(seq.up_axis),
    )
    if JOINT_SETS.get(seq.joint_set.name) == seq.joint_set:  # a generic set is its names and parents
        arrays["joint_set"] = np.array(seq.joint_set.name)
    for key, value in seq.extras.items():
        arrays[key] = np.asarray(value)
    tmp = path.with_name(path.name + ".tmp.npz")
    try:
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise MarionetteError(f"{path}: cannot write the skeleton file ({exc.strerror or exc})") from None


def _scalar(arrays: dict, key: str, path: Path, default=None):
    """A 0-d (or one-element) field as a Python value; arrays of several values are refused."""
    if key not in arrays:
        return default
    value = np.asarray(arrays[key])
    if value.size != 1:
        raise MarionetteError(f"{path}: field {key!r} must be a single value, got an array of shape "
                              f"{list(value.shape)}")
    return value.reshape(()).item()


def _numeric(arrays: dict, key: str, path: Path) -> np.ndarray:
    value = arrays[key]
    if value.dtype.kind not in "biuf":
        raise MarionetteError(f"{path}: field {key!r} must hold numbers, got {value.dtype} values")
    return value


def check_frame_indices(value, num_frames: int, where: str) -> np.ndarray:
    """``frame_indices``: [T] whole numbers in 0..MAX_FRAME_NUMBER-1 (source frame number of every row)."""
    fi = np.asarray(value)
    if fi.dtype.kind not in "iuf" or fi.shape != (num_frames,):
        raise MarionetteError(f"{where}: field 'frame_indices' must be {num_frames} integers (one per row), got "
                              f"{fi.dtype} values of shape {list(fi.shape)}")
    f = fi.astype(np.float64)
    if not (np.all(np.isfinite(f)) and np.all(f == np.round(f)) and np.all(f >= 0) and np.all(f < MAX_FRAME_NUMBER)):
        raise MarionetteError(f"{where}: field 'frame_indices' must hold whole frame numbers 0..{MAX_FRAME_NUMBER - 1}"
                              f" (got values from {np.nanmin(f) if f.size else 0:g} to {np.nanmax(f) if f.size else 0:g})")
    return f.astype(np.int64)


def _joint_set_of(arrays: dict, path: Path, allow_generic: bool) -> JointSet:
    """The file's ``joint_set``; without one, the known set its ``joint_names`` (checked against
    ``parents``) are, else (``allow_generic``) a generic set of its own names and parents."""
    if "joint_set" in arrays:
        try:
            return get_joint_set(str(_scalar(arrays, "joint_set", path)))
        except MarionetteError as exc:
            raise MarionetteError(f"{path}: field 'joint_set': {exc}") from None
    if "joint_names" not in arrays:
        raise MarionetteError(f"{path}: missing field 'joint_set' (expected a name such as 'BODY_25B') and no "
                              "field 'joint_names' to infer it from")
    names = np.asarray(arrays["joint_names"]).reshape(-1)
    parents = arrays.get("parents")
    joint_set, why = infer_joint_set(names, parents)
    if joint_set is not None:
        return joint_set
    if not allow_generic:
        raise MarionetteError(f"{path}: no field 'joint_set', and {why}; add joint_set (one of "
                              f"{', '.join(JOINT_SETS)})")
    if parents is None:
        raise MarionetteError(f"{path}: {why}, and a skeleton of its own needs field 'parents' (parent index per "
                              "joint, -1 for the root)")
    return generic_joint_set(names, parents, where=str(path))


def load_skeleton(path, allow_generic: bool = False) -> SkeletonSequence:
    """Read and validate a skeleton ``.npz``; errors name the file and the field.

    Without ``joint_set`` the set is inferred from ``joint_names`` (checked against ``parents``);
    names of no known set are an error, or with ``allow_generic`` a generic joint set of the
    file's own names and parents (``engine.body.joint_sets.generic_joint_set``).
    A ``.trc`` file (OpenSim markers, as Pose2Sim writes) is read by ``engine.io.trc.read_trc``.
    """
    path = Path(path)
    if path.suffix.lower() == ".trc":
        from engine.io.trc import read_trc

        return read_trc(path, allow_generic=allow_generic)
    arrays = read_npz(path)
    fmt = str(_scalar(arrays, "format", path, SKELETON_FORMAT))
    if fmt != SKELETON_FORMAT:
        raise MarionetteError(f"{path}: field 'format' is {fmt[:60]!r}, expected {SKELETON_FORMAT!r}")
    version = _scalar(arrays, "version", path, SKELETON_VERSION)
    version = number(version, f"{path}: field 'version'", lo=1, integer=True)
    if version > SKELETON_VERSION:
        raise MarionetteError(f"{path}: skeleton file version {version} is newer than supported ({SKELETON_VERSION})")
    if "joints" not in arrays:
        raise MarionetteError(f"{path}: missing field 'joints' (expected [T, J, 3] positions in metres)")
    joint_set = _joint_set_of(arrays, path, allow_generic)
    joints = _numeric(arrays, "joints", path)
    if joints.ndim != 3 or joints.shape[1:] != (joint_set.num_joints, 3):
        raise MarionetteError(f"{path}: field 'joints' has shape {list(joints.shape)}, expected "
                              f"[T, {joint_set.num_joints}, 3] for joint set {joint_set.name}")
    if joints.shape[0] == 0:
        raise MarionetteError(f"{path}: field 'joints' has zero frames")
    if joints.shape[0] > MAX_FRAMES:
        raise MarionetteError(f"{path}: field 'joints' has {joints.shape[0]} frames, more than {MAX_FRAMES}")
    if "joint_names" in arrays:
        names = np.asarray(arrays["joint_names"])
        if names.ndim != 1 or [str(n) for n in names] != list(joint_set.names):
            raise MarionetteError(f"{path}: field 'joint_names' does not match joint set {joint_set.name}")
    fps = _scalar(arrays, "fps", path)
    if fps is None:
        raise MarionetteError(f"{path}: missing field 'fps' (frames per second)")
    fps = number(fps, f"{path}: field 'fps'", lo=0, lo_open=True, hi=MAX_FPS)
    confidence = _numeric(arrays, "confidence", path) if "confidence" in arrays else None
    up_axis = str(_scalar(arrays, "up_axis", path, "Z"))
    known = {"format", "version", "joints", "confidence", "joint_set", "joint_names", "parents", "fps", "up_axis"}
    extras = {k: v for k, v in arrays.items() if k not in known}
    if "frame_indices" in extras:
        extras["frame_indices"] = check_frame_indices(extras["frame_indices"], joints.shape[0], str(path))
    try:
        return SkeletonSequence(joints=joints, joint_set=joint_set, fps=fps, confidence=confidence,
                                up_axis=up_axis, extras=extras)
    except MarionetteError as exc:
        raise MarionetteError(f"{path}: {exc}") from None
