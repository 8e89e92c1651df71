"""Frame-rate resampling and gap filling of motion, by time.

Rotations are interpolated with a C1 cubic on the quaternion manifold: the
cumulative-basis Hermite of Kim, Kim & Shin (1995). Between keys ``q_i`` and
``q_{i+1}`` (duration ``h``) with angular velocities ``w_i`` and ``w_{i+1}``::

    q(u) = q_i * exp(b1(u) a1) * exp(b2(u) a2) * exp(b3(u) a3)
    a1 = h w_i / 3,  a3 = h w_{i+1} / 3,  a2 = log(exp(-a1) q_i^-1 q_{i+1} exp(-a3))
    b1 = 1 - (1-u)^3,  b2 = 3u^2 - 2u^3,  b3 = u^3          (cumulative Bernstein)

It passes through every key, has continuous angular velocity, and reduces to the
ordinary cubic Hermite when all rotations share one axis. Angular velocities at
the keys come from the parabola through three neighbouring keys (Bessel
tangents), so unevenly spaced keys are handled. Positions (the root) use the
same Hermite cubic with Bessel tangents.

A skeleton given as joint positions is resampled as a root trajectory plus one
world-space rotation track per bone (the minimal rotation carrying the bone's
first direction to its current one, accumulated frame to frame so the track has
no twist and no flips); joints are rebuilt by forward kinematics, so bones keep
their lengths exactly: by default each bone's length moves linearly between its
lengths at the two neighbouring input frames (a rigid input stays exactly rigid,
every input frame is reproduced exactly, and nothing shrinks between frames the
way linearly interpolated positions do); ``lengths="median"`` makes every bone
one constant length (a clean-up for noisy triangulations).

Quaternions are ``(w, x, y, z)`` (Blender's order), unit length; ``log``/``exp``
map to and from rotation vectors (axis times angle, radians).

Missing data is NaN. Keys are per bone (per track); a gap between two valid keys
is bridged when its missing time is at most ``max_gap`` seconds, otherwise the
output is NaN there. Outside the first/last valid key the output is NaN, or the
end value with ``extrapolate="hold"``.
"""

from __future__ import annotations

import numpy as np

from engine import MarionetteError
from engine.geometry.rotations import (quat_between, quat_conj, quat_continuous, quat_cumprod, quat_exp,  # noqa: F401
                                       quat_log, quat_mul, quat_normalize, quat_rotate)
from engine.io.skeleton_file import SkeletonSequence
from engine.validate import MAX_FRAMES

__all__ = [
    "resample_rotations", "resample_positions", "resample_animation", "resample_skeleton", "fill_gaps", "skeleton_times",
    "bone_directions", "bone_lengths", "skeleton_from_directions", "bone_length_drift",
]

_EPS = 1e-12


# ----------------------------------------------------------------------------- key handling

def _check_times(times, name: str) -> np.ndarray:
    t = np.asarray(times, dtype=np.float64)
    if t.ndim != 1:
        raise MarionetteError(f"{name}: expected a 1-D array of times in seconds, got shape {list(t.shape)}")
    if not np.all(np.isfinite(t)):
        raise MarionetteError(f"{name}: times must be finite numbers")
    return t


def _runs(tk: np.ndarray, max_gap: float | None, step: float) -> list[tuple[int, int]]:
    """Split sorted key times into runs [start, stop) whose consecutive gaps may be bridged.

    A gap is bridged when the missing time between two keys (their distance minus
    one nominal frame step) is at most ``max_gap``.
    """
    if len(tk) == 0:
        return []
    if max_gap is None:
        return [(0, len(tk))]
    breaks = np.nonzero(np.diff(tk) - step > max_gap + 1e-9)[0]
    starts = np.concatenate([[0], breaks + 1])
    stops = np.concatenate([breaks + 1, [len(tk)]])
    return list(zip(starts.tolist(), stops.tolist()))


