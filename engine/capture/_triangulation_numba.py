"""Compiled (numba) kernel of ``engine.capture.triangulation.triangulate``: same maths, one fused pass.

Imported only when numba is installed (``engine.capture.triangulation`` falls back to its
NumPy reference otherwise, or when ``MARIONETTE_NO_NUMBA=1``). Each point is handled
independently (undistortion, weighted DLT, errors, leave-one-camera-out rejection),
so the loop over points runs in parallel and nothing of size N x C x 9 is stored.
``tests/test_triangulation.py`` checks it against the NumPy reference.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True, inline="always", error_model="numpy")
def _solve9(m, out):
    m00, m01, m02, m11, m12, m22, b0, b1, b2 = m[0], m[1], m[2], m[3], m[4], m[5], m[6], m[7], m[8]
    c00 = m11 * m22 - m12 * m12
    c01 = m02 * m12 - m01 * m22
    c02 = m01 * m12 - m02 * m11
    c11 = m00 * m22 - m02 * m02
    c12 = m01 * m02 - m00 * m12
    c22 = m00 * m11 - m01 * m01
    det = m00 * c00 + m01 * c01 + m02 * c02
    scale = max(abs(m00), abs(m11), abs(m22))
    if not abs(det) > 1e-12 * scale * scale * scale:
        out[0] = out[1] = out[2] = np.nan
        return False
    inv = -1.0 / det
    out[0] = (c00 * b0 + c01 * b1 + c02 * b2) * inv
    out[1] = (c01 * b0 + c11 * b1 + c12 * b2) * inv
    out[2] = (c02 * b0 + c12 * b1 + c22 * b2) * inv
    return True


@njit(cache=True, inline="always", error_model="numpy")
def _error(X, c, R, t, fx, fy, skew, xn, yn):
    z = R[c, 2, 0] * X[0] + R[c, 2, 1] * X[1] + R[c, 2, 2] * X[2] + t[c, 2]
    if not z > 1e-9:
        return np.inf
    dx = (R[c, 0, 0] * X[0] + R[c, 0, 1] * X[1] + R[c, 0, 2] * X[2] + t[c, 0]) / z - xn
    dy = (R[c, 1, 0] * X[0] + R[c, 1, 1] * X[1] + R[c, 1, 2] * X[2] + t[c, 1]) / z - yn
    ex = fx[c] * dx + skew[c] * dy
    ey = fy[c] * dy
    return np.sqrt(ex * ex + ey * ey)


@njit(cache=True, parallel=True, error_model="numpy")
def triangulate_kernel(obs, fx, fy, cx, cy, skew, dist, undistort, R, t, G, min_conf, thr, min_views, tol,
                       X_out, used_out, mean_out, conf_out):
    """obs [C, N, 3] (x, y, confidence); camera arrays [C, ...]; G [C, 9, 4] normal-matrix maps.

    Fills X_out [N, 3] (NaN = missing), used_out [C, N], mean_out [N] (mean undistorted-pixel
    error over the views used, NaN = missing), conf_out [N] (mean confidence of the views
    used, 0 = missing); returns per-point status (1 = rejected after the loop) and the
    number of views dropped per point.
    """
    C, N = obs.shape[0], obs.shape[1]
    status = np.zeros(N, np.int8)
    dropped = np.zeros(N, np.int32)
    chunk = 256
    for ch in prange((N + chunk - 1) // chunk):
        blocks = np.empty((C, 9))
        xs = np.empty(C)
        ys = np.empty(C)
        ws = np.empty(C)
        total = np.empty(9)
        X = np.empty(3)
        Xd = np.empty(3)
        m9 = np.empty(9)
        for n in range(ch * chunk, min(N, (ch + 1) * chunk)):
            _point(n, obs, fx, fy, cx, cy, skew, dist, undistort, R, t, G, min_conf, thr, min_views, tol,
                   X_out, used_out, mean_out, conf_out, status, dropped, blocks, xs, ys, ws, total, X, Xd, m9)
    return status, dropped


@njit(cache=True, error_model="numpy")
def _point(n, obs, fx, fy, cx, cy, skew, dist, undistort, R, t, G, min_conf, thr, min_views, tol,
           X_out, used_out, mean_out, conf_out, status, dropped, blocks, xs, ys, ws, total, X, Xd, m9):
    C = obs.shape[0]
    total[:] = 0.0
    nv = 0
    for c in range(C):
        u, v, w = obs[c, n, 0], obs[c, n, 1], obs[c, n, 2]
        if not (w > min_conf and np.isfinite(u) and np.isfinite(v) and np.isfinite(w)):
            used_out[c, n] = False
            continue
        y0 = (v - cy[c]) / fy[c]
        x0 = (u - cx[c] - skew[c] * y0) / fx[c]
        x, y = x0, y0
        if undistort[c]:
            k1, k2, p1, p2, k3, k4, k5, k6 = (dist[c, 0], dist[c, 1], dist[c, 2], dist[c, 3], dist[c, 4],
                                              dist[c, 5], dist[c, 6], dist[c, 7])
            for _ in range(30):
                r2 = x * x + y * y
                icd = (1 + r2 * (k4 + r2 * (k5 + r2 * k6))) / (1 + r2 * (k1 + r2 * (k2 + r2 * k3)))
                xy2 = 2 * x * y
                xn = (x0 - (p1 * xy2 + p2 * (r2 + 2 * x * x))) * icd
                yn = (y0 - (p1 * (r2 + 2 * y * y) + p2 * xy2)) * icd
                step = abs(xn - x) + abs(yn - y)
                x, y = xn, yn
                if step <= tol[c]:
                    break
        xs[c], ys[c], ws[c] = x, y, w
        used_out[c, n] = True
        w2 = w * w
        f0, f1, f2, f3 = w2 * (x * x + y * y), w2 * x, w2 * y, w2
        for k in range(9):
            b = G[c, k, 0] * f0 + G[c, k, 1] * f1 + G[c, k, 2] * f2 + G[c, k, 3] * f3
            blocks[c, k] = b
            total[k] += b
        nv += 1
    ok = nv >= 2 and _solve9(total, X)
    mean = 0.0
    if ok:
        for c in range(C):
            if used_out[c, n]:
                mean += _error(X, c, R, t, fx, fy, skew, xs[c], ys[c])
        mean /= nv
        if thr > 0:
            while not (mean <= thr) and nv > min_views:
                best_d, best_mean = -1, np.inf
                for d in range(C):  # every leave-one-camera-out solution
                    if not used_out[d, n]:
                        continue
                    for k in range(9):
                        m9[k] = total[k] - blocks[d, k]
                    if not _solve9(m9, Xd):
                        continue
                    s = 0.0
                    for c in range(C):
                        if used_out[c, n] and c != d:
                            s += _error(Xd, c, R, t, fx, fy, skew, xs[c], ys[c])
                    s /= nv - 1
                    if s < best_mean:
                        best_mean, best_d = s, d
                if best_d < 0:
                    break
                used_out[best_d, n] = False
                for k in range(9):
                    total[k] -= blocks[best_d, k]
                _solve9(total, X)
                nv -= 1
                dropped[n] += 1
                mean = best_mean
            if not (mean <= thr):
                status[n] = 1
                ok = False
    if ok and np.isfinite(X[0]) and np.isfinite(X[1]) and np.isfinite(X[2]):
        s = 0.0
        for c in range(C):
            if used_out[c, n]:
                s += ws[c]
        for k in range(3):
            X_out[n, k] = X[k]
        mean_out[n] = mean
        conf_out[n] = s / nv
    else:
        for k in range(3):
            X_out[n, k] = np.nan
        for c in range(C):
            used_out[c, n] = False
        mean_out[n] = np.nan
        conf_out[n] = 0.0
