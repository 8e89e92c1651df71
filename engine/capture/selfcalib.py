"""Camera extrinsics from the subject's own 2D keypoints (no calibration object).

For rigs whose intrinsics are known (or guessed) but whose extrinsics are not:

1. Relative pose of every camera to a reference camera from 2D-2D correspondences
   (the same joint in the same frame) over many frames: essential matrix with OpenCV
   (``findEssentialMat``, RANSAC, on undistorted normalised coordinates) and
   ``recoverPose``, whose cheirality check keeps the one of four decompositions that
   puts the points in front of both cameras.
2. A common scale: each pair's baseline is only known up to scale; the depths (in the
   reference camera) of joints triangulated by the anchor pair and by each other pair
   fix every baseline relative to the anchor's.
3. Refinement: bundle adjustment of all camera poses (reference fixed) and all 3D
   joints, minimising confidence-weighted reprojection error in pixels with a robust
   (soft-L1) loss, ``scipy.optimize.least_squares`` with a sparse Jacobian pattern.
4. Metric scale from a known subject height or a known bone length, and a world frame
   fitted to the subject: Z up (from feet to head), the floor at the lowest foot
   joints, the origin under the subject's mean hip position.

The result is a list of ``Camera`` in metres, Z-up.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engine import MarionetteError
from engine.geometry.camera import Camera
from engine.geometry.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from engine.body.joint_sets import JointSet


@dataclass
class SelfCalibration:
    cameras: list[Camera]
    points: np.ndarray          # [T, J, 3] triangulated joints in the new world (metres)
    reprojection_px: float      # median reprojection error after refinement
    scale_note: str
    lines: list[str] = field(default_factory=list)


def _normalised(kp: np.ndarray, cameras: list[Camera], min_confidence: float):
    from engine.capture.triangulation import normalized_observations

    return normalized_observations(kp, cameras, min_confidence)


def _pair_pose(xr, xc, thresh):
    import cv2

    E, mask = cv2.findEssentialMat(xr, xc, cameraMatrix=np.eye(3), method=cv2.RANSAC, prob=0.9999,
                                   threshold=thresh)
    if E is None or E.shape != (3, 3):
        return None
    inl = mask.ravel().astype(bool)
    n, R, t, mask2 = cv2.recoverPose(E, xr[inl], xc[inl], cameraMatrix=np.eye(3))
    good = np.zeros(len(xr), dtype=bool)
    good[np.flatnonzero(inl)[mask2.ravel() > 0]] = True
    return R, t.ravel(), good


def _depths_in_ref(xr, xc, R, t):
    """Depth in the reference camera of points triangulated from the pair (ref at identity)."""
    from engine.capture.triangulation import dlt

    Rt = np.stack([np.hstack([np.eye(3), np.zeros((3, 1))]), np.hstack([R, t[:, None]])])
    X = dlt(np.stack([xr, xc]), np.ones((2, len(xr))), Rt)
    return X[:, 2]


def _bundle_adjust(cams, xy, w, X0, fixed: int, anchor: int, max_nfev: int, f_scale_px: float):
    """Refine poses of all cameras but ``fixed`` and the points X0 [N, 3] (pinhole, undistorted coords)."""
    from scipy.optimize import least_squares
    from scipy.sparse import coo_matrix

    C, N = w.shape
    free = [c for c in range(C) if c != fixed]
    obs_c, obs_n = np.nonzero(w > 0)
    sw = np.sqrt(w[obs_c, obs_n])
    fx = np.array([c.fx for c in cams])[obs_c]
    fy = np.array([c.fy for c in cams])[obs_c]
    target = xy[obs_c, obs_n]
    anchor_norm = float(np.linalg.norm(cams[anchor].t))
    n_cam = 6 * len(free)
    slot = {c: i for i, c in enumerate(free)}

    def unpack(p):
        Rs, ts = [None] * C, [None] * C
        Rs[fixed], ts[fixed] = cams[fixed].R, cams[fixed].t
        for c in free:
            k = slot[c] * 6
            Rs[c], ts[c] = axis_angle_to_matrix(p[k:k + 3]), p[k + 3:k + 6]
        return np.stack(Rs), np.stack(ts), p[n_cam:].reshape(N, 3)

    def residuals(p):
        Rs, ts, X = unpack(p)
        Xc = np.einsum("oij,oj->oi", Rs[obs_c], X[obs_n]) + ts[obs_c]
        z = np.maximum(Xc[:, 2], 1e-6)
        r = np.stack([(Xc[:, 0] / z - target[:, 0]) * fx, (Xc[:, 1] / z - target[:, 1]) * fy], -1) * sw[:, None]
        # the gauge's free scale: keep the anchor baseline at its initial length
        gauge = (np.linalg.norm(ts[anchor]) - anchor_norm) * 1e3
        return np.concatenate([r.ravel(), [gauge]])

    p0 = [np.concatenate([matrix_to_axis_angle(cams[c].R), cams[c].t]) for c in free]
    p0 = np.concatenate(p0 + [X0.ravel()])
    M = 2 * len(obs_c) + 1
    rows = np.arange(len(obs_c))
    r_idx, c_idx = [], []
    for k in range(3):  # each residual pair depends on its point ...
        for parity in (0, 1):
            r_idx.append(2 * rows + parity)
            c_idx.append(n_cam + 3 * obs_n + k)
    cam_rows = np.flatnonzero(obs_c != fixed)
    cam_slot = np.array([slot.get(int(c), -1) for c in obs_c])[cam_rows]
    for k in range(6):  # ... and on its camera's pose (unless it is the fixed reference)
        for parity in (0, 1):
            r_idx.append(2 * cam_rows + parity)
            c_idx.append(cam_slot * 6 + k)
    if anchor != fixed:
        r_idx.append(np.full(3, M - 1))
        c_idx.append(slot[anchor] * 6 + 3 + np.arange(3))
    r_idx, c_idx = np.concatenate(r_idx), np.concatenate(c_idx)
    sparsity = coo_matrix((np.ones(r_idx.size, dtype=np.int8), (r_idx, c_idx)), shape=(M, p0.size)).tocsr()
    sol = least_squares(residuals, p0, jac_sparsity=sparsity, loss="soft_l1", f_scale=f_scale_px,
                        x_scale="jac", method="trf", max_nfev=max_nfev)
    Rs, ts, X = unpack(sol.x)
    return [cams[c].copy(R=Rs[c], t=ts[c]) for c in range(C)], X, sol


def subject_scale(points: np.ndarray, joint_set: JointSet, height: float | None = None,
                  bone: tuple[str, str, float] | None = None) -> tuple[float, str]:
    """Factor turning the reconstruction's units into metres, from a known height or bone length."""
    if (height is None) == (bone is None):
        raise MarionetteError("give exactly one of a subject height (--height) or a bone length (--bone A B METRES)")
    if bone is not None:
        a, b, length = bone
        try:
            ia, ib = joint_set.index(a), joint_set.index(b)
        except KeyError as exc:
            raise MarionetteError(f"--bone: {exc.args[0]}") from None
        if not (np.isfinite(length) and length > 0):
            raise MarionetteError(f"--bone: length must be a positive number, got {length}")
        if ia == ib:
            raise MarionetteError(f"--bone {a} {b}: both name joint {joint_set.names[ia]}; a bone joins two "
                                  "different joints")
        L = np.linalg.norm(points[:, ia] - points[:, ib], axis=-1)
        L = L[np.isfinite(L)]
        if L.size < 3:
            raise MarionetteError(f"--bone {a} {b}: the bone is seen in fewer than 3 frames")
        if not float(np.median(L)) > 0:
            raise MarionetteError(f"--bone {a} {b}: the two joints coincide in the reconstruction; choose another bone")
        return length / float(np.median(L)), f"bone {a}-{b} = {length} m (median over {L.size} frames)"
    if not (np.isfinite(height) and height > 0):
        raise MarionetteError(f"--height must be a positive number, got {height}")
    # fractions of stature (anthropometric tables, Drillis & Contini): where each landmark sits
    tops = [("head_top", 1.0), ("nose", 0.92), ("upper_neck", 0.87)]
    bottoms = [("heel", 0.015), ("ankle", 0.039)]
    canon = joint_set.canonical
    top = next(((n, f) for n, f in tops if n in canon), None)
    bot = next(((n, f) for n, f in bottoms if f"left_{n}" in canon and f"right_{n}" in canon), None)
    if top is None or bot is None:
        raise MarionetteError(f"joint set {joint_set.name} lacks a head and foot joint for --height; use --bone")
    mid = 0.5 * (points[:, canon.index(f"left_{bot[0]}")] + points[:, canon.index(f"right_{bot[0]}")])
    d = np.linalg.norm(points[:, canon.index(top[0])] - mid, axis=-1)
    d = d[np.isfinite(d)]
    if d.size < 3:
        raise MarionetteError("--height: head and feet are seen together in fewer than 3 frames")
    span = float(np.percentile(d, 90)) / (top[1] - bot[1])  # the most upright frames
    if not span > 0:
        raise MarionetteError("--height: head and feet coincide in the reconstruction; use --bone")
    return height / span, f"subject height {height} m ({top[0]} to {bot[0]}, 90th percentile over {d.size} frames)"


