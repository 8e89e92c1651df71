"""Rotations: the one place for quaternion, matrix and axis-angle maths.

Conventions (everywhere in Marionette):

* quaternions are ``(w, x, y, z)``, Hamilton products, ``quat_mul(a, b)`` applies ``b`` first;
* matrices rotate column vectors (``R @ v``); shapes are written ``(*, 3, 3)``: any leading axes;
* axis-angle (rotation vector) is axis times angle in radians, ``(*, 3)``.

The numpy section is the reference; the torch section (``*_torch``) holds the
differentiable versions the SMPL model and fit use (torch is imported lazily).

>>> q = quat_exp(np.array([0.0, 0.0, np.pi / 2]))   # 90 degrees about +Z
>>> np.round(quat_rotate(q, np.array([1.0, 0.0, 0.0])), 6)
array([0., 1., 0.])
>>> np.allclose(quat_to_matrix(q), axis_angle_to_matrix([0.0, 0.0, np.pi / 2]))
True
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "quat_normalize", "quat_conj", "quat_mul", "quat_cumprod", "quat_exp", "quat_log", "quat_rotate",
    "quat_between", "quat_continuous", "make_quats_continuous", "quat_to_matrix", "matrix_to_quat",
    "axis_angle_to_matrix", "matrix_to_axis_angle", "swing_matrix",
    "axis_angle_to_matrix_torch", "matrix_to_axis_angle_torch", "skew_torch",
]

_EPS = 1e-12


# ----------------------------------------------------------------------------- quaternions (numpy)

def quat_normalize(q: np.ndarray) -> np.ndarray:
    """Quaternions ``(*, 4)`` scaled to unit length (a zero quaternion stays zero).

    >>> quat_normalize(np.array([2.0, 0.0, 0.0, 0.0]))
    array([1., 0., 0., 0.])
    """
    q = np.asarray(q, dtype=np.float64)
    return q / np.maximum(np.linalg.norm(q, axis=-1, keepdims=True), _EPS)


def quat_conj(q: np.ndarray) -> np.ndarray:
    """Conjugate ``(*, 4)``: the inverse rotation of a unit quaternion.

    >>> quat_conj(np.array([1.0, 2.0, 3.0, 4.0]))
    array([ 1., -2., -3., -4.])
    """
    q = np.asarray(q, dtype=np.float64)
    return q * np.array([1.0, -1.0, -1.0, -1.0])


def quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product ``a * b`` (apply b, then a), ``(*, 4) x (*, 4) -> (*, 4)`` broadcasting over leading axes.

    >>> quat_mul(np.array([0.0, 1.0, 0.0, 0.0]), np.array([0.0, 0.0, 1.0, 0.0]))  # i * j = k
    array([0., 0., 0., 1.])
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    aw, ax, ay, az = a[..., 0], a[..., 1], a[..., 2], a[..., 3]
    bw, bx, by, bz = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    return np.stack([
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ], axis=-1)


def quat_cumprod(steps: np.ndarray) -> np.ndarray:
    """Running products ``steps[i] * ... * steps[0]`` along axis 0: ``(T, *, 4) -> (T, *, 4)``.

    A parallel prefix scan (log2(T) vectorised passes) instead of T sequential products;
    quaternion products are associative, and renormalising each pass keeps them unit.

    >>> step = quat_exp(np.array([0.0, 0.0, 0.1]))
    >>> np.allclose(quat_log(quat_cumprod(np.tile(step, (5, 1)))[-1]), [0.0, 0.0, 0.5])
    True
    """
    out = quat_normalize(steps).copy()
    offset = 1
    while offset < len(out):
        nxt = out.copy()
        nxt[offset:] = quat_normalize(quat_mul(out[offset:], out[:-offset]))
        out = nxt
        offset *= 2
    return out


def quat_exp(v: np.ndarray) -> np.ndarray:
    """Rotation vector ``(*, 3)`` (axis * angle) -> unit quaternion ``(*, 4)``.

    >>> np.round(quat_exp(np.array([np.pi, 0.0, 0.0])), 6)
    array([0., 1., 0., 0.])
    """
    v = np.asarray(v, dtype=np.float64)
    angle = np.linalg.norm(v, axis=-1, keepdims=True)
    half = 0.5 * angle
    # sin(half)/angle without dividing by zero: 0.5 * sinc(half/pi) with numpy's normalised sinc
    k = 0.5 * np.sinc(half / np.pi)
    return np.concatenate([np.cos(half), k * v], axis=-1)


def quat_log(q: np.ndarray) -> np.ndarray:
    """Unit quaternion ``(*, 4)`` -> rotation vector ``(*, 3)`` of the shorter rotation (angle <= pi).

    >>> quat_log(np.array([1.0, 0.0, 0.0, 0.0]))
    array([0., 0., 0.])
    """
    q = np.asarray(q, dtype=np.float64)
    q = np.where(q[..., :1] < 0, -q, q)
    w = np.clip(q[..., :1], -1.0, 1.0)
    xyz = q[..., 1:]
    s = np.linalg.norm(xyz, axis=-1, keepdims=True)
    angle = 2.0 * np.arctan2(s, w)
    # angle / s -> 2 / w as s -> 0
    factor = np.where(s > 1e-9, angle / np.maximum(s, 1e-300), 2.0 / np.maximum(w, 1e-300))
    return factor * xyz


def quat_rotate(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Rotate vectors ``(*, 3)`` by unit quaternions ``(*, 4)``."""
    q = np.asarray(q, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    w = q[..., :1]
    u = q[..., 1:]
    t = 2.0 * np.cross(u, v)
    return v + w * t + np.cross(u, t)


def quat_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Minimal rotation ``(*, 4)`` taking direction ``a`` to direction ``b`` (both ``(*, 3)``, any length).

    Opposite directions have no unique minimal rotation; a half turn about an
    axis perpendicular to ``a`` is returned.

    >>> q = quat_between(np.array([1.0, 0.0, 0.0]), np.array([0.0, 2.0, 0.0]))
    >>> np.round(quat_rotate(q, np.array([1.0, 0.0, 0.0])), 6)
    array([0., 1., 0.])
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), _EPS)
    b = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), _EPS)
    dot = np.sum(a * b, axis=-1, keepdims=True)
    q = np.concatenate([1.0 + dot, np.cross(a, b)], axis=-1)
    opposite = (1.0 + dot[..., 0]) < 1e-9
    if np.any(opposite):
        ao = a[opposite]
        # any axis perpendicular to a: cross with the coordinate axis least aligned with it
        helper = np.eye(3)[np.argmin(np.abs(ao), axis=-1)]
        axis = np.cross(ao, helper)
        q[opposite] = np.concatenate([np.zeros((len(ao), 1)), axis], axis=-1)
    return quat_normalize(q)


