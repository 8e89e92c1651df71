"""Batched, confidence-weighted multi-view triangulation with outlier-view rejection.

Everything runs on all frames and joints at once: points are flattened to N = T*J
rows and solved as one batch of small linear systems (no Python loop per frame).

Method
------
1. Pixels are undistorted to normalised image coordinates (x/z, y/z) per camera.
2. DLT: each view c with weight w_c (its detector confidence) contributes the rows
   ``w_c (x P3 - P1)`` and ``w_c (y P3 - P2)`` with ``P = [R | t]``. The 4x4 normal
   matrix ``A^T A`` of every point is built with one einsum and its smallest
   eigenvector (batched ``numpy.linalg.eigh``) is the homogeneous point.
3. Reprojection error per view: distance in pixels between the detection and the
   projection (with distortion) of the 3D point.
4. Bad views (as Pose2Sim does): while a point's mean reprojection error over its
   views exceeds ``reproj_threshold`` and it has more than ``min_views`` views, every
   leave-one-camera-out solution is computed (again as one batch) and the one with
   the lowest mean error is kept. A point still above the threshold with only
   ``min_views`` views left is marked missing (NaN) and counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engine import MarionetteError
from engine.camera import Camera

_CHUNK = 250_000  # points per batch: bounds memory (~C*N*64 bytes per temporary)


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
                            undistort: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Undistorted normalised coordinates [C, ..., 2] and weights [C, ...] (0 = unusable)."""
    kp = np.asarray(keypoints, dtype=np.float64)
    conf = kp[..., 2]
    valid = np.isfinite(kp).all(-1) & (conf > min_confidence)
    xy = np.empty(kp.shape[:-1] + (2,))
    for c, cam in enumerate(cameras):
        xy[c] = cam.pixels_to_normalized(np.where(valid[c, ..., None], kp[c, ..., :2], 0.0), undistort=undistort)
    weights = np.where(valid, conf, 0.0)
    weights = np.where(np.isfinite(xy).all(-1), weights, 0.0)
    return np.nan_to_num(xy), weights


def dlt(xy: np.ndarray, weights: np.ndarray, Rt: np.ndarray) -> np.ndarray:
    """Weighted DLT. xy [C, N, 2] normalised coords, weights [C, N], Rt [C, 3, 4] -> X [N, 3].

    Rows with weight 0 are ignored; points with fewer than 2 weighted views come back
    as NaN. The per-view rows are normalised so that weight means the same for every
    view regardless of its depth.
    """
    rows_x = xy[..., 0:1] * Rt[:, None, 2, :] - Rt[:, None, 0, :]  # [C, N, 4]
    rows_y = xy[..., 1:2] * Rt[:, None, 2, :] - Rt[:, None, 1, :]
    w2 = weights ** 2
    # A^T A summed over cameras, without materialising A: [N, 4, 4]
    M = np.einsum("cn,cni,cnj->nij", w2, rows_x, rows_x) + np.einsum("cn,cni,cnj->nij", w2, rows_y, rows_y)
    scale = np.maximum(np.abs(M).max(axis=(1, 2), keepdims=True), 1e-300)
    _, vecs = np.linalg.eigh(M / scale)
    h = vecs[..., 0]  # eigenvector of the smallest eigenvalue
    with np.errstate(divide="ignore", invalid="ignore"):
        X = h[:, :3] / h[:, 3:4]
    nviews = (weights > 0).sum(0)
    X[(nviews < 2) | ~np.isfinite(X).all(-1)] = np.nan
    return X


def reprojection_errors(X: np.ndarray, pixels: np.ndarray, cameras: list[Camera]) -> np.ndarray:
    """Pixel distance [C, N] between projections of X [N, 3] and detections pixels [C, N, 2].

    Points behind a camera give +inf for that camera; missing points give NaN.
    """
    err = np.empty(pixels.shape[:2])
    for c, cam in enumerate(cameras):
        proj = cam.project(X)
        e = np.linalg.norm(proj - pixels[c], axis=-1)
        behind = np.isfinite(X).all(-1) & ~np.isfinite(proj).all(-1)
        err[c] = np.where(behind, np.inf, e)
    return err


def _mean_error(err: np.ndarray, weights: np.ndarray) -> np.ndarray:
    used = weights > 0
    n = used.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.where(used, err, 0.0).sum(0) / n, np.nan)


