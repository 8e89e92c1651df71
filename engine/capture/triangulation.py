"""Batched, confidence-weighted multi-view triangulation with outlier-view rejection.

Everything runs on all frames and joints at once: points are flattened to N = T*J
rows and solved as one batch of small linear systems (no Python loop per frame).

Method
------
1. Pixels are undistorted to normalised image coordinates (x/z, y/z) per camera
   (fixed-point iteration to 1e-4 px).
2. DLT: view c with weight w_c (its detector confidence) contributes the rows
   ``w_c (x P3 - P1)`` and ``w_c (y P3 - P2)`` with ``P = [R | t]``. Their normal
   matrix is linear in (x^2 + y^2, x, y, 1), so every camera's 4x4 block for all
   points is one small matrix product ``[N, 4] @ [4, 9]`` (the 9 entries a solve
   needs). The point is the minimiser of ``[X;1]^T M [X;1]`` (the DLT system with the
   homogeneous coordinate fixed to 1), solved in closed form for all points at once.
3. Reprojection error per view: pixel distance between detection and projection,
   measured in undistorted pixels (the detection after undistortion vs the pinhole
   projection); with mild lens distortion this equals the distorted-image error to
   within a few percent.
4. Bad views (as Pose2Sim does): while a point's mean reprojection error over its
   views exceeds ``reproj_threshold`` and it has more than ``min_views`` views, every
   leave-one-camera-out solution is formed (subtracting that camera's block from the
   sum) and the one with the lowest mean error is kept. A point still above the
   threshold with ``min_views`` views left is marked missing (NaN) and counted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from engine import MarionetteError
from engine.geometry.camera import Camera, undistort_normalized

_NUMBA_MIN_POINTS = 200_000  # frames x joints from which backend="auto" uses the numba kernel
_BLOCK_BYTES = 64 * 2**20  # bound on the per-camera normal-matrix blocks of one batch
# entries of the symmetric 4x4 normal matrix a solve needs: A (upper triangle) and b
_ENTRIES = [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2), (0, 3), (1, 3), (2, 3)]


@dataclass
class TriangulationResult:
    points: np.ndarray              # [T, J, 3] metres, NaN where missing
    reprojection_error: np.ndarray  # [T, J] mean pixel error over the views used, NaN where missing
    views_used: np.ndarray          # [T, J] int32 number of cameras used
    used: np.ndarray                # [C, T, J] bool: camera c contributed
    confidence: np.ndarray          # [T, J] mean detector confidence of the views used, 0 where missing
    stats: dict = field(default_factory=dict)

    @property
    def missing(self) -> np.ndarray:
        return ~np.isfinite(self.points).all(-1)


def _check_inputs(keypoints: np.ndarray, cameras: list[Camera]) -> np.ndarray:
    kp = np.asarray(keypoints, dtype=np.float64)
    if kp.ndim != 4 or kp.shape[-1] != 3:
        raise MarionetteError(f"keypoints: expected shape [C, T, J, 3] (x, y, confidence), got {list(kp.shape)}")
    if kp.shape[0] != len(cameras):
        raise MarionetteError(f"keypoints have {kp.shape[0]} cameras but {len(cameras)} cameras were given")
    if len(cameras) < 2:
        raise MarionetteError(f"triangulation needs at least 2 cameras, got {len(cameras)}")
    return kp


def normalized_observations(keypoints: np.ndarray, cameras: list[Camera], min_confidence: float = 0.0,
                            undistort: bool = True, tol_px: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
    """Undistorted normalised coordinates [C, ..., 2] and weights [C, ...] (0 = unusable)."""
    kp = np.asarray(keypoints, dtype=np.float64)
    conf = kp[..., 2]
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(kp).all(-1) & (conf > min_confidence)
    xy = np.empty(kp.shape[:-1] + (2,))
    for c, cam in enumerate(cameras):
        u = np.where(valid[c], kp[c, ..., 0], cam.cx)  # unusable points sit at the centre: cheap, finite
        v = np.where(valid[c], kp[c, ..., 1], cam.cy)
        yy = (v - cam.cy) * (1.0 / cam.fy)
        xx = (u - cam.cx - cam.K[0, 1] * yy) * (1.0 / cam.fx)
        if undistort and cam.has_distortion:
            n = undistort_normalized(np.stack([xx, yy], axis=-1), cam.dist, iterations=30,
                                     tol=tol_px / max(cam.fx, cam.fy))
            xy[c] = n
        else:
            xy[c, ..., 0], xy[c, ..., 1] = xx, yy
    weights = np.where(valid, conf, 0.0)
    bad = ~np.isfinite(xy).all(-1)
    weights[bad] = 0.0
    xy[bad] = 0.0
    return xy, weights


def _camera_blocks(Rt: np.ndarray) -> np.ndarray:
    """[C, 9, 4]: maps (x^2 + y^2, x, y, 1) of a view to the 9 needed normal-matrix entries."""
    P1, P2, P3 = Rt[:, 0], Rt[:, 1], Rt[:, 2]
    outer = lambda a, b: np.einsum("ci,cj->cij", a, b)  # noqa: E731
    terms = np.stack([outer(P3, P3), -(outer(P3, P1) + outer(P1, P3)), -(outer(P3, P2) + outer(P2, P3)),
                      outer(P1, P1) + outer(P2, P2)], axis=1)  # [C, 4, 4, 4]
    rows, cols = zip(*_ENTRIES)
    return np.ascontiguousarray(terms[:, :, list(rows), list(cols)].transpose(0, 2, 1))


def _normal_blocks(xy: np.ndarray, weights: np.ndarray, G: np.ndarray) -> np.ndarray:
    """Per-camera normal-matrix entries [C, 9, N] of weighted views (entries first: contiguous rows)."""
    C, N = weights.shape
    out = np.empty((C, 9, N))
    feats = np.empty((4, N))
    for c in range(C):  # one BLAS product per camera
        w2 = weights[c] * weights[c]
        x, y = xy[c, :, 0], xy[c, :, 1]
        np.multiply(w2, x, out=feats[1])
        np.multiply(w2, y, out=feats[2])
        feats[3] = w2
        np.multiply(feats[1], x, out=feats[0])
        feats[0] += feats[2] * y
        np.matmul(G[c], feats, out=out[c])
    return out


def _solve(m: np.ndarray) -> np.ndarray:
    """Minimiser X [..., 3] of [X;1]^T M [X;1] from the 9 entries [9, ...] (closed-form 3x3 solve)."""
    m00, m01, m02, m11, m12, m22, b0, b1, b2 = m
    c00 = m11 * m22 - m12 * m12
    c01 = m02 * m12 - m01 * m22
    c02 = m01 * m12 - m02 * m11
    c11 = m00 * m22 - m02 * m02
    c12 = m01 * m02 - m00 * m12
    c22 = m00 * m11 - m01 * m01
    det = m00 * c00 + m01 * c01 + m02 * c02
    scale = np.maximum(np.abs(m00), np.maximum(np.abs(m11), np.abs(m22)))
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = -1.0 / np.where(np.abs(det) > 1e-12 * scale ** 3, det, np.nan)
        return np.stack([(c00 * b0 + c01 * b1 + c02 * b2) * inv, (c01 * b0 + c11 * b1 + c12 * b2) * inv,
                         (c02 * b0 + c12 * b1 + c22 * b2) * inv], axis=-1)


def dlt(xy: np.ndarray, weights: np.ndarray, Rt: np.ndarray) -> np.ndarray:
    """Weighted DLT. xy [C, N, 2] normalised coords, weights [C, N], Rt [C, 3, 4] -> X [N, 3].

    Views with weight 0 are ignored; points with fewer than 2 weighted views are NaN.
    """
    blocks = _normal_blocks(np.asarray(xy, dtype=np.float64), np.asarray(weights, dtype=np.float64),
                            _camera_blocks(Rt))
    X = _solve(blocks.sum(0))
    X[(weights > 0).sum(0) < 2] = np.nan
    return X


def _pinhole_errors(X: np.ndarray, xy: np.ndarray, cameras: list[Camera]) -> np.ndarray:
    """Undistorted-pixel error [C, ...] of X [..., 3] against normalised observations xy [C, ..., 2]."""
    err = np.empty((len(cameras),) + np.broadcast_shapes(X.shape[:-1], xy.shape[1:-1]))
    X0, X1, X2 = X[..., 0], X[..., 1], X[..., 2]
    for c, cam in enumerate(cameras):
        R, t = cam.R, cam.t
        z = R[2, 0] * X0 + R[2, 1] * X1 + R[2, 2] * X2 + t[2]
        with np.errstate(divide="ignore", invalid="ignore"):
            iz = 1.0 / z
            dx = (R[0, 0] * X0 + R[0, 1] * X1 + R[0, 2] * X2 + t[0]) * iz - xy[c, ..., 0]
            dy = (R[1, 0] * X0 + R[1, 1] * X1 + R[1, 2] * X2 + t[1]) * iz - xy[c, ..., 1]
            if cam.K[0, 1]:
                dx = cam.fx * dx + cam.K[0, 1] * dy
            else:
                dx *= cam.fx
            dy *= cam.fy
            e = np.sqrt(dx * dx + dy * dy)
        e[~(z > 1e-9)] = np.inf  # behind the camera
        e[np.isnan(z)] = np.nan
        err[c] = e
    return err


def reprojection_errors(X: np.ndarray, pixels: np.ndarray, cameras: list[Camera]) -> np.ndarray:
    """Pixel distance [C, N] between projections (with distortion) of X [N, 3] and pixels [C, N, 2].

    Points behind a camera give +inf for that camera; missing points give NaN.
    """
    err = np.empty(pixels.shape[:2])
    for c, cam in enumerate(cameras):
        proj = cam.project(X)
        e = np.linalg.norm(proj - pixels[c], axis=-1)
        behind = np.isfinite(X).all(-1) & ~np.isfinite(proj).all(-1)
        err[c] = np.where(behind, np.inf, e)
    return err


def _mean_error(err: np.ndarray, used: np.ndarray) -> np.ndarray:
    n = used.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(used, err, 0.0).sum(0) / np.where(n > 0, n, np.nan)


def _triangulate_flat(xy, weights, cameras, G, reproj_threshold, min_views):
    C, N = weights.shape
    blocks = _normal_blocks(xy, weights, G)  # [C, 9, N]
    total = blocks.sum(0)
    X = _solve(total)
    used = weights > 0
    X[used.sum(0) < 2] = np.nan
    err = _pinhole_errors(X, xy, cameras)
    mean = _mean_error(err, used)
    stats = {"views_rejected": 0, "points_rejected": 0}
    if reproj_threshold is None or not np.isfinite(reproj_threshold):
        return X, used, err, stats
    for _ in range(C):
        n = used.sum(0)
        bad = np.flatnonzero(~(mean <= reproj_threshold) & (n > min_views) & np.isfinite(X).all(-1))
        if bad.size == 0:
            break
        # every leave-one-camera-out solution of the bad points: subtract that camera's block
        Xd = _solve((total[:, bad][None] - blocks[:, :, bad]).transpose(1, 0, 2))  # [drop, nb, 3]
        ed = _pinhole_errors(Xd, xy[:, None, bad], cameras)  # [C, drop, nb]
        keep = used[:, None, bad] & ~np.eye(C, dtype=bool)[:, :, None]  # views left after the drop
        md = _mean_error(ed, keep)  # [drop, nb]
        md = np.where(used[:, bad] & np.isfinite(md), md, np.inf)
        best = md.argmin(0)
        cols = np.arange(bad.size)
        used[best, bad] = False
        total[:, bad] -= blocks[best, :, bad].T
        X[bad] = Xd[best, cols]
        err[:, bad] = ed[:, best, cols]
        mean[bad] = md[best, cols]
        stats["views_rejected"] += int(bad.size)
    still = ~(mean <= reproj_threshold) & np.isfinite(X).all(-1)
    stats["points_rejected"] = int(still.sum())
    X[still] = np.nan
    return X, used, err, stats


def _numba_kernel():
    """The compiled kernel, or None (numba missing, or MARIONETTE_NO_NUMBA=1)."""
    if os.environ.get("MARIONETTE_NO_NUMBA", "0") not in ("", "0"):
        return None
    try:
        from engine.capture._triangulation_numba import triangulate_kernel
    except Exception:  # numba absent or broken: the NumPy reference does the same work
        return None
    return triangulate_kernel


def _triangulate_numba(kernel, kp, cameras, min_confidence, reproj_threshold, min_views, undistort, tol_px):
    C, T, J, _ = kp.shape
    N = T * J
    obs = np.ascontiguousarray(kp).reshape(C, N, 3)  # a view when already contiguous
    f = lambda attr: np.array([getattr(c, attr) for c in cameras], dtype=np.float64)  # noqa: E731
    skew = np.array([c.K[0, 1] for c in cameras])
    dist = np.zeros((C, 8))
    for i, c in enumerate(cameras):
        dist[i, : min(8, c.dist.size)] = c.dist[:8]
    und = np.array([bool(undistort and c.has_distortion) for c in cameras])
    R = np.stack([c.R for c in cameras])
    t = np.stack([c.t for c in cameras])
    G = _camera_blocks(np.concatenate([R, t[:, :, None]], axis=2))
    tol = np.array([tol_px / max(c.fx, c.fy) for c in cameras])
    X = np.empty((N, 3))
    used = np.empty((C, N), dtype=np.bool_)
    mean = np.empty(N)
    cmean = np.empty(N)
    thr = float(reproj_threshold) if reproj_threshold is not None and np.isfinite(reproj_threshold) else -1.0
    import numba

    # threads only pay off on big batches: below ~250k points their start-up and, on a busy
    # machine, their contention cost more than the work (measured: 4x slower at 25k points)
    before = numba.get_num_threads()
    numba.set_num_threads(max(1, min(before, N // 250_000)))
    try:
        status, dropped = kernel(obs, f("fx"), f("fy"), f("cx"), f("cy"), skew, dist, und, R, t, G,
                                 float(min_confidence), thr, int(min_views), tol, X, used, mean, cmean)
    finally:
        numba.set_num_threads(before)
    stats = {"views_rejected": int(dropped.sum()), "points_rejected": int((status == 1).sum()),
             "points_missing": int(np.isnan(mean).sum()), "points_total": int(N)}
    return TriangulationResult(
        points=X.reshape(T, J, 3), reprojection_error=mean.reshape(T, J),
        views_used=used.sum(0, dtype=np.int32).reshape(T, J), used=used.reshape(C, T, J),
        confidence=cmean.reshape(T, J), stats=stats)


def triangulate(keypoints: np.ndarray, cameras: list[Camera], *, min_confidence: float = 0.3,
                reproj_threshold: float | None = 25.0, min_views: int = 2, undistort: bool = True,
                backend: str = "auto") -> TriangulationResult:
    """Triangulate keypoints [C, T, J, 3] (pixels x, y, confidence) seen by ``cameras``.

    min_confidence:   detections at or below it are ignored (OpenPose uses 0 for missing)
    reproj_threshold: pixels; views are rejected while the mean error is above it
                      (None disables rejection)
    min_views:        fewest cameras a 3D point may rest on (>= 2)
    backend:          "numpy" (the reference), "numba" (the same maths as one compiled,
                      parallel pass; needs numba) or "auto" (numba for >= 200k points
                      when installed, else NumPy)
    """
    kp = _check_inputs(keypoints, cameras)
    if min_views < 2:
        raise MarionetteError(f"min_views must be at least 2, got {min_views}")
    if backend not in ("auto", "numpy", "numba"):
        raise MarionetteError(f"backend must be auto, numpy or numba, got {backend!r}")
    C, T, J, _ = kp.shape
    N = T * J
    # auto: the compiled kernel only pays for its one-off compilation (~10 s, then cached on
    # disk) on long captures; below that the NumPy reference takes milliseconds anyway
    kernel = _numba_kernel() if backend == "numba" or (backend == "auto" and N >= _NUMBA_MIN_POINTS) else None
    if backend == "numba" and kernel is None:
        raise MarionetteError("backend 'numba' requested but numba is not importable (pip install numba)")
    if kernel is not None:
        return _triangulate_numba(kernel, kp, cameras, min_confidence, reproj_threshold, min_views, undistort, 1e-4)
    xy, weights = normalized_observations(kp, cameras, min_confidence, undistort)
    xy, weights = xy.reshape(C, N, 2), weights.reshape(C, N)
    G = _camera_blocks(np.stack([np.hstack([c.R, c.t[:, None]]) for c in cameras]))
    X = np.full((N, 3), np.nan)
    used = np.zeros((C, N), dtype=bool)
    E = np.full((C, N), np.nan)
    stats = {"views_rejected": 0, "points_rejected": 0}
    chunk = max(1024, _BLOCK_BYTES // (C * 9 * 8))
    for s in range(0, N, chunk):
        sl = slice(s, min(N, s + chunk))
        X[sl], used[:, sl], E[:, sl], st = _triangulate_flat(xy[:, sl], weights[:, sl], cameras, G,
                                                             reproj_threshold, min_views)
        for k in stats:
            stats[k] += st[k]
    ok = np.isfinite(X).all(-1)
    used &= ok[None]
    n_used = used.sum(0)
    mean_err = np.where(ok, _mean_error(E, used), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.where(ok, np.where(used, weights, 0.0).sum(0) / np.maximum(n_used, 1), 0.0)
    stats["points_missing"] = int((~ok).sum())
    stats["points_total"] = int(N)
    return TriangulationResult(
        points=X.reshape(T, J, 3), reprojection_error=mean_err.reshape(T, J),
        views_used=n_used.reshape(T, J).astype(np.int32), used=used.reshape(C, T, J),
        confidence=conf.reshape(T, J), stats=stats)