def quat_continuous(q: np.ndarray, axis: int = 0) -> np.ndarray:
    """Flip signs along ``axis`` so consecutive quaternions lie in the same hemisphere (no NaNs expected).

    >>> quat_continuous(np.array([[1.0, 0, 0, 0], [-1.0, 0, 0, 0]]))[:, 0]
    array([1., 1.])
    """
    q = np.moveaxis(np.array(q, dtype=np.float64), axis, 0)
    if len(q) < 2:
        return np.moveaxis(q, 0, axis)
    # q[i] keeps its sign relative to the *flipped* q[i-1]: the running product of the signs
    # of consecutive dot products
    sign = np.where(np.sum(q[1:] * q[:-1], axis=-1) < 0, -1.0, 1.0)
    flips = np.concatenate([np.ones((1,) + sign.shape[1:]), np.cumprod(sign, axis=0)], axis=0)
    return np.moveaxis(q * flips[..., None], 0, axis)


def make_quats_continuous(q: np.ndarray) -> np.ndarray:
    """Flip signs of quaternion tracks ``(T, B, 4)`` (NaN = missing) so each track stays in one hemisphere.

    Consecutive *valid* keys are compared, so a track is continuous across gaps too
    (Blender interpolates quaternion F-curves component-wise).
    """
    q = np.array(q, dtype=np.float64)
    ok = np.isfinite(q).all(-1)  # [T, B]
    full = ok.all(0)
    if full.any() and q.shape[0] > 1:
        # tracks without gaps: all at once
        qf = q[:, full]
        dots = np.sum(qf[1:] * qf[:-1], axis=-1)
        sign = np.concatenate([np.ones((1, qf.shape[1])), np.cumprod(np.where(dots < 0, -1.0, 1.0), axis=0)])
        q[:, full] = qf * sign[..., None]
    for b in np.flatnonzero(~full):
        idx = np.flatnonzero(ok[:, b])
        if len(idx) < 2:
            continue
        qb = q[idx, b]
        dots = np.sum(qb[1:] * qb[:-1], axis=-1)
        sign = np.concatenate([[1.0], np.cumprod(np.where(dots < 0, -1.0, 1.0))])
        q[idx, b] = qb * sign[:, None]
    return q