def _triangulate_flat(xy, weights, pixels, cameras, Rt, reproj_threshold, min_views):
    C, N = weights.shape
    X = dlt(xy, weights, Rt)
    err = reprojection_errors(X, pixels, cameras)
    mean = _mean_error(err, weights)
    stats = {"views_rejected": 0, "points_rejected": 0}
    if reproj_threshold is None or not np.isfinite(reproj_threshold):
        return X, weights, err, stats
    for _ in range(C):
        n = (weights > 0).sum(0)
        bad = np.flatnonzero(~(mean <= reproj_threshold) & (n > min_views) & np.isfinite(X).all(-1))
        if bad.size == 0:
            break
        # every leave-one-camera-out solution of the bad points, solved as one batch
        wb = np.repeat(weights[None, :, bad], C, axis=0)  # [drop, C, nb]
        wb[np.arange(C), np.arange(C), :] = 0.0
        xb = np.broadcast_to(xy[:, bad][:, None], (C, C, bad.size, 2)).reshape(C, C * bad.size, 2)
        wflat = wb.transpose(1, 0, 2).reshape(C, C * bad.size)
        Xb = dlt(xb, wflat, Rt)
        pb = np.broadcast_to(pixels[:, bad][:, None], (C, C, bad.size, 2)).reshape(C, C * bad.size, 2)
        eb = reprojection_errors(Xb, pb, cameras)
        mb = _mean_error(eb, wflat).reshape(C, bad.size)  # [drop, nb]
        dropped_was_used = weights[:, bad] > 0
        mb = np.where(dropped_was_used & np.isfinite(mb), mb, np.inf)
        best = mb.argmin(0)
        cols = np.arange(bad.size)
        sel = best * bad.size + cols
        weights[best, bad] = 0.0
        X[bad] = Xb[sel]
        err[:, bad] = eb[:, sel]
        mean[bad] = mb[best, cols]
        stats["views_rejected"] += int(bad.size)
    still = ~(mean <= reproj_threshold) & np.isfinite(X).all(-1)
    stats["points_rejected"] = int(still.sum())
    X[still] = np.nan
    return X, weights, err, stats


def triangulate(keypoints: np.ndarray, cameras: list[Camera], *, min_confidence: float = 0.3,
                reproj_threshold: float | None = 15.0, min_views: int = 2, undistort: bool = True) -> TriangulationResult:
    """Triangulate keypoints [C, T, J, 3] (pixels x, y, confidence) seen by ``cameras``.

    min_confidence:   detections at or below it are ignored (OpenPose uses 0 for missing)
    reproj_threshold: pixels; views are rejected while the mean error is above it
                      (None disables rejection)
    min_views:        fewest cameras a 3D point may rest on (>= 2)
    """
    kp = _check_inputs(keypoints, cameras)
    if min_views < 2:
        raise MarionetteError(f"min_views must be at least 2, got {min_views}")
    C, T, J, _ = kp.shape
    N = T * J
    xy, weights = normalized_observations(kp, cameras, min_confidence, undistort)
    xy, weights = xy.reshape(C, N, 2), weights.reshape(C, N)
    pixels = np.nan_to_num(kp[..., :2].reshape(C, N, 2))
    Rt = np.stack([np.hstack([c.R, c.t[:, None]]) for c in cameras])
    X = np.full((N, 3), np.nan)
    W = np.zeros((C, N))
    E = np.full((C, N), np.nan)
    stats = {"views_rejected": 0, "points_rejected": 0}
    for s in range(0, N, _CHUNK):
        sl = slice(s, min(N, s + _CHUNK))
        Xs, Ws, Es, st = _triangulate_flat(xy[:, sl], weights[:, sl].copy(), pixels[:, sl], cameras, Rt,
                                           reproj_threshold, min_views)
        X[sl], W[:, sl], E[:, sl] = Xs, Ws, Es
        for k in stats:
            stats[k] += st[k]
    ok = np.isfinite(X).all(-1)
    used = (W > 0) & ok[None]
    n_used = used.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_err = np.where(ok, np.where(used, E, 0.0).sum(0) / np.maximum(n_used, 1), np.nan)
        conf = np.where(ok, np.where(used, kp[..., 2].reshape(C, N), 0.0).sum(0) / np.maximum(n_used, 1), 0.0)
    stats["points_missing"] = int((~ok).sum())
    stats["points_total"] = int(N)
    return TriangulationResult(
        points=X.reshape(T, J, 3), reprojection_error=mean_err.reshape(T, J),
        views_used=n_used.reshape(T, J).astype(np.int32), used=used.reshape(C, T, J),
        confidence=conf.reshape(T, J), stats=stats)


# ---------------------------------------------------------------------- file-to-file pipeline
@dataclass
class ReconstructionReport:
    lines: list[str]
    skeleton: "object"  # engine.skeleton_io.SkeletonSequence
    result: TriangulationResult
    camera_names: list[str]