def subject_world(points: np.ndarray, joint_set: JointSet) -> tuple[np.ndarray, np.ndarray]:
    """(R, o): a Z-up world fitted to the subject; new = R @ (old - o)."""
    canon = joint_set.canonical

    def joint(names):
        idx = [canon.index(n) for n in names if n in canon]
        return np.nanmean(points[:, idx], axis=1) if idx else None

    head = joint(["head_top"]) if "head_top" in canon else joint(["nose"])
    feet = joint([n for n in canon if n.endswith(("ankle", "heel"))])
    hips = joint(["left_hip", "right_hip"])
    if head is None or feet is None or hips is None:
        raise MarionetteError(f"joint set {joint_set.name}: needs head, hip and foot joints to find the floor")
    up = np.nanmedian(head - feet, axis=0)
    up /= np.linalg.norm(up)
    x = np.cross([0.0, 1.0, 0.0] if abs(up[1]) < 0.9 else [1.0, 0.0, 0.0], up)
    x /= np.linalg.norm(x)
    y = np.cross(up, x)
    R = np.stack([x, y, up])
    foot_idx = [i for i, n in enumerate(canon) if n.endswith(("ankle", "heel", "toe"))]
    heights = (points[:, foot_idx] @ up).ravel()
    floor = np.nanpercentile(heights, 1)
    centre = np.nanmean(hips, axis=0)
    o = centre - (centre @ up - floor) * up
    return R, o