def _bessel_tangents(h: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Tangents at n keys from n-1 segment durations ``h`` [n-1] and secant slopes ``s`` [n-1, D].

    Interior: derivative of the parabola through three neighbouring keys. Ends:
    the same parabola's derivative at the end key (secant when only two keys).
    """
    n = len(h) + 1
    m = np.zeros((n,) + s.shape[1:])
    if n == 2:
        m[0] = m[1] = s[0]
        return m
    h0, h1 = h[:-1, None], h[1:, None]
    m[1:-1] = (h1 * s[:-1] + h0 * s[1:]) / (h0 + h1)
    m[0] = ((2 * h[0] + h[1]) * s[0] - h[0] * s[1]) / (h[0] + h[1])
    m[-1] = ((2 * h[-1] + h[-2]) * s[-1] - h[-1] * s[-2]) / (h[-1] + h[-2])
    return m


def _locate(tk: np.ndarray, runs, t_out: np.ndarray, extrapolate: str):
    """For each output time: segment index into keys, local parameter u, and a validity mask.

    Times on a key return that key exactly (segment ending there with u=1 or starting with u=0).
    """
    seg = np.full(len(t_out), -1, dtype=np.int64)
    u = np.zeros(len(t_out))
    valid = np.zeros(len(t_out), dtype=bool)
    hold = np.full(len(t_out), -1, dtype=np.int64)  # key index to copy (single-key runs, holds)
    tol = 1e-9
    for a, b in runs:
        lo, hi = tk[a], tk[b - 1]
        inside = (t_out >= lo - tol) & (t_out <= hi + tol)
        if b - a == 1:
            hold[inside] = a
            valid[inside] = True
            continue
        idx = np.searchsorted(tk[a:b], t_out[inside], side="right") - 1
        idx = np.clip(idx, 0, b - a - 2)
        seg[inside] = a + idx
        u[inside] = np.clip((t_out[inside] - tk[a + idx]) / (tk[a + idx + 1] - tk[a + idx]), 0.0, 1.0)
        valid[inside] = True
    if extrapolate == "hold" and len(tk):
        before = t_out < tk[0] - tol
        after = t_out > tk[-1] + tol
        hold[before], valid[before] = 0, True
        hold[after], valid[after] = len(tk) - 1, True
    elif extrapolate != "nan":
        raise MarionetteError(f"extrapolate: expected 'nan' or 'hold', got {extrapolate!r}")
    return seg, u, valid, hold


def _nominal_step(t: np.ndarray) -> float:
    d = np.diff(t)
    d = d[d > 0]
    return float(np.median(d)) if len(d) else 0.0


# ----------------------------------------------------------------------------- public interpolators

def resample_rotations(quats, times_in, times_out, max_gap: float | None = None,
                       extrapolate: str = "nan") -> np.ndarray:
    """Resample rotation tracks with a C1 quaternion cubic.

    quats:     [T, B, 4] (or [T, 4]) unit quaternions (w, x, y, z); NaN rows are missing keys
    times_in:  [T] strictly increasing key times (seconds)
    times_out: [T'] output times (seconds), any order, may be denser or sparser
    max_gap:   longest missing stretch (seconds) to bridge; None bridges every gap
    returns    [T', B, 4] (or [T', 4]) unit quaternions, sign-continuous along time
    """
    q = np.asarray(quats, dtype=np.float64)
    single = q.ndim == 2
    if single:
        q = q[:, None, :]
    if q.ndim != 3 or q.shape[-1] != 4:
        raise MarionetteError(f"quats: expected shape [T, B, 4] (w, x, y, z), got {list(np.shape(quats))}")
    t_in = _check_times(times_in, "times_in")
    t_out = _check_times(times_out, "times_out")
    if len(t_in) != q.shape[0]:
        raise MarionetteError(f"times_in has {len(t_in)} entries but quats has {q.shape[0]} frames")
    if len(t_in) > 1 and np.any(np.diff(t_in) <= 0):
        raise MarionetteError("times_in: key times must be strictly increasing")
    step = _nominal_step(t_in)
    out = np.full((len(t_out), q.shape[1], 4), np.nan)
    for b in range(q.shape[1]):
        ok = np.all(np.isfinite(q[:, b]), axis=-1)
        norms = np.linalg.norm(np.where(ok[:, None], q[:, b], 0.0), axis=-1)
        ok &= norms > 1e-6
        if not ok.any():
            continue
        tk = t_in[ok]
        qk = quat_continuous(q[ok, b] / norms[ok, None])
        runs = _runs(tk, max_gap, step)
        # angular velocities (body frame) at each key, per run
        omega = np.zeros((len(tk), 3))
        for a, e in runs:
            if e - a < 2:
                continue
            h = np.diff(tk[a:e])
            rel = quat_log(quat_mul(quat_conj(qk[a:e - 1]), qk[a + 1:e]))
            omega[a:e] = _bessel_tangents(h, rel / h[:, None])
        seg, u, valid, hold = _locate(tk, runs, t_out, extrapolate)
        res = np.full((len(t_out), 4), np.nan)
        held = valid & (hold >= 0)
        res[held] = qk[hold[held]]
        sel = valid & (hold < 0)
        if sel.any():
            i = seg[sel]
            uu = u[sel][:, None]
            h = (tk[i + 1] - tk[i])[:, None]
            q0, q3 = qk[i], qk[i + 1]
            a1 = h * omega[i] / 3.0
            a3 = h * omega[i + 1] / 3.0
            mid = quat_mul(quat_mul(quat_exp(-a1), quat_mul(quat_conj(q0), q3)), quat_exp(-a3))
            a2 = quat_log(mid)
            b1 = 1.0 - (1.0 - uu) ** 3
            b2 = 3.0 * uu ** 2 - 2.0 * uu ** 3
            b3 = uu ** 3
            r = quat_mul(q0, quat_mul(quat_exp(b1 * a1), quat_mul(quat_exp(b2 * a2), quat_exp(b3 * a3))))
            # land exactly on keys (no round-off) where the output time is a key time
            r = np.where(uu <= 0.0, q0, np.where(uu >= 1.0, q3, r))
            res[sel] = quat_normalize(r)
        out[:, b] = res
    # keep the result sign-continuous in output order for callers that key it into F-curves
    order = np.argsort(t_out, kind="stable")
    for b in range(out.shape[1]):
        ob = out[order, b]
        good = np.all(np.isfinite(ob), axis=-1)
        if good.sum() > 1:
            ob[good] = quat_continuous(ob[good])
            out[order, b] = ob
    return out[:, 0] if single else out


def resample_positions(values, times_in, times_out, max_gap: float | None = None,
                       extrapolate: str = "nan") -> np.ndarray:
    """Resample position tracks with a C1 cubic Hermite (Bessel tangents), per track.

    values: [T, ...] (e.g. [T, 3] root or [T, J, 3]); NaN entries are missing keys (per
    last-axis vector); returns [T', ...].
    """
    v = np.asarray(values, dtype=np.float64)
    t_in = _check_times(times_in, "times_in")
    t_out = _check_times(times_out, "times_out")
    if v.ndim < 2 or v.shape[0] != len(t_in):
        raise MarionetteError(f"values: expected shape [T={len(t_in)}, ..., D], got {list(v.shape)}")
    if len(t_in) > 1 and np.any(np.diff(t_in) <= 0):
        raise MarionetteError("times_in: key times must be strictly increasing")
    shape = v.shape
    flat = v.reshape(shape[0], -1, shape[-1])
    step = _nominal_step(t_in)
    out = np.full((len(t_out),) + flat.shape[1:], np.nan)
    for k in range(flat.shape[1]):
        ok = np.all(np.isfinite(flat[:, k]), axis=-1)
        if not ok.any():
            continue
        tk, xk = t_in[ok], flat[ok, k]
        runs = _runs(tk, max_gap, step)
        m = np.zeros_like(xk)
        for a, e in runs:
            if e - a >= 2:
                h = np.diff(tk[a:e])
                m[a:e] = _bessel_tangents(h, np.diff(xk[a:e], axis=0) / h[:, None])
        seg, u, valid, hold = _locate(tk, runs, t_out, extrapolate)
        held = valid & (hold >= 0)
        out[held, k] = xk[hold[held]]
        sel = valid & (hold < 0)
        if sel.any():
            i = seg[sel]
            uu = u[sel][:, None]
            h = (tk[i + 1] - tk[i])[:, None]
            h00 = 2 * uu ** 3 - 3 * uu ** 2 + 1
            h10 = uu ** 3 - 2 * uu ** 2 + uu
            h01 = -2 * uu ** 3 + 3 * uu ** 2
            h11 = uu ** 3 - uu ** 2
            out[sel, k] = h00 * xk[i] + h10 * h * m[i] + h01 * xk[i + 1] + h11 * h * m[i + 1]
    return out.reshape((len(t_out),) + shape[1:])


# ----------------------------------------------------------------------------- skeletons

def resample_animation(quats: np.ndarray, root_location: np.ndarray, times: np.ndarray,
                       target_fps: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Put keyed rotations [T, B, 4] and root locations [T, 3] sampled at ``times`` (seconds from
    the first sample) onto frames of ``target_fps``; returns (quats, locations, frame offsets).

    When every sample already falls on a frame (e.g. same rate, or dropped rows of a
    ``frame_indices`` file) the keys are kept as they are, on their frames. Otherwise the
    motion is resampled by time with this module (C1 quaternion cubic through the
    keys, Hermite for the root) every 1/target_fps seconds; a missing key is never bridged,
    so gaps in the source stay gaps.
    """
    if not (np.isfinite(target_fps) and target_fps > 0):
        raise MarionetteError(f"target frame rate must be positive, got {target_fps}")
    t = np.asarray(times, dtype=np.float64)
    if len(t) != quats.shape[0] or len(t) != root_location.shape[0]:
        raise MarionetteError(f"{len(t)} times for {quats.shape[0]} rotation and {root_location.shape[0]} location keys")
    f = t * target_fps
    frames = np.round(f)
    if np.all(np.abs(f - frames) < 1e-6) and (len(frames) < 2 or np.all(np.diff(frames) > 0)):
        return quats, root_location, frames.astype(np.int64)
    count = int(np.floor(t[-1] * target_fps + 1e-6)) + 1
    _check_output_frames(count, float(t[-1]), target_fps)
    t_out = np.arange(count) / target_fps
    q = resample_rotations(quats, t, t_out, max_gap=0.0)
    loc = resample_positions(root_location, t, t_out, max_gap=0.0)
    return q, loc, np.arange(len(t_out), dtype=np.int64)


def skeleton_times(seq: SkeletonSequence) -> np.ndarray:
    """Time in seconds of every row: ``frame_indices / fps`` when present, else ``row / fps``."""
    fi = seq.extras.get("frame_indices")
    if fi is not None:
        fi = np.asarray(fi, dtype=np.float64).reshape(-1)
        if len(fi) == seq.num_frames and np.all(np.isfinite(fi)) and np.all(np.diff(fi) > 0):
            return fi / float(seq.fps)
    return np.arange(seq.num_frames, dtype=np.float64) / float(seq.fps)


def bone_directions(joints: np.ndarray, parents) -> np.ndarray:
    """Unit direction parent->joint [T, J, 3] for every non-root joint (NaN for the root / missing)."""
    joints = np.asarray(joints, dtype=np.float64)
    parents = np.asarray(parents)
    d = np.full(joints.shape, np.nan)
    child = np.nonzero(parents >= 0)[0]
    vec = joints[:, child] - joints[:, parents[child]]
    n = np.linalg.norm(vec, axis=-1, keepdims=True)
    d[:, child] = np.where(n > 1e-9, vec / np.maximum(n, 1e-300), np.nan)
    return d


def bone_lengths(joints: np.ndarray, parents, reducer=np.nanmedian) -> np.ndarray:
    """Length of the bone parent->joint [J] (median over frames; 0 for the root, NaN if never seen)."""
    joints = np.asarray(joints, dtype=np.float64)
    parents = np.asarray(parents)
    lengths = np.zeros(len(parents))
    for j, p in enumerate(parents):
        if p < 0:
            continue
        n = np.linalg.norm(joints[:, j] - joints[:, p], axis=-1)
        n = n[np.isfinite(n)]
        lengths[j] = reducer(n) if len(n) else np.nan
    return lengths


def bone_length_drift(joints: np.ndarray, parents, reference: np.ndarray | None = None) -> float:
    """Mean absolute deviation (metres) of every bone's length from ``reference`` (default its median)."""
    joints = np.asarray(joints, dtype=np.float64)
    parents = np.asarray(parents)
    ref = bone_lengths(joints, parents) if reference is None else np.asarray(reference, dtype=np.float64)
    devs = []
    for j, p in enumerate(parents):
        if p < 0 or not np.isfinite(ref[j]):
            continue
        n = np.linalg.norm(joints[:, j] - joints[:, p], axis=-1)
        devs.append(np.abs(n[np.isfinite(n)] - ref[j]))
    devs = np.concatenate(devs) if devs else np.zeros(0)
    return float(devs.mean()) if len(devs) else 0.0


def skeleton_from_directions(root: np.ndarray, directions: np.ndarray, lengths: np.ndarray, parents,
                             order=None) -> np.ndarray:
    """Forward kinematics from a root track [T, 3], unit bone directions [T, J, 3] and lengths [J] or [T, J]."""
    parents = list(parents)
    lengths = np.asarray(lengths, dtype=np.float64)
    if lengths.ndim == 1:
        lengths = np.broadcast_to(lengths, directions.shape[:2])
    T = root.shape[0]
    J = len(parents)
    out = np.full((T, J, 3), np.nan)
    if order is None:
        order, frontier = [], [parents.index(-1)]
        while frontier:
            j = frontier.pop(0)
            order.append(j)
            frontier.extend(c for c, p in enumerate(parents) if p == j)
    for j in order:
        p = parents[j]
        if p < 0:
            out[:, j] = root
        else:
            out[:, j] = out[:, p] + lengths[:, j, None] * directions[:, j]
    return out


def _length_tracks(joints: np.ndarray, parents, t_in: np.ndarray, t_out: np.ndarray) -> np.ndarray:
    """[T', J] bone lengths linearly interpolated in time between the frames where the bone is seen."""
    out = np.zeros((len(t_out), len(parents)))
    for j, p in enumerate(parents):
        if p < 0:
            continue
        n = np.linalg.norm(joints[:, j] - joints[:, p], axis=-1)
        ok = np.isfinite(n)
        out[:, j] = np.interp(t_out, t_in[ok], n[ok]) if ok.any() else np.nan
    return out


def _lengths_for(lengths, joints, parents, t_in, t_out, num_joints) -> np.ndarray:
    if isinstance(lengths, str):
        if lengths == "keys":
            return _length_tracks(joints, parents, t_in, t_out)
        if lengths == "median":
            return np.broadcast_to(bone_lengths(joints, parents), (len(t_out), num_joints))
        raise MarionetteError(f"lengths: expected 'keys', 'median' or an array of {num_joints} lengths, got {lengths!r}")
    lengths = np.asarray(lengths, dtype=np.float64)
    if lengths.shape != (num_joints,):
        raise MarionetteError(f"lengths: expected shape [{num_joints}], got {list(lengths.shape)}")
    return np.broadcast_to(lengths, (len(t_out), num_joints))


def _direction_tracks(dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World rotation track per joint's bone: q_t applied to ref gives the direction at t.

    Returns (quats [T, J, 4] NaN where missing, refs [J, 3]). Consecutive valid
    directions are linked by their minimal rotation, so the track neither twists
    nor jumps (a fixed reference would flip near its antipode).
    """
    T, J, _ = dirs.shape
    ok = np.all(np.isfinite(dirs), axis=-1)  # [T, J]
    # hold the last valid direction through gaps (and the first one before it), so the
    # step between two valid frames is the rotation between them and gaps add identity steps
    idx = np.where(ok, np.arange(T)[:, None], -1)
    last = np.maximum.accumulate(idx, axis=0)
    first = np.argmax(ok, axis=0)
    last = np.where(last < 0, first[None, :], last)
    held = np.take_along_axis(dirs, last[..., None], axis=0)  # [T, J, 3]
    held = np.where(ok.any(0)[None, :, None], held, np.array([0.0, 0.0, 1.0]))
    steps = np.empty((T, J, 4))
    steps[0] = (1.0, 0.0, 0.0, 0.0)
    if T > 1:
        steps[1:] = quat_between(held[:-1].reshape(-1, 3), held[1:].reshape(-1, 3)).reshape(T - 1, J, 4)
    quats = quat_cumprod(steps)
    quats[~ok] = np.nan
    return quats, held[0]


def _check_fps(fps) -> float:
    try:
        fps = float(fps)
    except (TypeError, ValueError):
        raise MarionetteError(f"fps: expected a positive number, got {fps!r}") from None
    if not (np.isfinite(fps) and fps > 0):
        raise MarionetteError(f"fps: expected a positive number, got {fps}")
    return fps


def _check_output_frames(count: int, seconds: float, fps: float) -> None:
    """Refuse a resampling that would produce more than MAX_FRAMES frames (before allocating them)."""
    if count > MAX_FRAMES:
        raise MarionetteError(f"resampling {seconds:g} s at {fps:g} fps would make {count} frames, more than "
                              f"{MAX_FRAMES}; choose a lower frame rate")


def resample_skeleton(seq: SkeletonSequence, fps: float, max_gap: float | None = 0.5,
                      lengths="keys", times_out: np.ndarray | None = None) -> SkeletonSequence:
    """Resample a skeleton sequence to ``fps`` (up or down), filling gaps up to ``max_gap`` seconds.

    The root joint follows a cubic spline; every bone's world direction follows a
    quaternion cubic; joints are rebuilt by forward kinematics with the bone lengths
    ``lengths``: ``"keys"`` (default: each bone's length moves linearly between its
    lengths at the neighbouring input frames, so rigid input stays exactly rigid),
    ``"median"`` (one constant length per bone) or an array [J]. Output rows lie on
    the grid ``k / fps`` within the input's time span (``times_out`` overrides the
    grid). A joint cut off from the root (a parent never seen, or a gap too long in a
    bone above it) follows its own position spline where it can be bridged, and its
    children hang from it again; it is NaN where it cannot.
    """
    fps = _check_fps(fps)
    if max_gap is not None and not (np.isfinite(max_gap) and max_gap >= 0):
        raise MarionetteError(f"max_gap: expected seconds >= 0 (or None for any gap), got {max_gap}")
    js = seq.joint_set
    parents = np.asarray(js.parents)
    t_in = skeleton_times(seq)
    joints = seq.joints.astype(np.float64)
    if not np.isfinite(joints[:, js.root]).any():
        raise MarionetteError(f"joints: the root joint {js.names[js.root]} is missing in every frame; "
                              "nothing to resample")
    from_index = "frame_indices" in seq.extras and np.array_equal(skeleton_times(seq) * seq.fps,
                                                                  np.asarray(seq.extras["frame_indices"], float))
    if times_out is None:
        k0 = int(np.ceil(t_in[0] * fps - 1e-6))
        k1 = int(np.floor(t_in[-1] * fps + 1e-6))
        _check_output_frames(max(k1, k0) - k0 + 1, t_in[-1] - t_in[0], fps)
        frames_out = np.arange(k0, max(k1, k0) + 1)
        times_out = frames_out / fps
    else:
        times_out = _check_times(times_out, "times_out")
        frames_out = None

    lengths = _lengths_for(lengths, joints, parents, t_in, times_out, js.num_joints)
    root = resample_positions(joints[:, js.root], t_in, times_out, max_gap=max_gap)
    dirs = bone_directions(joints, parents)
    tracks, refs = _direction_tracks(dirs)
    tracks_out = resample_rotations(tracks, t_in, times_out, max_gap=max_gap)
    dirs_out = quat_rotate(tracks_out, refs[None])
    out = skeleton_from_directions(root, dirs_out, lengths, parents, js.topological_order())
    lost = ~np.isfinite(out).all(-1)
    if lost.any():
        # a joint cut off from the root (its parent, or the bone to it, never bridged) that is
        # itself observed follows its own position spline, and its children hang from it again
        pos = resample_positions(joints, t_in, times_out, max_gap=max_gap)
        for j in js.topological_order():
            p = parents[j]
            if p >= 0:
                redo = ~np.isfinite(out[:, j]).all(-1) & np.isfinite(out[:, p]).all(-1) & np.isfinite(dirs_out[:, j]).all(-1)
                out[redo, j] = out[redo, p] + lengths[redo, j, None] * dirs_out[redo, j]
            gone = ~np.isfinite(out[:, j]).all(-1)
            out[gone, j] = pos[gone, j]

    # confidence: linear between the bracketing valid keys, 0 where no output
    conf_in = np.where(seq.missing, np.nan, seq.confidence.astype(np.float64))
    conf = np.zeros(out.shape[:2])
    for j in range(js.num_joints):
        ok = np.isfinite(conf_in[:, j])
        if ok.any():
            conf[:, j] = np.interp(times_out, t_in[ok], conf_in[ok, j])
    conf = np.where(np.isfinite(out).all(-1), conf, 0.0)

    extras = {k: v for k, v in seq.extras.items()
              if not (np.ndim(v) >= 1 and np.shape(v)[0] == seq.num_frames)}  # per-row extras no longer apply
    if from_index and frames_out is not None:
        extras["frame_indices"] = frames_out.astype(np.int64)
    return SkeletonSequence(joints=out.astype(np.float32), joint_set=js, fps=fps, confidence=conf,
                            up_axis=seq.up_axis, extras=extras)


def fill_gaps(seq: SkeletonSequence, max_gap: float | None = 0.5, lengths="keys") -> SkeletonSequence:
    """Fill missing joints of a skeleton sequence in place of time, keeping every observed joint as is.

    A missing joint whose bone direction can be bridged (gap of at most ``max_gap``
    seconds) is placed at its parent plus the bone's length (``"keys"``: interpolated
    between the frames around the gap; ``"median"``; or an array [J]) along the
    quaternion-spline direction; a missing root
    follows the root spline. Filled joints get the lower confidence of the keys
    around them. Joints that cannot be bridged stay NaN.
    """
    if max_gap is not None and not (np.isfinite(max_gap) and max_gap >= 0):
        raise MarionetteError(f"max_gap: expected seconds >= 0 (or None for any gap), got {max_gap}")
    js = seq.joint_set
    parents = np.asarray(js.parents)
    t = skeleton_times(seq)
    joints = seq.joints.astype(np.float64)
    missing = ~np.isfinite(joints).all(-1)
    if not missing.any():
        return SkeletonSequence(joints=seq.joints.copy(), joint_set=js, fps=seq.fps,
                                confidence=seq.confidence.copy(), up_axis=seq.up_axis, extras=dict(seq.extras))
    lengths = _lengths_for(lengths, joints, parents, t, t, js.num_joints)
    root = resample_positions(joints[:, js.root], t, t, max_gap=max_gap)
    dirs = bone_directions(joints, parents)
    tracks, refs = _direction_tracks(dirs)
    dirs_f = quat_rotate(resample_rotations(tracks, t, t, max_gap=max_gap), refs[None])
    out = joints.copy()
    pos = None
    for j in js.topological_order():
        p = parents[j]
        need = missing[:, j]
        if p < 0:
            out[need, j] = root[need]
        else:
            out[need, j] = out[need, p] + lengths[need, j, None] * dirs_f[need, j]
        gone = need & ~np.isfinite(out[:, j]).all(-1)
        if gone.any():
            # no bone to hang it from (parent never seen there): its own position spline
            if pos is None:
                pos = resample_positions(joints, t, t, max_gap=max_gap)
            out[gone, j] = pos[gone, j]
    conf = seq.confidence.astype(np.float64).copy()
    filled = missing & np.isfinite(out).all(-1)
    for j in range(js.num_joints):
        idx = np.nonzero(filled[:, j])[0]
        if len(idx) == 0:
            continue
        obs = np.nonzero(~missing[:, j])[0]
        before = np.searchsorted(obs, idx) - 1
        after = np.minimum(before + 1, len(obs) - 1)
        lo = conf[obs[np.maximum(before, 0)], j]
        hi = conf[obs[after], j]
        conf[idx, j] = np.minimum(lo, hi) if len(obs) else 0.5
    return SkeletonSequence(joints=out.astype(np.float32), joint_set=js, fps=seq.fps, confidence=conf,
                            up_axis=seq.up_axis, extras=dict(seq.extras))
