"""Temporal clean-up of joint trajectories: short-gap filling and zero-phase Butterworth.

Both work on arrays [T, ...] (time first) with NaN for missing samples and never
invent data across long gaps: a gap longer than ``max_gap`` frames stays NaN, and
the low-pass filter runs separately on every run of consecutive valid samples.
"""

from __future__ import annotations

import numpy as np

from engine import MarionetteError


def _runs(valid: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of every run of True in a 1D bool array."""
    v = np.concatenate([[False], valid, [False]]).astype(np.int8)
    d = np.diff(v)
    return list(zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1)))


def fill_gaps(x: np.ndarray, max_gap: int = 10, kind: str = "cubic") -> tuple[np.ndarray, np.ndarray]:
    """Fill interior gaps of at most ``max_gap`` frames in x [T, ...] (NaN = missing).

    kind: "linear" or "cubic" (a natural cubic spline through the valid samples of each
    series; needs at least 4 of them, else linear). Leading/trailing gaps are not
    extrapolated. Returns (filled copy, mask [T, ...] of the filled samples). A sample
    counts as missing if any NaN is in its last axis, so x, y, z are filled together.
    """
    if kind not in ("linear", "cubic"):
        raise MarionetteError(f"gap filling: kind must be 'linear' or 'cubic', got {kind!r}")
    if max_gap < 0:
        raise MarionetteError(f"gap filling: max_gap must be >= 0, got {max_gap}")
    x = np.array(x, dtype=np.float64, copy=True)
    T = x.shape[0]
    flat = x.reshape(T, -1, x.shape[-1])  # [T, S, D]
    filled = np.zeros(flat.shape[:2], dtype=bool)
    if max_gap == 0 or T < 3:
        return x, filled.reshape(x.shape[:-1])
    frames = np.arange(T, dtype=np.float64)
    for s in range(flat.shape[1]):
        valid = np.isfinite(flat[:, s]).all(-1)
        if valid.all() or valid.sum() < 2:
            continue
        todo = np.zeros(T, dtype=bool)
        for a, b in _runs(~valid):
            if a > 0 and b < T and b - a <= max_gap:
                todo[a:b] = True
        if not todo.any():
            continue
        tv = frames[valid]
        if kind == "cubic" and valid.sum() >= 4:
            from scipy.interpolate import CubicSpline

            flat[todo, s] = CubicSpline(tv, flat[valid, s], axis=0, bc_type="natural")(frames[todo])
        else:
            for d in range(flat.shape[2]):
                flat[todo, s, d] = np.interp(frames[todo], tv, flat[valid, s, d])
        filled[todo, s] = True
    return flat.reshape(x.shape), filled.reshape(x.shape[:-1])


def butterworth(x: np.ndarray, fps: float, cutoff: float, order: int = 4) -> np.ndarray:
    """Zero-phase low-pass (``scipy.signal.filtfilt``) of x [T, ...] along time.

    Runs of valid samples shorter than the filter's padding are left unfiltered
    (too short to filter without edge artefacts); NaNs stay NaN.
    """
    from scipy.signal import butter, filtfilt

    if not (fps > 0):
        raise MarionetteError(f"filter: fps must be positive, got {fps}")
    if not (0 < cutoff < fps / 2):
        raise MarionetteError(f"filter: cutoff {cutoff} Hz must be between 0 and the Nyquist frequency {fps / 2} Hz")
    b, a = butter(order, cutoff / (fps / 2))
    padlen = 3 * max(len(a), len(b))
    x = np.array(x, dtype=np.float64, copy=True)
    T = x.shape[0]
    flat = x.reshape(T, -1)
    valid = np.isfinite(flat)
    # columns with the same validity pattern are filtered together (usually all of them)
    patterns: dict[bytes, list[int]] = {}
    for col in range(flat.shape[1]):
        patterns.setdefault(valid[:, col].tobytes(), []).append(col)
    for cols in patterns.values():
        for a0, b0 in _runs(valid[:, cols[0]]):
            if b0 - a0 > padlen:
                flat[a0:b0, cols] = filtfilt(b, a, flat[a0:b0, cols], axis=0)
    return flat.reshape(x.shape)