def calibrate_from_keypoints(keypoints: np.ndarray, intrinsics: list[Camera], joint_set: JointSet, *,
                             height: float | None = None, bone: tuple[str, str, float] | None = None,
                             reference: int = 0, min_confidence: float = 0.5, max_frames: int = 300,
                             refine: bool = True, max_nfev: int = 60, progress: bool = False) -> SelfCalibration:
    """Extrinsics of every camera from keypoints [C, T, J, 3] (see the module docstring).

    ``intrinsics``: cameras whose K, distortion and image size are used (their R, t are ignored).
    """
    from engine.capture.triangulation import triangulate

    kp = np.asarray(keypoints, dtype=np.float64)
    C = kp.shape[0]
    if kp.ndim != 4 or C != len(intrinsics):
        raise MarionetteError(f"keypoints [C, T, J, 3] must match the {len(intrinsics)} cameras, got {list(kp.shape)}")
    if C < 2:
        raise MarionetteError("calibration from keypoints needs at least 2 cameras")
    if not 0 <= reference < C:
        raise MarionetteError(f"reference camera index {reference} out of range 0..{C - 1}")
    T = kp.shape[1]
    if T > max_frames:  # evenly spread frames: more pose variety per residual
        kp = kp[:, np.linspace(0, T - 1, max_frames).round().astype(int)]
    lines = []
    xy, w = _normalised(kp, intrinsics, min_confidence)
    Cn, Tn, J = w.shape
    xy, w = xy.reshape(C, -1, 2), w.reshape(C, -1)
    f_mean = float(np.mean([c.fx for c in intrinsics]))
    thresh = 4.0 / f_mean
    cams = [c.copy(R=np.eye(3), t=np.zeros(3)) for c in intrinsics]
    poses, depths = {}, {}
    for c in range(C):
        if c == reference:
            continue
        both = (w[reference] > 0) & (w[c] > 0)
        n = int(both.sum())
        if n < 15:
            raise MarionetteError(f"camera {intrinsics[c].name!r} shares only {n} confident keypoints with the "
                                  f"reference camera {intrinsics[reference].name!r}; need at least 15")
        res = _pair_pose(xy[reference, both], xy[c, both], thresh)
        if res is None or res[2].sum() < 10:
            raise MarionetteError(f"camera {intrinsics[c].name!r}: no consistent essential matrix with the "
                                  f"reference camera (too few inliers)")
        R, t, good = res
        idx = np.flatnonzero(both)[good]
        z = _depths_in_ref(xy[reference, idx], xy[c, idx], R, t)
        poses[c] = (R, t)
        depths[c] = dict(zip(idx.tolist(), z.tolist()))
        lines.append(f"{intrinsics[c].name}: essential matrix from {n} correspondences, {int(good.sum())} inliers")
    anchor = max(depths, key=lambda c: len(depths[c]))
    for c, (R, t) in poses.items():
        if c == anchor:
            s = 1.0
        else:
            common = sorted(set(depths[c]) & set(depths[anchor]))
            ratios = np.array([depths[anchor][i] / depths[c][i] for i in common])
            ratios = ratios[np.isfinite(ratios) & (ratios > 0)]
            if ratios.size < 5:
                raise MarionetteError(f"camera {intrinsics[c].name!r}: too few joints seen also by "
                                      f"{intrinsics[anchor].name!r} to fix its baseline's scale")
            s = float(np.median(ratios))
        cams[c] = cams[c].copy(R=R, t=t * s)
    kp_flat = kp.reshape(C, -1, 3)[None].reshape(C, 1, -1, 3)
    tri = triangulate(kp_flat, cams, min_confidence=min_confidence, reproj_threshold=25.0)
    X0 = tri.points.reshape(-1, 3)
    ok = np.isfinite(X0).all(-1)
    w_ba = np.where(tri.used.reshape(C, -1), w, 0.0)[:, ok]
    lines.append(f"initial reprojection error (median) {np.nanmedian(tri.reprojection_error):.2f} px "
                 f"over {int(ok.sum())} joints")
    if refine:
        cams, Xr, sol = _bundle_adjust(cams, xy[:, ok], w_ba, X0[ok], reference, anchor, max_nfev, 4.0)
        lines.append(f"bundle adjustment: {sol.nfev} evaluations, cost {sol.cost:.4g}")
    tri = triangulate(kp_flat, cams, min_confidence=min_confidence, reproj_threshold=25.0)
    points = tri.points.reshape(Tn, J, 3)
    scale, note = subject_scale(points, joint_set, height=height, bone=bone)
    points = points * scale
    cams = [c.copy(t=c.t * scale) for c in cams]
    Rw, o = subject_world(points, joint_set)
    # x_cam = R_c x_old + t_c and x_old = Rw^T x_new + o  ->  R' = R_c Rw^T, t' = t_c + R_c o
    cams = [c.copy(R=c.R @ Rw.T, t=c.t + c.R @ o) for c in cams]
    points = (points - o) @ Rw.T
    err = float(np.nanmedian(tri.reprojection_error))
    lines.append(f"after refinement: median reprojection error {err:.2f} px; scale from {note}")
    return SelfCalibration(cams, points, err, note, lines)