# ----------------------------------------------------------------------------- matrices (numpy)

def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """Quaternions ``(*, 4)`` (w, x, y, z), any length -> rotation matrices ``(*, 3, 3)``.

    >>> quat_to_matrix(np.array([1.0, 0.0, 0.0, 0.0]))
    array([[1., 0., 0.],
           [0., 1., 0.],
           [0., 0., 1.]])
    """
    q = np.asarray(q, dtype=np.float64)
    q = q / np.maximum(np.linalg.norm(q, axis=-1, keepdims=True), _EPS)
    w, x, y, z = np.moveaxis(q, -1, 0)
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ], -2)


def matrix_to_quat(R: np.ndarray) -> np.ndarray:
    """Rotation matrices ``(*, 3, 3)`` -> unit quaternions ``(*, 4)`` (w, x, y, z), w >= 0.

    Shepperd's method: per matrix, divide by the largest of (trace, diagonal) for a
    well-conditioned result; each branch is evaluated only on the matrices that need it.

    >>> matrix_to_quat(np.eye(3))
    array([1., 0., 0., 0.])
    """
    R = np.asarray(R, dtype=np.float64)
    shape = R.shape[:-2]
    r = R.reshape(-1, 3, 3)
    m00, m11, m22 = r[:, 0, 0], r[:, 1, 1], r[:, 2, 2]
    k = np.argmax(np.stack([m00 + m11 + m22, m00, m11, m22], -1), axis=-1)
    out = np.empty((len(r), 4))
    for i in range(4):
        sel = np.flatnonzero(k == i)
        if not len(sel):
            continue
        m = r[sel]
        a00, a11, a22 = m[:, 0, 0], m[:, 1, 1], m[:, 2, 2]
        if i == 0:
            s = np.sqrt(np.maximum(1.0 + a00 + a11 + a22, _EPS)) * 2
            c = (0.25 * s, (m[:, 2, 1] - m[:, 1, 2]) / s, (m[:, 0, 2] - m[:, 2, 0]) / s, (m[:, 1, 0] - m[:, 0, 1]) / s)
        elif i == 1:
            s = np.sqrt(np.maximum(1.0 + a00 - a11 - a22, _EPS)) * 2
            c = ((m[:, 2, 1] - m[:, 1, 2]) / s, 0.25 * s, (m[:, 0, 1] + m[:, 1, 0]) / s, (m[:, 0, 2] + m[:, 2, 0]) / s)
        elif i == 2:
            s = np.sqrt(np.maximum(1.0 - a00 + a11 - a22, _EPS)) * 2
            c = ((m[:, 0, 2] - m[:, 2, 0]) / s, (m[:, 0, 1] + m[:, 1, 0]) / s, 0.25 * s, (m[:, 1, 2] + m[:, 2, 1]) / s)
        else:
            s = np.sqrt(np.maximum(1.0 - a00 - a11 + a22, _EPS)) * 2
            c = ((m[:, 1, 0] - m[:, 0, 1]) / s, (m[:, 0, 2] + m[:, 2, 0]) / s, (m[:, 1, 2] + m[:, 2, 1]) / s, 0.25 * s)
        out[sel] = np.stack(c, -1)
    out /= np.linalg.norm(out, axis=-1, keepdims=True)
    out = np.where(out[:, :1] < 0, -out, out)
    return out.reshape(shape + (4,))


def axis_angle_to_matrix(v: np.ndarray) -> np.ndarray:
    """Rotation vectors ``(*, 3)`` (axis times angle, radians) -> matrices ``(*, 3, 3)`` (Rodrigues).

    >>> np.round(axis_angle_to_matrix(np.array([0.0, 0.0, np.pi / 2])) @ [1.0, 0.0, 0.0], 6)
    array([0., 1., 0.])
    """
    v = np.asarray(v, dtype=np.float64)
    angle = np.linalg.norm(v, axis=-1)[..., None, None]
    axis = v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), _EPS)
    x, y, z = np.moveaxis(axis, -1, 0)
    zero = np.zeros_like(x)
    K = np.stack([np.stack([zero, -z, y], -1), np.stack([z, zero, -x], -1), np.stack([-y, x, zero], -1)], -2)
    eye = np.broadcast_to(np.eye(3), K.shape)
    return eye + np.sin(angle) * K + (1 - np.cos(angle)) * (K @ K)


