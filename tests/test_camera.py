import json

import numpy as np
import pytest

from engine import MarionetteError
from engine.geometry.camera import (Camera, distort_normalized, from_blender, load_cameras_json, project_points_torch,
                           save_cameras, to_blender, undistort_normalized, undistort_pixels_torch)


def _camera(dist=(0.0,) * 5, name="cam"):
    cam = Camera.look_at(name, eye=[3.0, -2.5, 1.6], target=[0.0, 0.0, 1.0], width=1088, height=1920, f_px=1650.0)
    K = cam.K.copy()
    K[0, 2] += 7.3
    K[1, 2] -= 11.1
    K[1, 1] *= 1.002
    return cam.copy(K=K, dist=np.array(dist))


def _points(n=200, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform([-0.5, -0.5, 0.0], [0.5, 0.5, 2.0], size=(n, 3))


def test_projection_matches_cv2_projectPoints():
    import cv2

    cam = _camera(dist=(-0.12, 0.09, 0.001, -0.0007, 0.01))
    X = _points()
    ours = cam.project(X)
    rvec = cv2.Rodrigues(cam.R)[0]
    ref = cv2.projectPoints(X, rvec, cam.t, cam.K, cam.dist)[0].reshape(-1, 2)
    np.testing.assert_allclose(ours, ref, atol=1e-6)


def test_projection_behind_camera_is_nan_and_batched():
    cam = _camera()
    X = np.stack([_points(10), 2 * cam.center[None] - _points(10)])  # [2, 10, 3]; second set behind the camera
    px = cam.project(X)
    assert px.shape == (2, 10, 2)
    assert np.isfinite(px[0]).all()
    assert np.isnan(px[1]).all()


def test_undistortion_round_trip_and_rational_model():
    rng = np.random.default_rng(1)
    xy = rng.uniform(-0.45, 0.45, size=(500, 2))
    for dist in ([-0.2, 0.08, 0.001, -0.002, 0.0], [-0.1, 0.02, 0.0005, 0.001, 0.003, 0.01, 0.002, 0.001]):
        d = np.array(dist)
        back = undistort_normalized(distort_normalized(xy, d), d)
        np.testing.assert_allclose(back, xy, atol=1e-9)
        early = undistort_normalized(distort_normalized(xy, d), d, iterations=50, tol=1e-10)
        np.testing.assert_allclose(early, xy, atol=1e-8)
    cam = _camera(dist=(-0.12, 0.09, 0.001, -0.0007, 0.01))
    X = _points()
    pix = cam.project(X)
    ideal = cam.project(X, distort=False)
    np.testing.assert_allclose(cam.undistort_pixels(pix), ideal, atol=1e-6)


def test_torch_projection_matches_numpy():
    torch = pytest.importorskip("torch")
    cam = _camera(dist=(-0.12, 0.09, 0.001, -0.0007, 0.01))
    X = _points(50)
    px, depth = project_points_torch(torch.tensor(X), torch.tensor(cam.K), torch.tensor(cam.R), torch.tensor(cam.t),
                                     torch.tensor(cam.dist))
    np.testing.assert_allclose(px.numpy(), cam.project(X), atol=1e-6)
    np.testing.assert_allclose(depth.numpy(), cam.world_to_camera(X)[:, 2], atol=1e-9)


def test_torch_undistortion_matches_numpy_and_batches():
    torch = pytest.importorskip("torch")
    cams = [_camera(dist=(-0.12, 0.09, 0.001, -0.0007, 0.01)), _camera(dist=(0.05, -0.02, 0.0, 0.0, 0.0))]
    X = _points(40)
    pix = np.stack([c.project(X) for c in cams])  # [2, N, 2]
    out = undistort_pixels_torch(torch.tensor(pix), torch.tensor(np.stack([c.K for c in cams])),
                                 torch.tensor(np.stack([c.dist for c in cams])))
    ref = np.stack([c.pixels_to_normalized(p) for c, p in zip(cams, pix)])
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-10)
    np.testing.assert_allclose(out.numpy(), np.stack([c.world_to_camera(X)[:, :2] / c.world_to_camera(X)[:, 2:]
                                                      for c in cams]), atol=1e-8)


def test_json_round_trip(tmp_path):
    cams = [_camera(name="a"), _camera(dist=(-0.1, 0.01, 0, 0, 0), name="b")]
    path = tmp_path / "cameras.json"
    save_cameras(path, cams)
    back = load_cameras_json(path)
    for c, b in zip(cams, back):
        assert b.name == c.name and (b.width, b.height) == (c.width, c.height)
        np.testing.assert_allclose(b.P, c.P)
        np.testing.assert_allclose(b.dist, c.dist)


def test_scaled_keeps_rays():
    cam = _camera()
    half = cam.scaled(0.5)
    X = _points(20)
    # integer-centred pixels: x_half = (x + 0.5) / 2 - 0.5
    np.testing.assert_allclose(half.project(X), (cam.project(X) + 0.5) * 0.5 - 0.5, atol=1e-9)