# ---------------------------------------------------------------------- evaluation
def compare_cameras(estimated: list[Camera], truth: list[Camera], fit_scale: bool = False) -> dict:
    """Errors of ``estimated`` against ``truth`` after the best rigid (or similarity) alignment
    of the camera centres (the two worlds' frames differ): rotation in degrees, centre in metres."""
    A = np.stack([c.center for c in estimated])
    B = np.stack([c.center for c in truth])
    ma, mb = A.mean(0), B.mean(0)
    H = (A - ma).T @ (B - mb)
    U, S, Vt = np.linalg.svd(H)
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(Vt.T @ U.T))])
    Q = Vt.T @ D @ U.T  # rotation taking estimated world to true world
    s = float((S * np.diag(D)).sum() / ((A - ma) ** 2).sum()) if fit_scale else 1.0
    centres = s * (A - ma) @ Q.T + mb
    rot_err, cen_err = [], []
    for e, t, c in zip(estimated, truth, centres):
        R_est_in_true = e.R @ Q.T  # world(true) -> camera
        cosang = (np.trace(R_est_in_true @ t.R.T) - 1) / 2
        rot_err.append(float(np.degrees(np.arccos(np.clip(cosang, -1, 1)))))
        cen_err.append(float(np.linalg.norm(c - t.center)))
    return dict(rotation_deg=rot_err, centre_m=cen_err, scale=s)


