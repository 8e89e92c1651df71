"""SMPL motion files (AMASS-style ``.npz``) and the armature rigs that play them.

Reading (:func:`load_smpl_motion`), keys:

==================================  ==========================  =======================================
key                                 shape                       meaning
==================================  ==========================  =======================================
poses                               [T, 72|156|165] or [T,J,3]  axis-angle per joint (SMPL 24, SMPL-H 52,
                                                                SMPL-X 55); only the 22 body joints of
                                                                SMPL-H/X are used, SMPL's hand joints
                                                                (22, 23) are then left at rest
trans                               [T, 3]                      root translation, metres
betas                               [K] or [T, K] (optional)    shape; a per-frame array must be constant
gender                              str (optional)              ``neutral``/``male``/``female``
mocap_framerate | mocap_frame_rate  scalar                      frames per second (one is required)
| fps
up_axis                             str (optional)              world up axis; AMASS files are Z-up
==================================  ==========================  =======================================

Rigs (:func:`smpl_rig`): one bone per SMPL joint, named as ``engine.body.joint_sets.SMPL_24``,
head at the joint, tail towards its (main) child. A joint's keyed rotation is SMPL's
local rotation expressed in the bone's rest frame, ``Q = Rrest^T C R C^T Rrest`` (``C``
the file-to-Blender axis change), so the armature reproduces SMPL's forward kinematics
exactly: joint j of frame t lands at ``scale * C @ smpl_joints[t, j]``.

Without a user's SMPL model, rest joints come from :data:`GENERIC_SMPL_REST_JOINTS`,
an approximate adult neutral skeleton defined here (not SMPL data).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine import MarionetteError
from engine.fileio import read_npz
from engine.body.kinematics import Rig, bone_frames
from engine.geometry.rotations import (axis_angle_to_matrix, make_quats_continuous, matrix_to_quat, quat_conj, quat_exp,
                                       quat_mul)
from engine.body.joint_sets import SMPL_24

FPS_KEYS = ("mocap_framerate", "mocap_frame_rate", "fps")
SMPL_PARENTS = np.asarray(SMPL_24.parents)
# number of joints in poses -> body joints to take
_POSE_LAYOUTS = {24: 24, 52: 22, 55: 22}

# Approximate neutral adult rest joints (metres, SMPL's frame: Y up, facing +Z, subject's
# left at +X), made symmetric; used only when the user has not set an SMPL model file.
_HALF = {  # name: (|x|, y, z) for left/right pairs, (x, y, z) for the midline
    "pelvis": (0.0, -0.22, 0.025),
    "hip": (0.07, -0.31, 0.02),
    "spine1": (0.0, -0.11, 0.0),
    "knee": (0.105, -0.69, 0.015),
    "spine2": (0.0, 0.02, 0.005),
    "ankle": (0.09, -1.09, -0.027),
    "spine3": (0.0, 0.075, 0.027),
    "foot": (0.12, -1.145, 0.10),
    "neck": (0.0, 0.29, -0.015),
    "collar": (0.077, 0.19, -0.008),
    "head": (0.0, 0.45, 0.04),
    "shoulder": (0.16, 0.235, -0.016),
    "elbow": (0.42, 0.22, -0.04),
    "wrist": (0.67, 0.228, -0.049),
    "hand": (0.755, 0.22, -0.057),
}


def _generic_rest() -> np.ndarray:
    out = np.zeros((24, 3))
    for j, name in enumerate(SMPL_24.names):
        side, _, part = name.partition("_")
        if side in ("left", "right") and part in _HALF:
            x, y, z = _HALF[part]
            out[j] = (x if side == "left" else -x, y, z)
        else:
            out[j] = _HALF[name]
    return out


GENERIC_SMPL_REST_JOINTS = _generic_rest()


@dataclass
class SmplMotion:
    poses: np.ndarray  # [T, 24, 3] axis-angle
    trans: np.ndarray  # [T, 3]
    betas: np.ndarray  # [K]
    gender: str
    fps: float
    up_axis: str | None  # None when the file does not say
    source_joints: int  # joints in the file's poses (24, 52 or 55)

    @property
    def num_frames(self) -> int:
        return self.poses.shape[0]


def _require(arrays: dict, key: str, where: str, expected: str):
    if key in arrays:
        return arrays[key]
    close = difflib.get_close_matches(key, list(arrays), n=1, cutoff=0.6)
    hint = f" (found {close[0]!r}: misspelled?)" if close else ""
    raise MarionetteError(f"{where}: missing field {key!r}, expected {expected}{hint}")


def load_smpl_motion(path) -> SmplMotion:
    """Read and validate an AMASS-style SMPL motion ``.npz``; errors name the file and the field."""
    path = Path(path)
    where = str(path)
    arrays = read_npz(path)

    poses = np.asarray(_require(arrays, "poses", where, "[T, 72] axis-angle (or [T, 156] SMPL-H)"))
    if not np.issubdtype(poses.dtype, np.number):
        raise MarionetteError(f"{where}: field 'poses' is not numeric (dtype {poses.dtype})")
    if poses.ndim == 2 and poses.shape[1] % 3 == 0:
        poses = poses.reshape(poses.shape[0], poses.shape[1] // 3, 3)
    if poses.ndim != 3 or poses.shape[2] != 3 or poses.shape[1] not in _POSE_LAYOUTS:
        raise MarionetteError(f"{where}: field 'poses' has shape {list(np.shape(arrays['poses']))}, expected "
                              "[T, 72] (SMPL), [T, 156] (SMPL-H), [T, 165] (SMPL-X) or [T, J, 3]")
    T = poses.shape[0]
    if T == 0:
        raise MarionetteError(f"{where}: field 'poses' has zero frames")
    src_j = poses.shape[1]
    body = np.zeros((T, 24, 3))
    body[:, :_POSE_LAYOUTS[src_j]] = poses[:, :_POSE_LAYOUTS[src_j]]

    trans = np.asarray(_require(arrays, "trans", where, f"[{T}, 3] root translation in metres"))
    if not np.issubdtype(trans.dtype, np.number) or trans.shape != (T, 3):
        raise MarionetteError(f"{where}: field 'trans' has shape {list(trans.shape)}, expected [{T}, 3] "
                              "(one translation per pose)")
    for name, arr in (("poses", body), ("trans", trans)):
        bad = np.flatnonzero(~np.isfinite(arr.reshape(T, -1)).all(1))
        if len(bad):
            raise MarionetteError(f"{where}: field {name!r} has NaN or infinite values in {len(bad)} frame(s), "
                                  f"first at frame {int(bad[0])}; SMPL motion must be complete")

    betas = np.zeros(0)
    if "betas" in arrays:
        betas = np.asarray(arrays["betas"])
        if not np.issubdtype(betas.dtype, np.number):
            raise MarionetteError(f"{where}: field 'betas' is not numeric")
        if betas.ndim == 2 and betas.shape[0] == T:
            if not np.allclose(betas, betas[:1], atol=1e-6):
                raise MarionetteError(f"{where}: field 'betas' changes over time; one body shape is expected")
            betas = betas[0]
        if betas.ndim != 1:
            raise MarionetteError(f"{where}: field 'betas' has shape {list(betas.shape)}, expected [K]")
        if not np.isfinite(betas).all():
            raise MarionetteError(f"{where}: field 'betas' has NaN or infinite values")

    gender = "neutral"
    if "gender" in arrays:
        g = arrays["gender"]
        g = g.item() if g.ndim == 0 else g
        if isinstance(g, bytes):
            g = g.decode("utf-8", "replace")
        gender = str(g).strip().lower()
        if gender not in ("neutral", "male", "female"):
            raise MarionetteError(f"{where}: field 'gender' is {gender!r}, expected neutral, male or female")

    fps_key = next((k for k in FPS_KEYS if k in arrays), None)
    if fps_key is None:
        close = [c for k in FPS_KEYS for c in difflib.get_close_matches(k, list(arrays), n=1, cutoff=0.6)]
        hint = f" (found {close[0]!r}: misspelled?)" if close else ""
        raise MarionetteError(f"{where}: missing frame rate; expected one of the fields {', '.join(FPS_KEYS)}{hint}")
    try:
        fps = float(np.asarray(arrays[fps_key]).reshape(-1)[0])
    except (ValueError, TypeError, IndexError):
        fps = float("nan")
    if not (np.isfinite(fps) and fps > 0):
        raise MarionetteError(f"{where}: field {fps_key!r} must be a positive frame rate, got {arrays[fps_key]!r}")

    up = str(arrays["up_axis"]) if "up_axis" in arrays else None
    if up is not None and up.upper().lstrip("+") not in ("X", "Y", "Z", "-X", "-Y", "-Z"):
        raise MarionetteError(f"{where}: field 'up_axis' is {up!r}, expected X, Y, Z, -X, -Y or -Z")
    return SmplMotion(poses=body.astype(np.float64), trans=trans.astype(np.float64), betas=betas.astype(np.float64),
                      gender=gender, fps=fps, up_axis=up, source_joints=src_j)



def smpl_joints(rest_joints: np.ndarray, poses: np.ndarray, trans: np.ndarray) -> np.ndarray:
    """SMPL forward kinematics in numpy: posed joints [T, 24, 3] in the file's frame
    (what ``smplx.SMPL(...).joints[:, :24]`` returns for the same rest joints)."""
    Rl = axis_angle_to_matrix(np.asarray(poses, np.float64))
    J = np.asarray(rest_joints, np.float64)
    T = Rl.shape[0]
    G = np.empty((T, 24, 3, 3))
    X = np.empty((T, 24, 3))
    for j in range(24):
        p = SMPL_PARENTS[j]
        if p < 0:
            G[:, j] = Rl[:, j]
            X[:, j] = J[j] + trans
        else:
            G[:, j] = G[:, p] @ Rl[:, j]
            X[:, j] = X[:, p] + G[:, p] @ (J[j] - J[p])
    return X


def smpl_rig(rest_joints_blender: np.ndarray, up=(0.0, 0.0, 1.0)) -> Rig:
    """A rig with one bone per SMPL joint (head at the joint) from rest joints in Blender space.

    Tails point to the child (for joints with several children: the one most along
    ``up``... i.e. the spine, not the hips or collars); leaves continue their parent's
    direction at half its length.
    """
    J = np.asarray(rest_joints_blender, np.float64)
    up = np.asarray(up, np.float64)
    tails = np.empty_like(J)
    for j in range(24):
        kids = [c for c in range(24) if SMPL_PARENTS[c] == j]
        if kids:
            c = max(kids, key=lambda k: float(np.dot(J[k] - J[j], up))) if len(kids) > 1 else kids[0]
            tails[j] = J[c]
        else:
            p = SMPL_PARENTS[j]
            tails[j] = J[j] + 0.5 * (J[j] - J[p])
        if np.linalg.norm(tails[j] - J[j]) < 1e-3:
            tails[j] = J[j] + np.array([0.0, 0.0, 0.05])
    rest_rot = bone_frames(J, tails)
    return Rig(bone_names=list(SMPL_24.names), parents=SMPL_PARENTS.copy(), heads=J.copy(), tails=tails,
               rest_rotations=rest_rot, joint_bone=np.arange(24), joint_at_tail=np.zeros(24, dtype=bool),
               joint_set=SMPL_24, rest_joints=J.copy(), up=up)


def smpl_animation(rig: Rig, poses: np.ndarray, trans: np.ndarray, rest_joints_file: np.ndarray,
                   axes: np.ndarray, scale: float = 1.0, rest_axes: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Keyed quaternions [T, 24, 4] and root locations [T, 3] playing SMPL motion on ``rig``.

    axes:      [3, 3] rotation from the file's world frame (``poses[:, 0]``, ``trans``) to Blender's.
    rest_axes: [3, 3] rotation from SMPL's body frame to the armature's rest pose (default
               ``axes``); ``rig`` must have been built from ``scale * rest_joints_file @ rest_axes.T``
               (its rest frames may come from Blender). With ``rest_axes = up_axis_matrix("Y")`` the
               rest pose stands upright in Blender even for Z-up (AMASS) motion: the body-to-world
               turn moves into the root rotation (``C R_0 M^T``); other joints get ``M R_j M^T``.
    Either way the posed joints land at ``scale * axes @ smpl_joints``.
    """
    C = np.asarray(axes, np.float64)
    M = C if rest_axes is None else np.asarray(rest_axes, np.float64)
    Rr = rig.rest_rotations
    qRr = matrix_to_quat(Rr)  # [24, 4]
    qM = matrix_to_quat(M)
    # Q_j = Rr_j^T M R_j M^T Rr_j (root: Rr^T C R_0 M^T Rr), as elementwise quaternion products
    right = quat_mul(quat_conj(qM)[None], qRr)  # M^T Rr_j
    left = quat_conj(right)  # Rr_j^T M
    left[rig.root] = quat_mul(quat_conj(qRr[rig.root]), matrix_to_quat(C))
    ql = quat_exp(np.asarray(poses, np.float64))  # [T, 24, 4]
    q = quat_mul(quat_mul(left[None], ql), right[None])
    q = make_quats_continuous(q / np.linalg.norm(q, axis=-1, keepdims=True))
    root_pos = scale * (np.asarray(rest_joints_file, np.float64)[0] + np.asarray(trans, np.float64)) @ C.T
    loc = (root_pos - rig.heads[rig.root]) @ Rr[rig.root]
    return q, loc