def reconstruct(pose_dir, calib_path, *, joint_set: str = "auto", fps: float = 30.0, cutoff: float | None = 6.0,
                max_gap: int = 10, reproj_threshold: float | None = 15.0, min_confidence: float = 0.3,
                min_views: int = 2, progress: bool = False) -> ReconstructionReport:
    """Keypoint folder + calibration file -> filtered 3D skeleton sequence and a text report.

    Steps: read calibration, read keypoints, match camera folders to cameras, pick one
    subject, triangulate, fill gaps of <= ``max_gap`` frames, low-pass at ``cutoff`` Hz
    (None or 0 disables). Frames and joints that cannot be reconstructed stay NaN with
    confidence 0 and are counted in ``lines``.
    """
    from engine.calibration import load_calibration_info
    from engine.filtering import butterworth, fill_gaps
    from engine.keypoints import match_cameras, read_keypoints, select_subject
    from engine.skeleton_io import SkeletonSequence

    if not (fps > 0):
        raise MarionetteError(f"--fps must be positive, got {fps}")
    calib = load_calibration_info(calib_path)
    kp = read_keypoints(pose_dir, joint_set=None if joint_set == "auto" else joint_set, progress=progress)
    cam_names = [c.name for c in calib.cameras]
    mapping, how = match_cameras(kp.camera_names, cam_names)
    lines = [f"calibration: {calib.path} ({calib.format}, {len(cam_names)} cameras, up axis {calib.up_axis})", how]
    extra = [kp.camera_names[i] for i, m in enumerate(mapping) if m is None]
    if extra:
        lines.append(f"ignored keypoint folders with no calibration camera: {', '.join(extra)}")
    keep = [i for i, m in enumerate(mapping) if m is not None]
    unused = [cam_names[j] for j in range(len(cam_names)) if j not in set(m for m in mapping if m is not None)]
    if unused:
        lines.append(f"calibration cameras without keypoints (unused): {', '.join(unused)}")
    if len(keep) < 2:
        raise MarionetteError(f"{pose_dir}: only {len(keep)} keypoint folder(s) match a calibration camera "
                              f"(folders {kp.camera_names}, cameras {cam_names}); need at least 2")
    kp = kp.subset(keep)
    cameras = [calib.cameras[mapping[i]] for i in keep]
    kp = select_subject(kp, cameras, min_confidence=min_confidence, progress=progress)
    res = triangulate(kp.data, cameras, min_confidence=min_confidence, reproj_threshold=reproj_threshold,
                      min_views=min_views)
    joints = res.points
    filled = np.zeros(joints.shape[:2], dtype=bool)
    if max_gap > 0:
        joints, filled = fill_gaps(joints, max_gap=max_gap)
    if cutoff:
        joints = butterworth(joints, fps=fps, cutoff=cutoff)
    conf = res.confidence.copy()
    if filled.any():
        med = np.array([np.median(c[c > 0]) if (c > 0).any() else 0.5 for c in conf.T])
        conf = np.where(filled, 0.5 * med[None], conf)
    js = kp.joint_set
    extras = dict(frame_indices=kp.frame_indices, reprojection_error=res.reprojection_error.astype(np.float32),
                  views_used=res.views_used, filled=filled, camera_names=np.array([c.name for c in cameras]),
                  person_index=kp.person_index if kp.person_index is not None else np.zeros((len(cameras), 0)))
    seq = SkeletonSequence(joints=joints, joint_set=js, fps=float(fps), confidence=conf, up_axis=calib.up_axis,
                           extras=extras)
    lines += kp.summary.lines()
    T, J = joints.shape[:2]
    missing = seq.missing
    st = res.stats
    err = res.reprojection_error[np.isfinite(res.reprojection_error)]
    lines.append(f"triangulated {T} frames x {J} joints ({js.name}) from {len(cameras)} cameras: "
                 f"median reprojection error {np.median(err) if err.size else float('nan'):.2f} px, "
                 f"mean views per joint {res.views_used[~res.missing].mean() if (~res.missing).any() else 0:.2f}")
    lines.append(f"outlier views rejected: {st['views_rejected']} (threshold {reproj_threshold} px); joints "
                 f"rejected after that: {st['points_rejected']}; joints with < {min_views} views: "
                 f"{st['points_missing'] - st['points_rejected']}")
    lines.append(f"gap filling (<= {max_gap} frames): {int(filled.sum())} joints filled; "
                 f"low-pass: {'%g Hz Butterworth (zero-phase) at %g fps' % (cutoff, fps) if cutoff else 'off'}")
    empty_frames = int(missing.all(1).sum())
    lines.append(f"missing after clean-up: {int(missing.sum())} of {T * J} joint samples; "
                 f"{empty_frames} frames with no joint at all")
    worst = np.argsort(-missing.sum(0))[:5]
    worst = [j for j in worst if missing[:, j].any()]
    if worst:
        lines.append("most often missing: " + ", ".join(f"{js.names[j]} {int(missing[:, j].sum())}" for j in worst))
    return ReconstructionReport(lines, seq, res, [c.name for c in cameras])