def matrix_to_axis_angle(R: np.ndarray) -> np.ndarray:
    """Rotation matrices ``(*, 3, 3)`` -> rotation vectors ``(*, 3)`` with angle in [0, pi] (via quaternions).

    >>> np.round(matrix_to_axis_angle(axis_angle_to_matrix(np.array([0.3, -0.2, 0.1]))), 6)
    array([ 0.3, -0.2,  0.1])
    """
    return quat_log(matrix_to_quat(R))


def swing_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Minimal rotation ``(*, 3, 3)`` taking direction a to direction b (both ``(*, 3)``, any lengths)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), _EPS)
    b = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), _EPS)
    axis = np.cross(a, b)
    s = np.linalg.norm(axis, axis=-1)
    c = np.sum(a * b, axis=-1)
    angle = np.arctan2(s, c)
    # anti-parallel: half turn about any axis perpendicular to a
    perp = np.cross(a, np.eye(3)[np.argmin(np.abs(a), axis=-1)])
    axis = np.where(((s < 1e-9) & (c < 0))[..., None], perp, axis)
    axis = axis / np.maximum(np.linalg.norm(axis, axis=-1, keepdims=True), _EPS)
    return axis_angle_to_matrix(axis * angle[..., None])


# ----------------------------------------------------------------------------- torch (differentiable)

def skew_torch(v):
    """Cross-product matrices: tensor ``(*, 3) -> (*, 3, 3)`` with ``skew(v) @ u == v x u``."""
    import torch

    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], -1).reshape(*v.shape[:-1], 3, 3)


def axis_angle_to_matrix_torch(aa):
    """Axis-angle tensor ``(*, 3)`` -> rotation matrices ``(*, 3, 3)`` (Rodrigues); smooth at zero.

    >>> import torch
    >>> axis_angle_to_matrix_torch(torch.zeros(2, 3)).shape
    torch.Size([2, 3, 3])
    """
    import torch

    theta2 = (aa * aa).sum(-1, keepdim=True)
    theta = torch.sqrt(theta2 + 1e-16)
    # for tiny angles use the Taylor series: sin(t)/t ~ 1 - t^2/6, (1-cos t)/t^2 ~ 1/2 - t^2/24
    small = theta2 < 1e-8
    sin_t = torch.where(small, 1 - theta2 / 6, torch.sin(theta) / theta)  # sin(t)/t
    cos_t = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / theta2.clamp_min(1e-16))
    x, y, z = aa.unbind(-1)
    zero = torch.zeros_like(x)
    K = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(*aa.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device).expand_as(K)
    return eye + sin_t[..., None] * K + cos_t[..., None] * (K @ K)


def matrix_to_axis_angle_torch(R):
    """Rotation matrix tensor ``(*, 3, 3)`` -> axis-angle ``(*, 3)`` (via quaternions; stable near pi).

    >>> import torch
    >>> R = axis_angle_to_matrix_torch(torch.tensor([[0.0, 0.0, 3.0]], dtype=torch.float64))
    >>> torch.allclose(matrix_to_axis_angle_torch(R), torch.tensor([[0.0, 0.0, 3.0]], dtype=torch.float64))
    True
    """
    import torch

    m = R
    tr = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    cand = torch.stack([
        torch.stack([1 + tr, m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1),
        torch.stack([m[..., 2, 1] - m[..., 1, 2], 1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2],
                     m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0]], -1),
        torch.stack([m[..., 0, 2] - m[..., 2, 0], m[..., 0, 1] + m[..., 1, 0],
                     1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2], m[..., 1, 2] + m[..., 2, 1]], -1),
        torch.stack([m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1],
                     1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2]], -1),
    ], -2)  # [..., 4, 4]: each row proportional to (w, x, y, z)
    diag = torch.stack([1 + tr, 1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2],
                        1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2], 1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2]], -1)
    best = diag.argmax(-1)
    q = torch.gather(cand, -2, best[..., None, None].expand(*best.shape, 1, 4))[..., 0, :]
    q = q / q.norm(dim=-1, keepdim=True)
    q = torch.where(q[..., :1] < 0, -q, q)  # w >= 0: angle in [0, pi]
    w, xyz = q[..., 0], q[..., 1:]
    s = xyz.norm(dim=-1)
    angle = 2 * torch.atan2(s, w)
    scale = torch.where(s > 1e-8, angle / s.clamp_min(1e-12), 2.0 / w.clamp_min(1e-12))
    return xyz * scale[..., None]
