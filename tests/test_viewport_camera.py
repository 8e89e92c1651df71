"""Viewport view + projection matrices -> engine Camera (engine.geometry.camera.from_view_projection).

Checked against Blender's own mapping of 3D points into a viewport region,
``bpy_extras.view3d_utils.location_3d_to_region_2d`` (fed a fake region and RegionView3D built
from constructed matrices), against the same formula in numpy when bpy is absent, and against
a Blender camera object's projection matrix (``calc_matrix_camera``) converted by ``from_blender``.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from engine import MarionetteError
from engine.geometry.camera import Camera, from_blender, from_view_projection, to_view_projection
from engine.geometry.rotations import axis_angle_to_matrix


def _frustum(left, right, bottom, top, near, far) -> np.ndarray:
    """Blender's perspective_m4 (BLI_math_matrix), row-major."""
    P = np.zeros((4, 4))
    P[0, 0] = 2 * near / (right - left)
    P[1, 1] = 2 * near / (top - bottom)
    P[0, 2] = (right + left) / (right - left)
    P[1, 2] = (top + bottom) / (top - bottom)
    P[2, 2] = -(far + near) / (far - near)
    P[2, 3] = -2 * far * near / (far - near)
    P[3, 2] = -1.0
    return P


def _views(n=6, seed=0):
    """(view matrix, projection matrix, width, height): random rigid views and off-centre frustums."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        R = axis_angle_to_matrix(rng.normal(size=3))
        V = np.eye(4)
        V[:3, :3] = R
        V[:3, 3] = rng.uniform(-3, 3, size=3)
        W, H = int(rng.integers(120, 1900)), int(rng.integers(90, 1100))
        near = rng.uniform(0.01, 0.5)
        half_w = near * rng.uniform(0.2, 1.2)
        half_h = half_w * H / W * rng.uniform(0.8, 1.25)
        cx, cy = rng.uniform(-0.3, 0.3) * half_w, rng.uniform(-0.3, 0.3) * half_h
        out.append((V, _frustum(cx - half_w, cx + half_w, cy - half_h, cy + half_h, near, 100.0), W, H))
    return out


def _points_in_front(V, P, n=50, seed=1):
    """World points inside the view frustum (so that they project into the region)."""
    rng = np.random.default_rng(seed)
    ndc = np.column_stack([rng.uniform(-1, 1, n), rng.uniform(-1, 1, n)])
    depth = rng.uniform(0.5, 20.0, n)
    inv_p = np.linalg.inv(P)
    pts = []
    for (x, y), d in zip(ndc, depth):
        ray = inv_p @ np.array([x, y, 1.0, 1.0])
        ray = ray[:3] / ray[3]
        view_pt = ray / -ray[2] * d               # on the ray, at view depth d
        world = np.linalg.inv(V) @ np.append(view_pt, 1.0)
        pts.append(world[:3])
    return np.array(pts)


def _region_pixels_numpy(V, P, W, H, pts):
    """location_3d_to_region_2d's formula (bpy_extras/view3d_utils.py), then integer pixel centres."""
    prj = (P @ V @ np.column_stack([pts, np.ones(len(pts))]).T).T
    u = W / 2 + W / 2 * prj[:, 0] / prj[:, 3]
    v = H / 2 + H / 2 * prj[:, 1] / prj[:, 3]
    return np.column_stack([u - 0.5, H - v - 0.5])


def test_matches_region_formula_numpy():
    for V, P, W, H in _views():
        cam = from_view_projection(V, P, W, H)
        pts = _points_in_front(V, P)
        np.testing.assert_allclose(cam.project(pts), _region_pixels_numpy(V, P, W, H, pts), atol=1e-6)


def test_matches_bpy_extras_location_3d_to_region_2d():
    pytest.importorskip("bpy")  # mathutils and bpy_extras come with the bpy module
    mathutils = pytest.importorskip("mathutils")
    view3d_utils = pytest.importorskip("bpy_extras.view3d_utils")
    for V, P, W, H in _views(seed=3):
        cam = from_view_projection(V, P, W, H)
        region = SimpleNamespace(width=W, height=H)
        rv3d = SimpleNamespace(perspective_matrix=mathutils.Matrix((P @ V).tolist()),
                               view_matrix=mathutils.Matrix(V.tolist()), is_perspective=True)
        pts = _points_in_front(V, P, n=30, seed=4)
        ours = cam.project(pts)
        for p, px in zip(pts, ours):
            uv = view3d_utils.location_3d_to_region_2d(region, rv3d, p)
            assert uv is not None
            # Blender's region y grows upwards from the region's bottom edge; pixel centres at +0.5
            expected = np.array([uv[0] - 0.5, H - uv[1] - 0.5])
            np.testing.assert_allclose(px, expected, atol=2e-3)  # mathutils computes in float32