# ---------------------------------------------------------------------- pointing refinement
@dataclass
class PointingCorrection:
    cameras: list[Camera]
    shift_px: np.ndarray     # [C, 2] total image shift applied per camera (pixels, x and y)
    bias_before: np.ndarray  # [C, 2] median reprojection residual per camera before (projection - detection)
    bias_after: np.ndarray   # [C, 2] and after


def _residual_bias(points: np.ndarray, keypoints: np.ndarray, cameras: list[Camera], used: np.ndarray) -> np.ndarray:
    """[C, 2] median of (projection - detection) over the joints each camera contributed."""
    out = np.zeros((len(cameras), 2))
    for c, cam in enumerate(cameras):
        sel = used[c] & np.isfinite(points).all(-1)
        if sel.sum() < 10:
            continue
        proj = cam.project(points[sel], distort=True)
        out[c] = np.median(proj - keypoints[c][sel][:, :2], axis=0)
    return out


def correct_pointing(keypoints: np.ndarray, cameras: list[Camera], triangulate_fn, iterations: int = 4,
                     max_shift: float = 0.03) -> PointingCorrection:
    """Turn each camera slightly about its own centre so the subject's triangulated joints reproject
    without a per-camera bias.

    A calibration that is a fraction of a degree off in where a camera points shifts every
    reprojection in that camera the same way (on the vendored clip: 13-15 px in two of four
    1920-pixel cameras); the triangulated skeleton then sits between the cameras' opinions and
    a model fitted to some cameras is off in the others. Per iteration: triangulate, take each
    camera's median residual (projection - detection), rotate the camera about its centre by
    ``-residual / focal`` (yaw and pitch; the image moves by about the residual), re-triangulate.
    Camera centres, intrinsics and roll are kept, so this is the two-parameter-per-camera
    restriction of a bundle adjustment. ``triangulate_fn(keypoints, cameras)`` returns a
    ``TriangulationResult``. Shifts are capped at ``max_shift`` of each image's longer side in total
    (60 px on 1920-pixel frames); if the median reprojection error does not drop, the cameras are
    returned unchanged (zero shift).
    """
    cams = list(cameras)
    total = np.zeros((len(cams), 2))
    cap = np.array([[max_shift * max(c.width, c.height)] for c in cams])
    res = triangulate_fn(keypoints, cams)
    error_before = np.nanmedian(res.reprojection_error) if np.isfinite(res.reprojection_error).any() else np.inf
    before = _residual_bias(res.points, keypoints, cams, res.used)
    bias = before
    for _ in range(iterations):
        step = -bias
        step = np.clip(total + step, -cap, cap) - total
        if np.abs(step).max() < 0.05:
            break
        new = []
        for cam, (dx, dy) in zip(cams, step):
            yaw, pitch = dx / cam.fx, -dy / cam.fy  # image moves by +dx, +dy for small angles
            cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
            Ry = np.array([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]])
            Rx = np.array([[1.0, 0.0, 0.0], [0.0, cp, -sp], [0.0, sp, cp]])
            dR = Rx @ Ry
            new.append(cam.copy(R=dR @ cam.R, t=dR @ cam.t))
        cams = new
        total += step
        res = triangulate_fn(keypoints, cams)
        bias = _residual_bias(res.points, keypoints, cams, res.used)
    error_after = np.nanmedian(res.reprojection_error) if np.isfinite(res.reprojection_error).any() else np.inf
    if not error_after < error_before:
        return PointingCorrection(list(cameras), np.zeros_like(total), before, before)
    return PointingCorrection(cams, total, before, bias)
