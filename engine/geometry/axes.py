"""Up axes: the one place that turns ``"Y"``, ``"-Z"``... into vectors, rotations and view frames.

Marionette works Z-up like Blender. Files may be Y-up (OpenPose/Pose2Sim exports,
AMASS) or another axis; ``up_axis_matrix`` is the rotation Blender's own importers use
(right-handed: Y-up becomes Z-up by +90 degrees about X, ``(x, y, z) -> (x, -z, y)``).

>>> up_axis_matrix("Y") @ [0.0, 1.0, 0.0]
array([0., 0., 1.])
>>> up_vector("-Y")
array([ 0., -1.,  0.])
"""

from __future__ import annotations

import numpy as np

from engine import MarionetteError

__all__ = ["UP_AXES", "up_axis_matrix", "to_z_up", "up_vector", "view_frame"]

# File up axis -> rotation taking it to Blender's +Z (right-handed, as Blender's own importers do:
# Y-up becomes Z-up by +90 degrees about X, so the file's -Z "forward" becomes Blender's +Y... i.e. (x, y, z) -> (x, -z, y)).
_UP_AXIS = {
    "Z": ((1, 0, 0), (0, 1, 0), (0, 0, 1)),
    "Y": ((1, 0, 0), (0, 0, -1), (0, 1, 0)),
    "X": ((0, 0, -1), (0, 1, 0), (1, 0, 0)),
    "-Z": ((1, 0, 0), (0, -1, 0), (0, 0, -1)),
    "-Y": ((1, 0, 0), (0, 0, 1), (0, -1, 0)),
    "-X": ((0, 0, 1), (0, 1, 0), (-1, 0, 0)),
}
UP_AXES = tuple(_UP_AXIS)


def up_axis_matrix(axis: str) -> np.ndarray:
    """Rotation ``(3, 3)`` taking coordinates with the given up axis to Blender's Z-up.

    >>> up_axis_matrix("+Z")
    array([[1., 0., 0.],
           [0., 1., 0.],
           [0., 0., 1.]])
    """
    key = str(axis).upper().strip()
    if key.startswith("+"):
        key = key[1:]
    if key not in _UP_AXIS:
        raise MarionetteError(f"up axis {axis!r}: expected one of {', '.join(_UP_AXIS)}")
    return np.array(_UP_AXIS[key], dtype=np.float64)


def to_z_up(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a signed axis permutation ``matrix`` ``(3, 3)`` (e.g. ``up_axis_matrix("Y")``) to points ``(*, 3)``.

    Exact and NaN-safe (coordinates are copied and negated, never multiplied by zeros), so a
    missing coordinate stays in its own axis.

    >>> to_z_up(np.array([[1.0, 2.0, np.nan]]), up_axis_matrix("Y"))
    array([[ 1., nan,  2.]])
    """
    m = np.asarray(matrix)
    p = np.asarray(points, dtype=np.float64)
    src = np.abs(m).argmax(axis=1)
    sign = m[np.arange(3), src]
    return np.stack([sign[i] * p[..., src[i]] for i in range(3)], -1)


def up_vector(up) -> np.ndarray:
    """``"Z"``, ``"-Y"``... or a 3-vector -> unit vector ``(3,)``."""
    if isinstance(up, str):
        axis = up.strip().upper()
        sign = -1.0 if axis.startswith("-") else 1.0
        key = axis.lstrip("+-")
        if key not in ("X", "Y", "Z"):
            raise MarionetteError(f"up axis: expected X, Y, Z (optionally with '-'), got {up!r}")
        v = np.zeros(3)
        v["XYZ".index(key)] = sign
        return v
    v = np.asarray(up, dtype=np.float64).reshape(3)
    n = np.linalg.norm(v)
    if not np.isfinite(n) or n < 1e-9:
        raise MarionetteError(f"up vector: expected a non-zero 3-vector, got {up!r}")
    return v / n


def view_frame(up_axis: str) -> np.ndarray:
    """Rows ``(3, 3)``: world directions of (right, forward, up) for a viewer standing on the ``up_axis`` floor.

    >>> view_frame("Z")
    array([[1., 0., 0.],
           [0., 1., 0.],
           [0., 0., 1.]])
    """
    axes = {"X": 0, "Y": 1, "Z": 2}
    sign = -1.0 if up_axis.startswith("-") else 1.0
    u = axes[up_axis[-1]]
    up = np.zeros(3)
    up[u] = sign
    others = [i for i in range(3) if i != u]
    right = np.zeros(3)
    right[others[0]] = 1.0
    fwd = np.cross(up, right)
    return np.stack([right, fwd, up])