def test_round_trip_and_render_fraction():
    cam = Camera.look_at("c", eye=[2.0, -3.0, 1.5], target=[0, 0, 1], width=640, height=360, f_px=500.0)
    K = cam.K.copy()
    K[0, 2] += 13.25
    K[1, 2] -= 7.5
    K[1, 1] *= 1.01
    K[0, 1] = 0.3
    cam = cam.copy(K=K)
    V, P = to_view_projection(cam, near=0.05, far=50)
    back = from_view_projection(V, P, 640, 360)
    np.testing.assert_allclose(back.K, cam.K, atol=1e-9)
    np.testing.assert_allclose(back.R, cam.R, atol=1e-12)
    np.testing.assert_allclose(back.t, cam.t, atol=1e-12)
    # the same matrices at a fraction of the region's size = the camera scaled (integer pixel centres)
    half = from_view_projection(V, P, 320, 180)
    np.testing.assert_allclose(half.K, cam.scaled(0.5).K, atol=1e-9)
    # a uniformly scaled view matrix sees the same picture
    scaled = from_view_projection(np.diag([2.0, 2.0, 2.0, 1.0]) @ V, P, 640, 360)
    pts = np.array([[0.1, 0.2, 1.0], [-0.3, 0.0, 1.6]])
    np.testing.assert_allclose(scaled.project(pts), cam.project(pts), atol=1e-9)
    # any overall scale of the projection matrix too
    np.testing.assert_allclose(from_view_projection(V, 3.0 * P, 640, 360).K, cam.K, atol=1e-9)


def test_orthographic_and_bad_matrices_are_refused():
    cam = Camera.look_at("c", eye=[0.0, -3.0, 1.0], target=[0, 0, 1], width=64, height=48)
    V, P = to_view_projection(cam)
    ortho = np.diag([0.5, 0.6, -0.02, 1.0])
    ortho[2, 3] = -1.0
    with pytest.raises(MarionetteError, match="orthographic"):
        from_view_projection(V, ortho, 64, 48)
    sheared = V.copy()
    sheared[0, :3] *= 1.5
    with pytest.raises(MarionetteError, match="rotation"):
        from_view_projection(sheared, P, 64, 48)
    mirrored = V.copy()
    mirrored[0, :3] *= -1
    with pytest.raises(MarionetteError, match="rotation"):
        from_view_projection(mirrored, P, 64, 48)
    bad = P.copy()
    bad[0, 3] = 0.2
    with pytest.raises(MarionetteError, match="pinhole"):
        from_view_projection(V, bad, 64, 48)
    nan = V.copy()
    nan[0, 0] = math.nan
    with pytest.raises(MarionetteError, match="NaN"):
        from_view_projection(nan, P, 64, 48)
    with pytest.raises(MarionetteError, match="width"):
        from_view_projection(V, P, 0, 48)
    with pytest.raises(MarionetteError, match="shape"):
        from_view_projection(V[:3], P, 64, 48)


def test_blender_camera_view_equals_from_blender(blender):
    """In camera view the viewport's matrices are the camera's: the result matches from_blender."""
    bpy = blender
    from mathutils import Euler, Vector

    data = bpy.data.cameras.new("cam")
    obj = bpy.data.objects.new("cam", data)
    bpy.context.scene.collection.objects.link(obj)
    obj.location = Vector((2.5, -3.0, 1.4))
    obj.rotation_euler = Euler((1.2, 0.1, 0.7))
    for W, H, fit, shift in ((640, 360, "AUTO", (0.1, -0.05)), (300, 500, "AUTO", (0.0, 0.12)),
                             (512, 512, "VERTICAL", (-0.07, 0.0))):
        data.lens, data.sensor_width, data.sensor_height, data.sensor_fit = 35.0, 36.0, 24.0, fit
        data.shift_x, data.shift_y = shift
        depsgraph = bpy.context.evaluated_depsgraph_get()
        window = np.array(obj.calc_matrix_camera(depsgraph, x=W, y=H))
        view = np.array(obj.matrix_world.inverted())
        cam = from_view_projection(view, window, W, H)
        ref = from_blender(np.array(obj.matrix_world), data.lens, data.sensor_width, data.sensor_height,
                           data.sensor_fit, data.shift_x, data.shift_y, W, H)
        np.testing.assert_allclose(cam.K, ref.K, atol=5e-3 * max(W, H) / 100)
        np.testing.assert_allclose(cam.R, ref.R, atol=1e-5)
        np.testing.assert_allclose(cam.t, ref.t, atol=1e-5)