@pytest.mark.parametrize("bad, match", [
    (dict(K=np.zeros((3, 3))), "field 'K'"),
    (dict(K=[[1000, 0, 500], [0, 1000, 500], [0, 0, 2]]), "last row"),
    (dict(R=np.eye(3) * 2), "field 'R'"),
    (dict(t=[0, np.nan, 0]), "field 't'"),
    (dict(width=0), "image size"),
    (dict(dist=[0.1, 0.2, 0.3]), "field 'dist'"),
])
def test_bad_camera_parameters(bad, match):
    fields = dict(name="x", K=np.diag([1000.0, 1000.0, 1.0]), R=np.eye(3), t=np.zeros(3), width=640, height=480)
    fields.update(bad)
    with pytest.raises(MarionetteError, match=match):
        Camera(**fields)


def test_bad_camera_json(tmp_path):
    p = tmp_path / "c.json"
    p.write_text("{not json")
    with pytest.raises(MarionetteError, match="not valid JSON"):
        load_cameras_json(p)
    p.write_text(json.dumps({"cameras": [{"name": "a", "K": [[1, 0, 0], [0, 1, 0], [0, 0, 1]], "R": np.eye(3).tolist(),
                                          "width": 10, "height": 10}]}))
    with pytest.raises(MarionetteError, match="missing field 't'"):
        load_cameras_json(p)


# ---------------------------------------------------------------------- Blender
BLENDER_CASES = [
    # (W, H, lens, sensor_width, sensor_height, fit, shift_x, shift_y)
    (1920, 1080, 35.0, 36.0, 24.0, "AUTO", 0.0, 0.0),
    (1920, 1080, 50.0, 36.0, 24.0, "AUTO", 0.1, -0.05),
    (1088, 1920, 28.0, 36.0, 24.0, "AUTO", -0.07, 0.12),   # portrait, AUTO
    (1088, 1920, 28.0, 36.0, 24.0, "HORIZONTAL", 0.05, 0.02),
    (1088, 1920, 28.0, 30.0, 20.0, "VERTICAL", 0.05, 0.02),
    (1280, 720, 40.0, 32.0, 18.0, "VERTICAL", -0.1, 0.1),
    (640, 640, 20.0, 36.0, 24.0, "AUTO", 0.2, 0.2),
]


@pytest.fixture(scope="module")
def bpy_scene():
    bpy = pytest.importorskip("bpy")
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    data = bpy.data.cameras.new("test_cam")
    obj = bpy.data.objects.new("test_cam", data)
    scene.collection.objects.link(obj)
    scene.camera = obj
    yield bpy, scene, obj
    bpy.data.objects.remove(obj)
    bpy.data.cameras.remove(data)


def _blender_pixels(bpy, scene, obj, X):
    from bpy_extras.object_utils import world_to_camera_view
    from mathutils import Vector

    W = scene.render.resolution_x * scene.render.resolution_percentage / 100
    H = scene.render.resolution_y * scene.render.resolution_percentage / 100
    out = []
    for p in X:
        u, v, _ = world_to_camera_view(scene, obj, Vector(p))
        out.append((u * W - 0.5, (1 - v) * H - 0.5))  # engine: integer-centred pixels, y down
    return np.array(out)


@pytest.mark.parametrize("case", BLENDER_CASES)
def test_from_blender_matches_world_to_camera_view(bpy_scene, case):
    bpy, scene, obj = bpy_scene
    W, H, lens, sw, sh, fit, sx, sy = case
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = W, H, 100
    scene.render.pixel_aspect_x = scene.render.pixel_aspect_y = 1.0
    cam = obj.data
    cam.lens, cam.sensor_width, cam.sensor_height, cam.sensor_fit = lens, sw, sh, fit
    cam.shift_x, cam.shift_y = sx, sy
    obj.location = (4.0, -3.0, 1.7)
    obj.rotation_euler = (np.radians(80), np.radians(3), np.radians(52))
    bpy.context.view_layer.update()
    ours = from_blender(np.array(obj.matrix_world), lens, sw, sh, fit, sx, sy, W, H)
    X = _points(30) + np.array([0.5, 0.5, 0.2])
    ref = _blender_pixels(bpy, scene, obj, X)
    np.testing.assert_allclose(ours.project(X), ref, atol=0.01)


@pytest.mark.parametrize("size", [(1088, 1920), (1920, 1080)])
def test_to_blender_round_trip(bpy_scene, size):
    bpy, scene, obj = bpy_scene
    W, H = size
    cam = Camera.look_at("c", eye=[3.0, -2.0, 1.5], target=[0, 0, 1.0], width=W, height=H, f_px=1500.0)
    K = cam.K.copy()
    K[0, 2] += 25.0
    K[1, 2] -= 40.0
    cam = cam.copy(K=K)
    p = to_blender(cam)
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = W, H, 100
    scene.render.pixel_aspect_x, scene.render.pixel_aspect_y = p["pixel_aspect_x"], p["pixel_aspect_y"]
    d = obj.data
    d.lens, d.sensor_width, d.sensor_height = p["lens"], p["sensor_width"], p["sensor_height"]
    d.sensor_fit = p["sensor_fit"]
    d.shift_x, d.shift_y = p["shift_x"], p["shift_y"]
    from mathutils import Matrix

    obj.matrix_world = Matrix(p["matrix_world"])
    bpy.context.view_layer.update()
    X = _points(30) + np.array([0.0, 0.0, 0.2])
    np.testing.assert_allclose(cam.project(X), _blender_pixels(bpy, scene, obj, X), atol=0.01)
