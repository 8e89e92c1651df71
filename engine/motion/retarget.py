"""Retargeting: move motion from one skeleton onto another with its own rest pose and bone lengths.

Method (direction matching, so the two rest poses need not agree):

1. The source motion becomes canonical joint positions (``engine.body.joint_sets``
   vocabulary): directly from a joint-position sequence, or by forward kinematics
   from a rig's bone rotations (``RigMotion``). Missing joints are gap-filled.
2. Every mapped target bone gets a world rotation ``Q`` (relative to its rest)
   that turns its rest *aim* vector (its head joint to a canonical joint further
   down the chain, e.g. hip -> knee) onto the source's current aim vector. Twist
   comes from a *hint* vector where both skeletons have one (the hip line for the
   pelvis, the shoulder line for the chest, the foot's forward direction for the
   legs), otherwise it is inherited from the parent (minimal swing). Because only
   directions are copied, a T-pose source drives an A-pose target correctly: the
   rest poses are aligned bone by bone.
3. The pelvis follows the source pelvis with its displacement scaled by the ratio
   of leg lengths (target/source) and its height measured from each skeleton's
   floor; ``root="in_place"`` removes horizontal travel.
4. Foot contacts are detected on the source (foot joints low and slow); during a
   contact the target's foot is pinned to one point (scaled source height) by a
   two-bone leg IK that keeps the thigh and shin lengths exactly and the knee in
   its bend plane, blended in and out over ``blend`` seconds.

Outputs are Blender-ready: per-bone pose quaternions (w, x, y, z) relative to the
rest pose in each bone's local frame, and a location for the pelvis bone. No bpy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engine import MarionetteError
from engine.geometry.axes import up_vector
from engine.geometry.rotations import (matrix_to_quat, quat_between, quat_conj, quat_exp, quat_mul, quat_normalize,
                                       quat_rotate, quat_to_matrix)
from engine.motion.resample import bone_lengths, fill_gaps, skeleton_times
from engine.io.skeleton_file import SkeletonSequence
from engine.body.joint_sets import DERIVED
from engine.body.kinematics import Rig

__all__ = ["rig_from_skeleton", "RigMotion", "CanonicalMotion", "source_twist", "RetargetResult", "retarget", "source_positions", "detect_contacts",
           "foot_sliding", "direction_errors", "up_vector"]

# Canonical joints reachable from others, beyond engine.body.joint_sets.DERIVED (retargeting only).
_EXTRA_DERIVED = {
    "left_toe_end": [("left_big_toe", 1.0)],
    "right_toe_end": [("right_big_toe", 1.0)],
    "left_big_toe": [("left_toe_end", 1.0)],
    "right_big_toe": [("right_toe_end", 1.0)],
    "neck": [("neck_base", 1.0)],
}

_SPINE_UP = ["spine1", "spine2", "spine3", "neck_base", "neck", "upper_neck"]
_SIDE = ("left", "right")


def _bone_rules() -> dict[str, tuple[list[str], tuple[str, str] | None]]:
    """canonical head joint -> (aim candidates, hint pair (a, b) meaning vector b - a)."""
    hips = ("right_hip", "left_hip")
    shoulders = ("right_shoulder", "left_shoulder")
    rules: dict = {
        "pelvis": (_SPINE_UP, hips),
        "spine1": (_SPINE_UP[1:], hips),
        "spine2": (_SPINE_UP[2:], shoulders),
        "spine3": (_SPINE_UP[3:] + ["head"], shoulders),
        "neck_base": (["head", "upper_neck", "head_top", "nose"], ("right_ear", "left_ear")),
        "neck": (["head", "upper_neck", "head_top", "nose"], ("right_ear", "left_ear")),
        "upper_neck": (["head_top", "head", "nose"], ("right_ear", "left_ear")),
        "head": (["head_top", "nose"], ("right_ear", "left_ear")),
    }
    for s in _SIDE:
        fwd = (f"{s}_ankle", f"{s}_foot")
        rules.update({
            f"{s}_collar": ([f"{s}_shoulder"], None),
            f"{s}_shoulder": ([f"{s}_elbow"], None),
            f"{s}_elbow": ([f"{s}_wrist"], None),
            f"{s}_wrist": ([f"{s}_hand"], None),
            f"{s}_hip": ([f"{s}_knee"], fwd),
            f"smpl_{s}_hip": ([f"{s}_knee"], fwd),
            f"{s}_knee": ([f"{s}_ankle"], fwd),
            f"{s}_ankle": ([f"{s}_foot", f"{s}_big_toe", f"{s}_toe_end"], None),
            f"{s}_foot": ([f"{s}_toe_end", f"{s}_big_toe"], None),
        })
    return rules


BONE_RULES = _bone_rules()


# ----------------------------------------------------------------------------- small math

def _rotation_between_up(src_up: np.ndarray, dst_up: np.ndarray) -> np.ndarray:
    return quat_between(src_up[None], dst_up[None])[0]


# ----------------------------------------------------------------------------- rigs

def rig_from_skeleton(seq: SkeletonSequence, lengths=None) -> Rig:
    """A rest skeleton for an actor captured as ``seq``: its median bone lengths along the
    directions of its most complete frame (only lengths matter to retargeting)."""
    js = seq.joint_set
    joints = seq.joints.astype(np.float64)
    L = bone_lengths(joints, js.parents) if lengths is None else np.asarray(lengths, float)
    if not np.all(np.isfinite(L)):
        missing = [js.names[j] for j in range(js.num_joints) if not np.isfinite(L[j])]
        raise MarionetteError(f"skeleton: joints never observed, bone length unknown: {', '.join(missing)}")
    filled = fill_gaps(seq, max_gap=None).joints.astype(np.float64)
    complete = np.isfinite(filled).all(-1).sum(-1)
    frame = filled[int(np.argmax(complete))]
    if not np.isfinite(frame).all():
        raise MarionetteError("skeleton: no frame has every joint, cannot build a rest skeleton")
    rest = np.zeros_like(frame)
    for j in js.topological_order():
        p = js.parents[j]
        if p < 0:
            rest[j] = frame[j]
        else:
            d = frame[j] - frame[p]
            rest[j] = rest[p] + L[j] * d / max(np.linalg.norm(d), 1e-9)
    up = up_vector(seq.up_axis)
    floor = _floor_height(seq_canonical(seq), up)
    return Rig.from_joint_set(js, rest, up=up, floor=floor)


@dataclass
class RigMotion:
    """Motion of a rig as bone rotations: pose quaternions relative to rest (Blender's
    ``pose_bone.rotation_quaternion``) [T, B, 4] and root bone locations [T, 3] (bone-local, or None)."""

    rig: Rig
    rotations: np.ndarray
    fps: float
    location: np.ndarray | None = None
    root_bone: str | None = None

    def world(self) -> tuple[np.ndarray, np.ndarray]:
        """Forward kinematics: (world rotation deltas [T, B, 4], heads [T, B, 3]) in armature space."""
        rig = self.rig
        q = np.asarray(self.rotations, dtype=np.float64)
        T, B = q.shape[:2]
        if q.shape != (T, len(rig.bone_names), 4):
            raise MarionetteError(f"rotations: expected [T, {len(rig.bone_names)}, 4], got {list(q.shape)}")
        rest_q = matrix_to_quat(rig.rest_rotations)
        world = np.zeros((T, B, 4))
        heads = np.zeros((T, B, 3))
        root_b = rig.bone_names.index(self.root_bone) if self.root_bone else None
        for b in rig.order:
            p = rig.parents[b]
            # world delta: Q_b = Q_p * R_b L_b R_b^-1 (pose = parent pose * rest offset * local basis)
            local_world = quat_mul(quat_mul(rest_q[b], quat_normalize(q[:, b])), quat_conj(rest_q[b]))
            if p < 0:
                world[:, b] = local_world
                heads[:, b] = rig.heads[b]
            else:
                world[:, b] = quat_mul(world[:, p], local_world)
                heads[:, b] = heads[:, p] + quat_rotate(world[:, p], rig.heads[b] - rig.heads[p])
            if self.location is not None and (b == root_b or (root_b is None and p < 0)):
                loc = np.asarray(self.location, dtype=np.float64)
                offset = loc @ rig.rest_rotations[b].T
                if p >= 0:
                    offset = quat_rotate(world[:, p], offset)
                heads[:, b] = heads[:, b] + offset
        return world, heads


@dataclass
class CanonicalMotion:
    """Motion as canonical joint positions: {"left_knee": [T, 3], ...} (e.g. read from any posed armature).

    Optional, to carry bone twist (a forearm's roll) that positions alone cannot show:
    ``rest`` {canonical: [3]} the source's rest joint positions, and ``frames``
    {(head canonical, tail canonical or None): (rest frame [3, 3], frames [T, 3, 3])}, the
    orientation (columns: unit axes) of the source bone that starts at that joint, at rest and
    in every frame, in the same space as ``positions``.
    """

    positions: dict
    fps: float
    up: np.ndarray = field(default_factory=lambda: np.array([0.0, 0.0, 1.0]))
    rest: dict = field(default_factory=dict)
    frames: dict = field(default_factory=dict)

    def __post_init__(self):
        if not self.positions:
            raise MarionetteError("source motion: no joints")
        lengths = {len(np.asarray(v)) for v in self.positions.values()}
        if len(lengths) != 1:
            raise MarionetteError(f"source motion: joints have different frame counts {sorted(lengths)}")
        self.positions = {str(c): np.asarray(v, dtype=np.float64).reshape(-1, 3) for c, v in self.positions.items()}
        self.up = up_vector(self.up)
        if not (np.isfinite(self.fps) and self.fps > 0):
            raise MarionetteError(f"source motion: fps must be positive, got {self.fps}")


# ----------------------------------------------------------------------------- canonical positions

def _resolve(canon: str, available, depth: int = 0):
    """canonical -> [(available canonical, weight)] or None."""
    if canon in available:
        return [(canon, 1.0)]
    if depth > 3:
        return None
    for table in (_EXTRA_DERIVED, DERIVED):
        if canon in table:
            parts = []
            for sub, w in table[canon]:
                r = _resolve(sub, available, depth + 1)
                if r is None:
                    parts = None
                    break
                parts += [(c, w * ww) for c, ww in r]
            if parts:
                return parts
    return None


def _get(positions: dict, canon: str):
    r = _resolve(canon, positions)
    if r is None:
        return None
    return sum(w * np.asarray(positions[c], dtype=np.float64) for c, w in r)


def seq_canonical(seq: SkeletonSequence) -> dict[str, np.ndarray]:
    js = seq.joint_set
    return {c: seq.joints[:, j].astype(np.float64) for j, c in enumerate(js.canonical)}


def _bone_frames(rig: Rig, world: np.ndarray) -> dict:
    """{(head canonical, tail canonical): (rest frame [3, 3], posed frames [T, 3, 3])} of a rig's mapped bones."""
    out = {}
    for b, (head, tail) in enumerate(rig.bone_joints()):
        if head is None:
            continue
        rest = rig.rest_rotations[b] / np.linalg.norm(rig.rest_rotations[b], axis=0, keepdims=True)
        out[(head, tail)] = (rest, quat_to_matrix(world[:, b]) @ rest)
    return out


def source_twist(source) -> tuple[dict, dict]:
    """(rest joint positions, bone frames) of a rotation source (RigMotion / CanonicalMotion with
    frames); empty for joint positions, which carry no twist."""
    if isinstance(source, RigMotion):
        world, _ = source.world()
        return source.rig.canonical_rest, _bone_frames(source.rig, world)
    if isinstance(source, CanonicalMotion) and source.frames:
        return dict(source.rest), dict(source.frames)
    return {}, {}


def source_positions(source) -> tuple[dict, float, np.ndarray]:
    """(canonical joint -> [T, 3], fps, up vector) from a SkeletonSequence, RigMotion or CanonicalMotion."""
    if isinstance(source, SkeletonSequence):
        if source.num_frames < 2:
            raise MarionetteError("source motion has a single frame; need at least two to retarget motion")
        times = skeleton_times(source)
        if np.allclose(np.diff(times), 1.0 / source.fps):
            seq = fill_gaps(source, max_gap=None)
        else:
            seq = source  # uneven rows: fill by resampling first (engine.motion.resample.resample_skeleton)
        return seq_canonical(seq), float(source.fps), up_vector(source.up_axis)
    if isinstance(source, RigMotion):
        world, heads = source.world()
        return _rig_canonical(source.rig, world, heads), float(source.fps), source.rig.up
    if isinstance(source, CanonicalMotion):
        return dict(source.positions), float(source.fps), source.up
    raise MarionetteError(f"source motion: expected a SkeletonSequence, RigMotion or CanonicalMotion, "
                          f"got {type(source).__name__}")


def _rig_canonical(rig: Rig, world: np.ndarray, heads: np.ndarray) -> dict[str, np.ndarray]:
    """Canonical joint positions [T, 3] of a posed rig (world deltas and heads from FK)."""
    out = {c: heads[:, rig.bone_names.index(b)] for c, b in rig.mapping.items()}
    for c, bname in rig.tail_mapping.items():
        b = rig.bone_names.index(bname)
        out[c] = heads[:, b] + quat_rotate(world[:, b], rig.tails[b] - rig.heads[b])
    return out


def _floor_height(pos: dict, up: np.ndarray) -> float:
    feet = [v for c, v in pos.items() if any(c.endswith(k) for k in ("ankle", "foot", "toe", "heel", "toe_end"))]
    if not feet:
        feet = list(pos.values())
    h = np.stack([f @ up for f in feet], 0)  # [F, T]
    low = np.nanmin(np.where(np.isfinite(h), h, np.inf), axis=0)
    low = low[np.isfinite(low)]
    if not len(low):
        raise MarionetteError("source motion has no valid joint positions")
    return float(np.percentile(low, 2))


def _leg_length(get, up: np.ndarray, floor: float) -> float | None:
    """Standing pelvis height: hip drop below the pelvis + thigh + shin + ankle height above the floor.

    Measured the same way on source (medians/percentiles over frames) and target (rest),
    so their ratio scales root motion and the pelvis lands at the right height.
    """
    total = []
    pelvis = get("pelvis")
    for s in _SIDE:
        pts = [get(f"{s}_hip"), get(f"{s}_knee"), get(f"{s}_ankle")]
        if any(p is None for p in pts):
            continue
        pts = [np.atleast_2d(p) for p in pts]
        seg = [np.nanmedian(np.linalg.norm(pts[i + 1] - pts[i], axis=-1)) for i in range(2)]
        ankle_h = pts[2] @ up - floor
        ankle_h = np.nanpercentile(ankle_h, 5) if np.isfinite(ankle_h).any() else np.nan
        drop = np.nanmedian((np.atleast_2d(pelvis) - pts[0]) @ up) if pelvis is not None else 0.0
        total.append(seg[0] + seg[1] + max(float(ankle_h), 0.0) + max(float(drop), 0.0))
    total = [t for t in total if np.isfinite(t) and t > 0]
    return float(np.mean(total)) if total else None


# ----------------------------------------------------------------------------- contacts and metrics

def _runs_of(mask: np.ndarray) -> list[tuple[int, int]]:
    m = np.concatenate([[False], mask.astype(bool), [False]])
    d = np.diff(m.astype(np.int8))
    return list(zip(np.nonzero(d == 1)[0].tolist(), np.nonzero(d == -1)[0].tolist()))


def detect_contacts(pos: np.ndarray, up: np.ndarray, fps: float, floor: float, height: float = 0.05,
                    speed: float = 0.3, min_duration: float = 0.05) -> np.ndarray:
    """Ground contact [T] of one foot joint: within ``height`` metres of its own standing height
    (low percentile of its height above the floor) and slower than ``speed`` m/s; runs shorter
    than ``min_duration`` seconds are dropped and holes shorter than it are closed."""
    pos = np.asarray(pos, dtype=np.float64)
    T = len(pos)
    h = pos @ up - floor
    ok = np.isfinite(h)
    if ok.sum() < 3:
        return np.zeros(T, dtype=bool)
    stand = np.percentile(h[ok], 5)
    v = np.full(T, np.inf)
    vel = np.gradient(np.where(ok[:, None], pos, np.nan), axis=0) * fps
    v[ok] = np.linalg.norm(vel[ok], axis=-1)
    v = np.where(np.isfinite(v), v, np.inf)
    # light smoothing of the speed: triangulated joints jitter
    if T >= 3:
        vs = v.copy()
        vs[1:-1] = np.minimum(np.inf, (v[:-2] + 2 * v[1:-1] + v[2:]) / 4)
        v = vs
    contact = ok & (h < stand + height) & (v < speed)
    n_min = max(1, int(round(min_duration * fps)))
    # close short holes, then drop short runs
    for a, b in _runs_of(~contact):
        if a > 0 and b < T and b - a < n_min:
            contact[a:b] = True
    for a, b in _runs_of(contact):
        if b - a < n_min:
            contact[a:b] = False
    return contact


def foot_sliding(pos: np.ndarray, contact: np.ndarray, up) -> float:
    """Mean horizontal displacement (metres per frame) of a joint between consecutive contact frames."""
    pos = np.asarray(pos, dtype=np.float64)
    up = up_vector(up)
    horiz = pos - (pos @ up)[:, None] * up
    both = contact[1:] & contact[:-1]
    if not both.any():
        return float("nan")
    d = np.linalg.norm(np.diff(horiz, axis=0), axis=-1)[both]
    return float(np.nanmean(d))


def direction_errors(source_pos: dict, target_pos: dict, pairs) -> dict[str, float]:
    """Mean angle (degrees) between source and target direction of each canonical pair (a, b)."""
    out = {}
    for a, b in pairs:
        sa, sb, ta, tb = _get(source_pos, a), _get(source_pos, b), _get(target_pos, a), _get(target_pos, b)
        if any(x is None for x in (sa, sb, ta, tb)):
            continue
        u, v = sb - sa, tb - ta
        cos = np.sum(u * v, -1) / np.maximum(np.linalg.norm(u, axis=-1) * np.linalg.norm(v, axis=-1), 1e-12)
        ang = np.degrees(np.arccos(np.clip(cos, -1, 1)))
        if np.isfinite(ang).any():
            out[f"{a}->{b}"] = float(np.nanmean(ang))
    return out


# ----------------------------------------------------------------------------- retargeting

@dataclass
class RetargetResult:
    bone_names: list
    rotations: np.ndarray  # [T, B, 4] pose quaternions relative to rest (bone-local, w x y z)
    location: np.ndarray  # [T, 3] pose location of ``root_bone`` (its rest-local frame)
    root_bone: str
    world: np.ndarray  # [T, B, 4] world rotation deltas
    heads: np.ndarray  # [T, B, 3] posed bone heads (target space)
    fps: float
    scale: float  # root-motion scale (target leg / source leg)
    contacts: dict = field(default_factory=dict)  # canonical foot joint -> [T] bool (source contacts)
    source: dict = field(default_factory=dict)  # canonical joint -> [T, 3] source positions in target space, scaled
    aims: dict = field(default_factory=dict)  # bone name -> (head canonical, aim canonical) used
    rig: Rig | None = None

    def canonical(self) -> dict[str, np.ndarray]:
        """Posed target positions by canonical joint name."""
        return _rig_canonical(self.rig, self.world, self.heads)

    def to_skeleton(self) -> SkeletonSequence:
        """For joint-set targets: the retargeted motion as a skeleton sequence."""
        js = self.rig.joint_set
        if js is None:
            raise MarionetteError("target is an armature, not a joint set; use rotations/location instead")
        up = self.rig.up
        axis = {tuple(up_vector(a)): a for a in ("X", "Y", "Z", "-X", "-Y", "-Z")}.get(tuple(np.round(up, 6)), "Z")
        pos = self.canonical()
        joints = np.stack([pos[c] for c in js.canonical], axis=1)
        return SkeletonSequence(joints=joints.astype(np.float32), joint_set=js, fps=self.fps, up_axis=axis)


def _twist_to_hint(q: np.ndarray, v_now: np.ndarray, u_rest: np.ndarray, u_now: np.ndarray) -> np.ndarray:
    """Add a twist about ``v_now`` to ``q`` so that q*u_rest matches u_now around that axis.

    Weighted by how well defined the hint is (its part perpendicular to the aim), so a hint
    that lines up with the aim fades out instead of flipping.
    """
    vn = v_now / np.maximum(np.linalg.norm(v_now, axis=-1, keepdims=True), 1e-12)
    a = quat_rotate(q, u_rest)
    a = a - np.sum(a * vn, -1, keepdims=True) * vn
    b = u_now - np.sum(u_now * vn, -1, keepdims=True) * vn
    na, nb = np.linalg.norm(a, axis=-1), np.linalg.norm(b, axis=-1)
    ref = np.minimum(np.linalg.norm(u_rest, axis=-1), np.linalg.norm(u_now, axis=-1))
    ratio = np.minimum(na, nb) / np.maximum(ref, 1e-12)
    w = np.clip((ratio - 0.15) / 0.25, 0.0, 1.0)
    ang = np.arctan2(np.sum(vn * np.cross(a, b), -1), np.sum(a * b, -1))
    ang = np.where(np.isfinite(ang) & np.isfinite(w), ang * w, 0.0)  # no hint in a frame: keep the swing
    return quat_mul(quat_exp(vn * ang[..., None]), q)


def _source_twist_hint(src_rest: dict, src_frames: dict, start: str, aim: str, v_rest_target: np.ndarray):
    """(reference vector in the target's rest space [3], the same vector now [T, 3]) from the
    source bone that runs from ``start`` toward ``aim``, or None.

    The reference is the source bone's rest axis most perpendicular to its aim; rotating the
    source's rest aim onto the target's (rest-pose alignment) maps it into the target's rest.
    """
    fr = src_frames.get((start, aim)) or next((v for (h, t), v in src_frames.items() if h == start and t is None), None)
    if fr is None:
        cands = [v for (h, _), v in src_frames.items() if h == start]
        fr = cands[0] if len(cands) == 1 else None
    if fr is None or start not in src_rest or aim not in src_rest:
        return None
    rest_frame, frames = fr
    v_s = src_rest[aim] - src_rest[start]
    if np.linalg.norm(v_s) < 1e-9:
        return None
    v_s = v_s / np.linalg.norm(v_s)
    k = int(np.argmin(np.abs(rest_frame.T @ v_s)))  # the axis least aligned with the aim
    u_s = rest_frame[:, k]
    align = quat_between(v_s[None], np.asarray(v_rest_target, float)[None])[0]
    return quat_rotate(align, u_s), frames[:, :, k]


def _two_bone_ik(H, K, A, goal, l1, l2):
    """New knee and ankle for hip H, knee K, ankle A [T,3] reaching ``goal``, lengths kept, knee in its plane."""
    d_vec = goal - H
    d = np.linalg.norm(d_vec, axis=-1, keepdims=True)
    d_cl = np.clip(d, abs(l1 - l2) + 1e-6, l1 + l2 - 1e-6)
    g = d_vec / np.maximum(d, 1e-12)
    pole = K - H
    pole = pole - np.sum(pole * g, -1, keepdims=True) * g
    pn = np.linalg.norm(pole, axis=-1, keepdims=True)
    # a straight leg has no bend plane: bend the knee along the old knee's offset from the old hip-ankle line
    fallback = np.cross(g, np.cross(A - H, g))
    pole = np.where(pn > 1e-6, pole / np.maximum(pn, 1e-12), fallback / np.maximum(np.linalg.norm(fallback, axis=-1, keepdims=True), 1e-12))
    cos_a = np.clip((l1 * l1 + d_cl * d_cl - l2 * l2) / (2 * l1 * d_cl), -1, 1)
    sin_a = np.sqrt(1 - cos_a ** 2)
    K2 = H + l1 * (cos_a * g + sin_a * pole)
    A2 = H + d_cl * g
    return K2, A2


def _subtree(rig: Rig, bone: int) -> np.ndarray:
    inside = np.zeros(len(rig.bone_names), dtype=bool)
    inside[bone] = True
    for b in rig.order:
        p = rig.parents[b]
        if p >= 0 and inside[p]:
            inside[b] = True
    return inside


def _fill_nan_rows(x: np.ndarray) -> np.ndarray:
    """Linearly interpolate rows of [T, D] that contain NaN (held at the ends)."""
    bad = ~np.isfinite(x).all(-1)
    if not bad.any() or bad.all():
        return x
    idx = np.arange(len(x))
    x = x.copy()
    for k in range(x.shape[1]):
        x[bad, k] = np.interp(idx[bad], idx[~bad], x[~bad, k])
    return x


# The stages of retarget(), in order. Each reads and returns plain arrays, so it can be read
# and tested alone:
#   _prepare_source     source motion -> canonical positions in the target's space (+ twist frames)
#   _check_drivable     the target and source share a pelvis and enough joints
#   _root_scale         leg-length ratio for root motion
#   _solve_rotations    world rotation per target bone (aim + twist), the "map joints" step
#   _root_track         which bone carries root motion and where the pelvis goes
#   _scaled_source      the source's joints scaled and placed like the target (for reports)
#   _find_legs          thigh/shin/foot bones and source foot contacts per side
#   _plan_pins          the pinned ankle/ball positions during contacts
#   _lower_pelvis       drop the pelvis where a pinned foot is out of reach
#   _pin_feet           two-bone leg IK onto the pins, the foot turned to a pinned ball
#   _assemble_result    local pose quaternions and the root location

@dataclass
class _RetargetJob:
    """What every stage of :func:`retarget` shares: the target, the source's canonical joint
    positions already in the target's space, and the settings."""

    target: Rig
    pos: dict  # canonical joint -> [T, 3] source positions, target space
    rest: dict  # canonical joint -> [3] target rest positions
    fps: float
    up: np.ndarray  # the target's up
    src_floor: float  # source floor height along up
    root: str  # "keep" or "in_place"
    src_rest: dict  # rotation sources: rest joint positions (target space), else empty
    src_frames: dict  # rotation sources: bone frames (target space), else empty
    scale: float = 1.0  # root-motion scale

    @property
    def T(self) -> int:
        return len(next(iter(self.pos.values())))

    @property
    def B(self) -> int:
        return len(self.target.bone_names)

    def sget(self, c):
        """Source position [T, 3] of canonical joint ``c`` (derived where needed), or None."""
        return _get(self.pos, c)

    def tget(self, c):
        """Target rest position [3] of canonical joint ``c`` (derived where needed), or None."""
        return _get(self.rest, c)


@dataclass
class _RootTrack:
    """Where the target's root goes: the bone that carries the root motion, the bones moving
    with it, and the pelvis position per frame (lowered later by :func:`_lower_pelvis`)."""

    move_b: int
    moved_tree: np.ndarray  # [B] bool
    pelvis_pos: np.ndarray  # [T, 3]
    first: np.ndarray  # [3] the source pelvis's first horizontal position
    horiz_src: np.ndarray  # [T, 3] the source pelvis's horizontal position
    rest_h: np.ndarray  # [3] the target pelvis's horizontal rest position


def _prepare_source(source, target: Rig, root: str, frames: slice | None) -> _RetargetJob:
    """Stage 1: the source as canonical joint positions rotated into the target's space (its up
    onto the target's up), with the bone frames of rotation sources brought along."""
    if root not in ("keep", "in_place"):
        raise MarionetteError(f"root: expected 'keep' or 'in_place', got {root!r}")
    pos, fps, src_up = source_positions(source)
    if frames is not None:
        pos = {c: v[frames] for c, v in pos.items()}
    # joints never observed are absent, so derived joints fall back to what the source has
    pos = {c: v for c, v in pos.items() if np.isfinite(v).all(-1).any()}
    if not pos:
        raise MarionetteError("source motion has no valid joint positions")
    T = len(next(iter(pos.values())))
    if T < 1:
        raise MarionetteError("source motion has no frames in the requested range")
    up = target.up
    # bring the source into the target's space: rotate its up onto the target's up
    q_up = _rotation_between_up(src_up, up)
    src_floor = _floor_height(pos, src_up)
    pos = {c: quat_rotate(q_up, v) for c, v in pos.items()}
    src_floor_h = float(src_floor)  # heights are along up, unchanged by the rotation
    rest = target.canonical_rest
    # rotation sources also carry each bone's twist: bring their frames into the same space
    src_rest, src_frames = source_twist(source)
    R_up = quat_to_matrix(q_up)
    src_rest = {c: R_up @ np.asarray(v, float) for c, v in src_rest.items()}
    src_frames = {k: (R_up @ fr[0], np.einsum("ij,tjk->tik", R_up, fr[1][frames] if frames is not None else fr[1]))
                  for k, fr in src_frames.items()}
    return _RetargetJob(target=target, pos=pos, rest=rest, fps=fps, up=up, src_floor=src_floor_h, root=root,
                        src_rest=src_rest, src_frames=src_frames)


def _check_drivable(job: _RetargetJob) -> None:
    """Stage 2: both skeletons have a pelvis and the source drives at least four target joints."""
    if job.tget("pelvis") is None:
        raise MarionetteError("target rig: no bone is mapped to the pelvis/hips (nor both hips); "
                              "cannot place the root")
    if job.sget("pelvis") is None:
        raise MarionetteError("source motion has no pelvis (or both hips); cannot drive the root")
    usable = [c for c in job.rest if job.sget(c) is not None]
    if len(usable) < 4:
        raise MarionetteError(f"only {len(usable)} target joints can be driven by the source "
                              f"({', '.join(usable) or 'none'}); check the bone mapping")


def _root_scale(job: _RetargetJob, root_scale: float | None) -> float:
    """Stage 3: the root-motion scale: ``root_scale`` if given, else target leg / source leg."""
    src_leg = _leg_length(job.sget, job.up, job.src_floor)
    tgt_leg = _leg_length(job.tget, job.up, job.target.floor)
    if root_scale is not None:
        return float(root_scale)
    if src_leg and tgt_leg:
        return tgt_leg / src_leg
    return 1.0


def _anchor(job: _RetargetJob, joints_of: list, b: int, canon: str | None) -> str | None:
    """The joint a bone's aim starts from: its head joint, or, when the source lacks that (a
    spine joint a capture does not have) or the head is unmapped, the nearest ancestor's joint
    that both skeletons have. The same joint is used on both sides, so the rest vector and
    the source vector compare like with like."""
    sget, tget, target = job.sget, job.tget, job.target
    if canon is not None and sget(canon) is not None and tget(canon) is not None:
        return canon
    anc = target.parents[b]
    while anc >= 0:
        c = joints_of[anc][0]
        if c is not None and sget(c) is not None and tget(c) is not None:
            return c
        anc = target.parents[anc]
    return None


def _bone_aim(job: _RetargetJob, b: int, head_c: str | None, tail_c: str | None,
              head_bone: dict) -> tuple[str | None, tuple[str, str] | None] | None:
    """(aim joint, twist hint pair) of bone ``b`` from its mapped head/tail joints; None to skip
    the bone (it follows its parent)."""
    sget, tget = job.sget, job.tget
    if tail_c is not None:
        # the bone ends at a mapped joint: aim along the bone itself
        aim_c = tail_c if sget(tail_c) is not None else None
        if aim_c is not None and head_c is not None:
            # a source joint built from this very bone's end (a pelvis as the mean of the hips)
            # gives a direction that is an artefact of that construction: stay rigid with the parent
            ph, pt = _resolve(head_c, job.pos), _resolve(tail_c, job.pos)
            if ph and pt and ph != [(head_c, 1.0)] and {c for c, _ in ph} & {c for c, _ in pt}:
                aim_c = None
        rule = BONE_RULES.get(head_c) if head_c else None
        hint = rule[1] if (rule and tail_c in rule[0]) else None
    elif head_c is not None and head_c in BONE_RULES:
        cands, hint = BONE_RULES[head_c]
        aim_c = next((a for a in cands if a != head_c and tget(a) is not None and sget(a) is not None
                      and head_bone.get(a) != b), None)
    else:
        return None
    return aim_c, hint


def _solve_rotations(job: _RetargetJob) -> tuple[np.ndarray, np.ndarray, dict]:
    """Stage 4: map joints and solve rotations. Every target bone, parents first, gets a world
    rotation delta [T, 4] turning its rest aim onto the source's aim, twisted by the source bone's
    roll or a hint pair; undriven bones follow their parent.

    Returns (world [T, B, 4], driven [B] bool, aims {bone name: (start joint, aim joint)}).
    """
    target, sget, tget = job.target, job.sget, job.tget
    T, B = job.T, job.B
    world = np.tile(np.array([1.0, 0.0, 0.0, 0.0]), (T, B, 1))
    driven = np.zeros(B, dtype=bool)
    aims = {}
    joints_of = target.bone_joints()
    head_bone = {c: target.bone_names.index(b) for c, b in target.mapping.items()}
    for b in target.order:
        p = target.parents[b]
        qp = world[:, p] if p >= 0 else world[:, b].copy()
        world[:, b] = qp
        head_c, tail_c = joints_of[b]
        rule = _bone_aim(job, b, head_c, tail_c, head_bone)
        if rule is None:
            continue
        aim_c, hint = rule
        if aim_c is None:
            continue
        start = _anchor(job, joints_of, b, head_c)
        if start is None or start == aim_c:
            continue
        v_rest = tget(aim_c) - tget(start)
        v_now = sget(aim_c) - sget(start)
        if np.linalg.norm(v_rest) < 1e-9:
            continue
        q = quat_mul(quat_between(quat_rotate(qp, np.broadcast_to(v_rest, (T, 3))), v_now), qp)
        twist = _source_twist_hint(job.src_rest, job.src_frames, start, aim_c, v_rest)
        if twist is not None:
            # the source bone's own roll, carried over through the rest-aligned reference axis
            q = _twist_to_hint(q, v_now, np.broadcast_to(twist[0], (T, 3)), twist[1])
        elif hint is not None and all(tget(h) is not None and sget(h) is not None for h in hint):
            u_rest = np.broadcast_to(tget(hint[1]) - tget(hint[0]), (T, 3))
            q = _twist_to_hint(q, v_now, u_rest, sget(hint[1]) - sget(hint[0]))
        bad = ~np.isfinite(q).all(-1)
        q[bad] = qp[bad]
        world[:, b] = quat_normalize(q)
        driven[b] = True
        aims[target.bone_names[b]] = (start, aim_c)
    return world, driven, aims


def _root_track(job: _RetargetJob) -> _RootTrack:
    """Stage 5: root placement. The moved bone is the pelvis bone, else the root of the pelvis
    joints' bones; the pelvis height is the source's above its floor, scaled, and it travels
    like the source's (scaled, "keep") or stays over its rest position ("in_place")."""
    target, up, s, T = job.target, job.up, job.scale, job.T
    if "pelvis" in target.mapping:
        move_b = target.index_of("pelvis")
    else:
        parts = _resolve("pelvis", job.rest)
        b0 = target.joint(parts[0][0])[0]
        while target.parents[b0] >= 0:
            b0 = target.parents[b0]
        move_b = b0
    moved_tree = _subtree(target, move_b)
    src_pelvis = job.sget("pelvis")
    h_src = src_pelvis @ up - job.src_floor
    height = target.floor + s * h_src
    horiz_src = src_pelvis - (src_pelvis @ up)[:, None] * up
    tgt_pelvis_rest = job.tget("pelvis")
    rest_h = tgt_pelvis_rest - (tgt_pelvis_rest @ up) * up
    if not np.isfinite(src_pelvis).all(-1).any():
        raise MarionetteError("source pelvis is missing in every frame")
    first = np.nanmean(horiz_src[np.isfinite(horiz_src).all(-1)][:3], axis=0)
    if job.root == "keep":
        horiz = first + s * (horiz_src - first)
    else:
        horiz = np.broadcast_to(rest_h, (T, 3)).copy()
    pelvis_pos = _fill_nan_rows(horiz + height[:, None] * up)
    return _RootTrack(move_b=move_b, moved_tree=moved_tree, pelvis_pos=pelvis_pos, first=first,
                      horiz_src=horiz_src, rest_h=rest_h)


def _posed_heads(target: Rig, world: np.ndarray, track: _RootTrack) -> np.ndarray:
    """Heads [T, B, 3]: rest offsets rotated by parents, the moved subtree shifted so the
    target's pelvis lands on ``track.pelvis_pos``."""
    T, B = world.shape[:2]
    heads = np.zeros((T, B, 3))
    for b in target.order:
        p = target.parents[b]
        if p < 0:
            heads[:, b] = target.heads[b]
        else:
            heads[:, b] = heads[:, p] + quat_rotate(world[:, p], target.heads[b] - target.heads[p])
    pel = _get(_rig_canonical(target, world, heads), "pelvis")
    heads[:, track.moved_tree] += (track.pelvis_pos - pel)[:, None, :]
    return heads


def _refresh_inherited(target: Rig, world: np.ndarray, driven: np.ndarray, start_bones) -> None:
    """Bones that merely follow their parent must follow the corrected parent (in place)."""
    changed = set(start_bones)
    for b in target.order:
        p = target.parents[b]
        if p in changed:
            if not driven[b]:
                world[:, b] = world[:, p]
            changed.add(b)


def _scaled_source(job: _RetargetJob, track: _RootTrack) -> dict:
    """Stage 6: the source's joints [T, 3] scaled and placed as the target's root is (heights
    from the target's floor; horizontally like the root)."""
    up, s, src_floor_h = job.up, job.scale, job.src_floor
    scaled_source = {c: v - (v @ up)[:, None] * up + (job.target.floor + s * (v @ up - src_floor_h))[:, None] * up
                     for c, v in job.pos.items()}
    shift = (track.first - s * track.first) if job.root == "keep" else None
    for c, v in scaled_source.items():
        hz = v - (v @ up)[:, None] * up
        if job.root == "keep":
            scaled_source[c] = v - hz + s * hz + shift
        else:
            scaled_source[c] = v - hz + s * (hz - track.horiz_src) + track.rest_h
    return scaled_source


def _find_legs(job: _RetargetJob, feet: bool, contact_height: float, contact_speed: float) -> tuple[list, dict]:
    """Stage 7: per side, the target's thigh and shin bones and the source's foot contacts.

    Returns (legs to pin: dicts with side, thigh, shin, ankle, ball_c, c_ankle, c_ball;
    contacts {canonical foot joint: [T] bool}).
    """
    target, sget, up, fps, T = job.target, job.sget, job.up, job.fps, job.T
    contacts = {}
    legs = []
    for side in _SIDE:
        hip_c = next((c for c in (f"{side}_hip", f"smpl_{side}_hip") if target.joint(c) is not None), None)
        knee, ankle = target.joint(f"{side}_knee"), target.joint(f"{side}_ankle")
        if hip_c is None or knee is None or ankle is None or sget(f"{side}_ankle") is None:
            continue
        hip = target.joint(hip_c)
        # thigh and shin bones: joints at bone heads (most rigs) or at bone tails (Marionette armatures)
        if not hip[1] and not knee[1] and not ankle[1]:
            thigh, shin = hip[0], knee[0]
            ok = target.parents[shin] == thigh and target.parents[ankle[0]] == shin
        elif knee[1] and ankle[1]:
            thigh, shin = knee[0], ankle[0]
            ok = target.parents[shin] == thigh
        else:
            thigh = shin = -1
            ok = False
        ball_c = next((c for c in (f"{side}_foot", f"{side}_big_toe") if target.joint(c) is not None), None)
        c_ankle = detect_contacts(sget(f"{side}_ankle"), up, fps, job.src_floor, contact_height, contact_speed)
        contacts[f"{side}_ankle"] = c_ankle
        c_ball = np.zeros(T, dtype=bool)
        if ball_c and sget(ball_c) is not None:
            c_ball = detect_contacts(sget(ball_c), up, fps, job.src_floor, contact_height, contact_speed)
            contacts[ball_c] = c_ball
        if feet and ok:
            legs.append(dict(side=side, thigh=thigh, shin=shin, ankle=ankle, ball_c=ball_c, c_ankle=c_ankle,
                             c_ball=c_ball))
    return legs, contacts


def _spread(mask: np.ndarray, pin_of, dst: np.ndarray, wdst: np.ndarray, nb: int) -> None:
    """Write each contact run's pin into dst (weight 1 inside, easing to 0 over nb frames outside)."""
    T = len(mask)
    for a, b in _runs_of(mask):
        pin = pin_of(a, b)
        for t in range(max(0, a - nb), min(T, b + nb)):
            w = 1.0 if a <= t < b else (1.0 - (a - t) / (nb + 1) if t < a else 1.0 - (t - b + 1) / (nb + 1))
            if w > wdst[t]:
                dst[t] = pin(t)
                wdst[t] = w


def _own_pin(job: _RetargetJob, canon: dict, jc: str):
    """pin_of(a, b) for joint ``jc``: the target's own standing height of this joint plus the
    source's (scaled) lift above its standing height, so differing foot shapes do not sink;
    horizontally the target's mean position over the run ("keep"), or no horizontal pin
    ("in_place")."""
    up, s = job.up, job.scale
    P = canon[jc]
    src_h = job.sget(jc) @ up
    src_stand = np.nanpercentile(src_h, 5)
    tgt_stand = job.rest[jc] @ up

    def pin_of(a, b):
        hh = tgt_stand + s * (np.nanmean(src_h[a:b]) - src_stand)
        if job.root == "keep":
            hz = np.nanmean(P[a:b] - (P[a:b] @ up)[:, None] * up, axis=0)
            return lambda t: hz + hh * up
        return lambda t: P[t] - (P[t] @ up) * up + hh * up
    return pin_of


def _plan_pins(job: _RetargetJob, legs: list, canon: dict, nb: int) -> None:
    """Stage 8: the pinned points of every leg, from the uncorrected pose ``canon``. Adds to each
    leg: l1, l2 (thigh and shin lengths), goal/weight (ankle pin [T, 3] and its weight [T]),
    pin_ball/w_ball (ball pin), foot_b (the bone turning the ball), ball_ok, use_ball [T]."""
    target, rest, T = job.target, job.rest, job.T
    for leg in legs:
        side, ball_c, ankle = leg["side"], leg["ball_c"], leg["ankle"]
        leg["l1"] = np.linalg.norm(target.heads[leg["shin"]] - target.heads[leg["thigh"]])
        leg["l2"] = np.linalg.norm(rest[f"{side}_ankle"] - target.heads[leg["shin"]])
        # the ball is pinned by turning the foot bone about the ankle: the ankle's own bone when
        # joints sit at bone heads, the bone running from the ankle to the ball when they sit at tails
        ball = target.joint(ball_c) if ball_c else None
        if ball is not None and not ball[1] and not ankle[1]:
            foot_b = ankle[0]
            ball_ok = target.parents[ball[0]] == foot_b
        elif ball is not None and ball[1] and ankle[1]:
            foot_b = ball[0]
            ball_ok = target.parents[foot_b] == leg["shin"]
        else:
            foot_b, ball_ok = None, False
        goal = np.full((T, 3), np.nan)
        weight = np.zeros(T)
        pin_ball = np.full((T, 3), np.nan)
        w_ball = np.zeros(T)
        if ball_ok and leg["c_ball"].any():
            _spread(leg["c_ball"], _own_pin(job, canon, ball_c), pin_ball, w_ball, nb)
        if leg["c_ankle"].any():
            ankle_pin = _own_pin(job, canon, f"{side}_ankle")
            A0 = canon[f"{side}_ankle"]
            B0 = canon[ball_c] if ball_ok else None

            def pin_of(a, b, ankle_pin=ankle_pin, A0=A0, B0=B0, pin_ball=pin_ball, w_ball=w_ball):
                # where the ball is pinned as well, the ankle's pin sits one (rigid) foot away from the
                # ball's, as the target's own foot lies over the shared frames: the ball is the steadier
                # anchor (flat foot and toe-off), and the two pins stay reachable together
                both = np.zeros(T, dtype=bool)
                both[a:b] = w_ball[a:b] >= 1
                if B0 is None or not both.any() or job.root != "keep":
                    return ankle_pin(a, b)
                pin = np.mean(pin_ball[both] - (B0[both] - A0[both]), axis=0)
                return lambda t: pin
            _spread(leg["c_ankle"], pin_of, goal, weight, nb)
        leg.update(goal=goal, weight=weight, pin_ball=pin_ball, w_ball=w_ball, foot_b=foot_b, ball_ok=ball_ok,
                   use_ball=w_ball > weight)


def _ankle_goals(leg: dict, canon: dict) -> np.ndarray:
    """The ankle's own pin, or (whichever pin is stronger) the ankle position that keeps the pinned
    ball in place with the foot's orientation unchanged (heel lifting off)."""
    A = canon[f"{leg['side']}_ankle"]
    out = A + leg["weight"][:, None] * (np.nan_to_num(leg["goal"]) - A)
    ub = leg["use_ball"]
    if ub.any():
        out[ub] = A[ub] + leg["w_ball"][ub, None] * (leg["pin_ball"][ub] - canon[leg["ball_c"]][ub])
    return out


def _lower_pelvis(job: _RetargetJob, legs: list, track: _RootTrack, heads: np.ndarray, canon: dict,
                  nb: int) -> bool:
    """Stage 9: lower ``track.pelvis_pos`` where a pinned foot is out of the leg's reach (smoothly,
    never raise it). Returns whether it moved."""
    up, T = job.up, job.T
    drop = np.zeros(T)
    for leg in legs:
        v = _ankle_goals(leg, canon) - heads[:, leg["thigh"]]
        R = leg["l1"] + leg["l2"] - 1e-6  # the IK clamp
        bq = v @ up
        disc = bq * bq - (np.sum(v * v, -1) - R * R)
        need = np.where((np.sum(v * v, -1) > R * R) & (disc >= 0), -bq - np.sqrt(np.maximum(disc, 0)), 0.0)
        drop = np.maximum(drop, np.clip(need, 0.0, None))
    if not drop.any():
        return False
    k = nb
    wide = np.array([drop[max(0, t - k): t + k + 1].max() for t in range(T)])
    ker = np.hanning(2 * k + 3)[1:-1]
    ker /= ker.sum()
    smooth = np.convolve(np.pad(wide, k, mode="edge"), ker, mode="valid")
    track.pelvis_pos = track.pelvis_pos - np.maximum(smooth, drop)[:, None] * up
    return True


def _pin_feet(job: _RetargetJob, legs: list, track: _RootTrack, world: np.ndarray, driven: np.ndarray,
              heads: np.ndarray, canon: dict) -> np.ndarray:
    """Stage 10: two-bone IK per leg onto its ankle goals, then the foot turned toward a pinned
    ball. Updates ``world`` in place; returns the posed heads [T, B, 3]."""
    target = job.target
    for leg in legs:
        thigh, shin, side = leg["thigh"], leg["shin"], leg["side"]
        A = canon[f"{side}_ankle"]
        target_ankle = _ankle_goals(leg, canon)
        moved = np.linalg.norm(target_ankle - A, axis=-1) > 1e-9
        if not moved.any():
            continue
        H, K = heads[:, thigh], heads[:, shin]
        K2, A2 = _two_bone_ik(H, K, A, target_ankle, leg["l1"], leg["l2"])
        r1 = quat_between(K - H, K2 - H)
        r2 = quat_between(quat_rotate(r1, A - K), A2 - K2)
        r1[~moved] = (1, 0, 0, 0)
        r2[~moved] = (1, 0, 0, 0)
        world[:, thigh] = quat_normalize(quat_mul(r1, world[:, thigh]))
        world[:, shin] = quat_normalize(quat_mul(r2, quat_mul(r1, world[:, shin])))
        _refresh_inherited(target, world, driven, [thigh, shin])
        heads = _posed_heads(target, world, track)
        canon = _rig_canonical(target, world, heads)
        if leg["ball_ok"]:
            both = ~leg["use_ball"] & (leg["weight"] > 0) & (leg["w_ball"] > 0)
            if both.any():
                foot_b = leg["foot_b"]
                Ab, Bb = canon[f"{side}_ankle"][both], canon[leg["ball_c"]][both]
                want = Bb + leg["w_ball"][both, None] * (leg["pin_ball"][both] - Bb)
                r3 = quat_between(Bb - Ab, want - Ab)
                world[both, foot_b] = quat_normalize(quat_mul(r3, world[both, foot_b]))
                _refresh_inherited(target, world, driven, [foot_b])
                heads = _posed_heads(target, world, track)
                canon = _rig_canonical(target, world, heads)
    return heads


def _pose_rotations(target: Rig, world: np.ndarray) -> np.ndarray:
    """Local pose rotations [T, B, 4]: L_b = R_b^T (Q_p^-1 Q_b) R_b, sign-continuous along each
    track (Blender interpolates components)."""
    T, B = world.shape[:2]
    rest_q = matrix_to_quat(target.rest_rotations)
    rot = np.zeros((T, B, 4))
    for b in range(B):
        p = target.parents[b]
        rel = world[:, b] if p < 0 else quat_mul(quat_conj(world[:, p]), world[:, b])
        rot[:, b] = quat_normalize(quat_mul(quat_mul(quat_conj(rest_q[b]), rel), rest_q[b]))
    for t in range(1, T):
        flip = np.sum(rot[t] * rot[t - 1], -1) < 0
        rot[t, flip] *= -1
    return rot


def _assemble_result(job: _RetargetJob, track: _RootTrack, world: np.ndarray, heads: np.ndarray, contacts: dict,
                     scaled_source: dict, aims: dict) -> RetargetResult:
    """Stage 11: pose quaternions, and the location of the moved bone in its rest-local frame (its
    parent, if any, stays at rest: only bones above the pelvis are undriven ancestors)."""
    target, move_b = job.target, track.move_b
    rot = _pose_rotations(target, world)
    loc = (heads[:, move_b] - target.heads[move_b]) @ target.rest_rotations[move_b]
    return RetargetResult(bone_names=list(target.bone_names), rotations=rot, location=loc,
                          root_bone=target.bone_names[move_b], world=world, heads=heads, fps=job.fps,
                          scale=job.scale, contacts=contacts, source=scaled_source, aims=aims, rig=target)


def retarget(source, target: Rig, root: str = "keep", feet: bool = True, root_scale: float | None = None,
             contact_height: float = 0.05, contact_speed: float = 0.3, blend: float = 0.1,
             frames: slice | None = None) -> RetargetResult:
    """Retarget ``source`` (SkeletonSequence, RigMotion or CanonicalMotion) onto ``target`` (Rig).

    root:       "keep" (the pelvis travels like the source's, displacement scaled by leg length)
                or "in_place" (no horizontal travel; vertical motion kept)
    feet:       pin feet where the source's were in contact with the ground
    root_scale: override the leg-length ratio
    contact_height, contact_speed: contact detection thresholds (metres above the joint's
                standing height, metres per second); blend: seconds to ease pins in and out
    frames:     a slice of the source's frames to use
    """
    job = _prepare_source(source, target, root, frames)
    _check_drivable(job)
    job.scale = _root_scale(job, root_scale)
    world, driven, aims = _solve_rotations(job)
    track = _root_track(job)
    heads = _posed_heads(target, world, track)
    scaled_source = _scaled_source(job, track)
    nb = max(1, int(round(blend * job.fps)))
    legs, contacts = _find_legs(job, feet, contact_height, contact_speed)
    canon = _rig_canonical(target, world, heads)
    _plan_pins(job, legs, canon, nb)
    if legs and _lower_pelvis(job, legs, track, heads, canon, nb):
        heads = _posed_heads(target, world, track)
        canon = _rig_canonical(target, world, heads)
    heads = _pin_feet(job, legs, track, world, driven, heads, canon)
    return _assemble_result(job, track, world, heads, contacts, scaled_source, aims)
