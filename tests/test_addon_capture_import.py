"""File > Import > Marionette Capture (folder), driven through the installed extension: cameras that
project exactly like the engine's (crop cameras with off-centre principal points included), the
skeleton as a keyed armature, scene frame rate and range, and broken captures that leave no trace."""

from __future__ import annotations

import importlib
import json
import shutil

import numpy as np
import pytest

pytest.importorskip("bpy")

from blender_sandbox import data_counts  # noqa: E402
from engine.geometry import axes  # noqa: E402
from engine.geometry.camera import Camera, load_cameras_json, save_cameras, to_blender  # noqa: E402
from engine.io.capture_folder import load_capture  # noqa: E402
from engine.synthetic.toy_capture import make_toy_capture  # noqa: E402

pytestmark = pytest.mark.blender

PX = 0.01  # pixels: Blender's camera must project like the engine's


def _mod(sandbox, name):
    return importlib.import_module(f"{sandbox.module}.{name}")


@pytest.fixture(scope="module")
def toy_capture(tmp_path_factory):
    """3 cameras x 3 frames x 48 px, made once; tests that change it work on a copy."""
    return make_toy_capture(tmp_path_factory.mktemp("captures") / "toy", cameras=3, frames=3, size=48,
                            heldout_cameras=1)


@pytest.fixture
def capture_copy(toy_capture, tmp_path):
    def copy(name="shot"):
        return shutil.copytree(toy_capture, tmp_path / name)
    return copy


def _blender_pixels(bpy, obj, camera: Camera, points) -> np.ndarray:
    """Pixels (engine convention: integer pixel centres) of world points seen through ``obj``, with the
    scene resolution (and pixel aspect) of ``camera``."""
    from bpy_extras.object_utils import world_to_camera_view
    from mathutils import Vector

    scene = bpy.context.scene
    p = to_blender(camera)
    r = scene.render
    r.resolution_x, r.resolution_y, r.resolution_percentage = camera.width, camera.height, 100
    r.pixel_aspect_x, r.pixel_aspect_y = p["pixel_aspect_x"], p["pixel_aspect_y"]
    W, H = camera.width, camera.height
    out = []
    for q in np.asarray(points, dtype=np.float64).reshape(-1, 3):
        x, y, _ = world_to_camera_view(scene, obj, Vector(q.tolist()))
        out.append((x * W - 0.5, (1.0 - y) * H - 0.5))
    return np.array(out)


def _assert_projects_like(bpy, obj, camera: Camera, world_points, blender_points=None):
    """``obj`` sees ``blender_points`` (default: the same points) where ``camera`` sees ``world_points``."""
    world_points = np.asarray(world_points, dtype=np.float64).reshape(-1, 3)
    blender_points = world_points if blender_points is None else blender_points
    want = camera.project(world_points)
    assert np.isfinite(want).all()
    got = _blender_pixels(bpy, obj, camera, blender_points)
    err = np.abs(got - want).max()
    assert err < PX, f"camera {camera.name}: Blender projection differs by {err:.4f} px"


def _scene_state(bpy):
    scene = bpy.context.scene
    r = scene.render
    return dict(frames=(scene.frame_start, scene.frame_end, scene.frame_current), fps=(r.fps, r.fps_base),
                res=(r.resolution_x, r.resolution_y, r.resolution_percentage, r.pixel_aspect_x, r.pixel_aspect_y),
                camera=scene.camera.name if scene.camera else None, objects=sorted(bpy.data.objects.keys()),
                collections=sorted(bpy.data.collections.keys()), counts=data_counts(bpy))


def _assert_cancelled_without_trace(bpy, call, match):
    before = _scene_state(bpy)
    with pytest.raises(RuntimeError, match=match):
        call()
    assert _scene_state(bpy) == before


def _world_points(cap):
    """All joints of all frames plus a few points off the body (near the image corners too)."""
    X = cap.skeleton.joints.reshape(-1, 3).astype(np.float64)
    X = X[np.isfinite(X).all(-1)]
    extra = np.array([[0.0, 0.0, 0.0], [0.6, -0.4, 1.9], [-0.7, 0.5, 0.2], [0.3, 0.3, 1.0]])
    return np.concatenate([X, extra])


# ----------------------------------------------------------------------------- registration


def test_registered_with_undo_and_in_file_import_menu(blender):
    bpy = blender
    cls = bpy.types.MARIONETTE_OT_import_capture
    assert {"REGISTER", "UNDO"} <= set(cls.bl_options)
    assert hasattr(bpy.ops.marionette, "import_capture")
    drawn = [getattr(f, "__module__", "") for f in bpy.types.TOPBAR_MT_file_import._dyn_ui_initialize()]
    assert any(m.endswith("marionette.ops_capture") for m in drawn)


# ----------------------------------------------------------------------------- a good capture


def test_import_capture_cameras_skeleton_collection_and_scene(blender, blender_sandbox, toy_capture):
    bpy = blender
    cap = load_capture(toy_capture, require_masks=False)
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = 24, 1.0
    assert bpy.ops.marionette.import_capture(filepath=str(toy_capture / "capture.json")) == {"FINISHED"}

    coll = bpy.data.collections["toy"]
    assert coll.name in scene.collection.children
    names = [c.name for c in cap.cameras]
    assert names == ["cam00", "cam01", "cam02"]
    cams = {o.name: o for o in coll.objects if o.type == "CAMERA"}
    assert sorted(cams) == names
    arms = [o for o in coll.objects if o.type == "ARMATURE"]
    assert len(arms) == 1 and len(coll.objects) == 4
    # nothing imported outside the collection
    assert not [o for o in scene.collection.objects]

    # every camera projects the capture's joints (and points off the body) like the engine camera
    points = _world_points(cap)
    for cam in cap.cameras:
        obj = cams[cam.name]
        assert obj["marionette_camera"] == cam.name
        assert list(obj["marionette_resolution"]) == [cam.width, cam.height]
        _assert_projects_like(bpy, obj, cam, points)

    # scene: the capture's frame rate, its frames from frame 1, the first camera and its resolution
    assert (scene.render.fps, scene.render.fps_base) == (30, 1.0)
    assert (scene.frame_start, scene.frame_end) == (1, 3)
    assert scene.camera == cams["cam00"]
    assert (scene.render.resolution_x, scene.render.resolution_y) == (48, 48)

    # the armature: keyed on every capture frame and reproducing the capture's joints
    arm = arms[0]
    assert arm["marionette_joint_set"] == cap.joint_set.name == "BODY_25B"
    assert arm["marionette_fps"] == 30.0 and arm["marionette_source"].endswith("joints3d.npz")
    fcurves = _mod(blender_sandbox, "fcurves")
    action = arm.animation_data.action
    assert action is not None
    fc = fcurves.find_fcurve(action, arm, 'pose.bones["LKnee"].rotation_quaternion', 0)
    frames, _ = fcurves.read_keys(fc)
    assert list(frames) == [1, 2, 3]
    pose_read = _mod(blender_sandbox, "pose_read")
    for f in range(3):
        scene.frame_set(1 + f)
        Y = pose_read.evaluated_joints(arm, bpy.context.evaluated_depsgraph_get())
        assert np.abs(Y - cap.skeleton.joints[f]).max() < 1e-3


def test_off_centre_crop_cameras_frame_offset_and_fractional_fps(blender, blender_sandbox, capture_copy):
    """Square crops whose principal point is far from the centre (as ``marionette ingest`` writes them):
    that is Blender's lens shift, different in x and y; one camera also has non-square pixels."""
    bpy = blender
    root = capture_copy("crops")
    cams = load_cameras_json(root / "cameras.json")
    offsets = [(0.31, 0.68, 1.0), (0.74, 0.22, 1.0), (0.58, 0.41, 1.12)]  # cx/W, cy/H, fy/fx
    crops = []
    for cam, (ax, ay, aspect) in zip(cams, offsets):
        K = cam.K.copy()
        K[0, 2], K[1, 2], K[1, 1] = ax * cam.width, ay * cam.height, K[0, 0] * aspect
        crops.append(cam.copy(K=K))
    save_cameras(root / "cameras.json", crops)
    doc = json.loads((root / "capture.json").read_text())
    doc["fps"] = 30000 / 1001
    (root / "capture.json").write_text(json.dumps(doc))
    cap = load_capture(root, require_masks=False)

    # the folder itself works as well as its capture.json
    assert bpy.ops.marionette.import_capture(filepath=str(root), start_frame=10) == {"FINISHED"}
    coll = bpy.data.collections["crops"]
    points = _world_points(cap)
    for cam in crops:
        obj = coll.objects[cam.name]
        assert abs(obj.data.shift_x) > 0.05 and abs(obj.data.shift_y) > 0.05
        assert abs(abs(obj.data.shift_x) - abs(obj.data.shift_y)) > 0.01
        _assert_projects_like(bpy, obj, cam, points)
    scene = bpy.context.scene
    assert (scene.frame_start, scene.frame_end) == (10, 12)
    assert scene.render.fps == 30 and abs(scene.render.fps / scene.render.fps_base - 30000 / 1001) < 1e-4
    arm = next(o for o in coll.objects if o.type == "ARMATURE")
    fcurves = _mod(blender_sandbox, "fcurves")
    fc = fcurves.find_fcurve(arm.animation_data.action, arm, 'pose.bones["Neck"].location', 0)
    assert list(fcurves.read_keys(fc)[0]) == [10, 11, 12]


def test_hand_built_cameras_project_like_the_engine(blender, blender_sandbox):
    """The camera glue on its own, for shapes a toy capture does not have: landscape and portrait
    frames, principal points far off-centre, non-square pixels, a Y-up world."""
    bpy = blender
    ops_capture = _mod(blender_sandbox, "ops_capture")
    compat = _mod(blender_sandbox, "compat")
    rng = np.random.default_rng(7)
    points = rng.uniform([-0.5, -0.5, 0.2], [0.5, 0.5, 1.8], size=(40, 3))
    base = Camera.look_at("base", (2.5, -2.0, 1.4), (0.0, 0.0, 1.0), 1920, 1080, f_px=1400.0)

    def with_k(name, W, H, fx, fy, cx, cy):
        return base.copy(name=name, K=np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]]), width=W, height=H)

    cameras = [
        with_k("landscape", 1920, 1080, 1400.0, 1400.0, 1100.3, 420.7),
        with_k("portrait", 48, 64, 60.0, 60.0, 17.2, 40.9),
        with_k("crop256", 256, 256, 310.0, 310.0, 201.5, 77.25),
        with_k("tall_pixels", 64, 40, 50.0, 58.0, 30.0, 12.0),
        with_k("wide_pixels", 40, 64, 57.0, 49.0, 25.0, 36.0),
    ]
    with compat.Transaction(bpy.context) as tx:
        coll = tx.add(bpy.data.collections.new("hand"))
        bpy.context.scene.collection.children.link(coll)
        objs = [ops_capture.create_camera(tx, coll, cam) for cam in cameras]
    for cam, obj in zip(cameras, objs):
        _assert_projects_like(bpy, obj, cam, points)

    # a Y-up capture: the camera moves with the world (x' = C x), pixels stay where they were
    C = axes.up_axis_matrix("Y")
    cam = cameras[2]
    with compat.Transaction(bpy.context) as tx:
        obj = ops_capture.create_camera(tx, coll, cam.in_world(C), "yup")
    _assert_projects_like(bpy, obj, cam, points, blender_points=points @ C.T)

    # a field of view Blender cannot hold (lens < 1 mm) is refused, not silently clamped
    counts = data_counts(bpy)
    with pytest.raises(Exception, match="'fisheye': Blender cannot represent"):
        with compat.Transaction(bpy.context) as tx:
            ops_capture.create_camera(tx, coll, with_k("fisheye", 64, 64, 1.0, 1.0, 31.5, 31.5))
    assert data_counts(bpy) == counts


def test_up_axis_override_turns_cameras_and_skeleton_together(blender, blender_sandbox, toy_capture):
    bpy = blender
    cap = load_capture(toy_capture, require_masks=False)
    assert bpy.ops.marionette.import_capture(filepath=str(toy_capture), up_axis="Y") == {"FINISHED"}
    C = axes.up_axis_matrix("Y")
    coll = bpy.data.collections["toy"]
    points = _world_points(cap)
    for cam in cap.cameras:
        _assert_projects_like(bpy, coll.objects[cam.name], cam, points, blender_points=points @ C.T)
    arm = next(o for o in coll.objects if o.type == "ARMATURE")
    pose_read = _mod(blender_sandbox, "pose_read")
    bpy.context.scene.frame_set(2)
    Y = pose_read.evaluated_joints(arm, bpy.context.evaluated_depsgraph_get())
    assert np.abs(Y - cap.skeleton.joints[1] @ C.T).max() < 1e-3


def test_full_frame_cameras_option(blender, capture_copy):
    bpy = blender
    root = capture_copy("ingested")
    crops = load_cameras_json(root / "cameras.json")
    full = []
    for i, cam in enumerate(crops):
        K = np.array([[1500.0 + 50 * i, 0, 980.0 - 30 * i], [0, 1500.0 + 50 * i, 520.0 + 20 * i], [0, 0, 1]])
        full.append(cam.copy(K=K, width=1920, height=1080))
    save_cameras(root / "cameras_full.json", full[::-1])  # order does not matter, names do
    cap = load_capture(root, require_masks=False)
    points = _world_points(cap)

    assert bpy.ops.marionette.import_capture(filepath=str(root / "capture.json"), full_frame_cameras=True) \
        == {"FINISHED"}
    coll = bpy.data.collections["ingested"]
    scene = bpy.context.scene
    assert (scene.render.resolution_x, scene.render.resolution_y) == (1920, 1080)
    for cam in full:
        obj = coll.objects[cam.name]
        assert list(obj["marionette_resolution"]) == [1920, 1080]
        _assert_projects_like(bpy, obj, cam, points)

    # off by default: the crop cameras
    assert bpy.ops.marionette.import_capture(filepath=str(root / "capture.json")) == {"FINISHED"}
    coll2 = bpy.data.collections["ingested.001"]
    assert list(coll2.objects["cam00.001"]["marionette_resolution"]) == [48, 48]
    _assert_projects_like(bpy, coll2.objects["cam00.001"], crops[0], points)


# ----------------------------------------------------------------------------- broken captures


def test_broken_captures_leave_the_scene_untouched(blender, toy_capture, capture_copy, tmp_path):
    bpy = blender
    # something already in the scene (and non-default scene settings) must survive untouched
    assert bpy.ops.marionette.import_capture(filepath=str(toy_capture)) == {"FINISHED"}
    r = bpy.context.scene.render
    r.fps, r.resolution_x, r.resolution_y = 24, 320, 200

    incomplete = capture_copy("incomplete")
    doc = json.loads((incomplete / "capture.json").read_text())
    doc["complete"] = False
    (incomplete / "capture.json").write_text(json.dumps(doc))
    no_cameras = capture_copy("no_cameras")
    (no_cameras / "cameras.json").unlink()
    singular = capture_copy("singular")
    cams = json.loads((singular / "cameras.json").read_text())
    cams["cameras"][1]["K"] = [[0, 0, 24], [0, 0, 24], [0, 0, 1]]
    (singular / "cameras.json").write_text(json.dumps(cams))
    no_joints = capture_copy("no_joints")
    (no_joints / "joints3d.npz").unlink()
    bad_full = capture_copy("bad_full")
    full = load_cameras_json(bad_full / "cameras.json")[:2]
    save_cameras(bad_full / "cameras_full.json", full)
    up_clash = capture_copy("up_clash")
    doc = json.loads((up_clash / "capture.json").read_text())
    doc["up_axis"] = "Y"
    (up_clash / "capture.json").write_text(json.dumps(doc))

    cases = [
        (dict(filepath=str(incomplete / "capture.json")), r"capture\.json: field 'complete' is not true"),
        (dict(filepath=str(no_cameras / "capture.json")), r"cameras\.json: camera file not found"),
        (dict(filepath=str(singular)), r"cameras\.json: cameras\[1\].*field 'K'"),
        (dict(filepath=str(no_joints)), r"joints3d\.npz"),
        (dict(filepath=str(tmp_path / "nowhere")), r"nowhere: capture folder not found"),
        (dict(filepath=str(toy_capture), full_frame_cameras=True), r"cameras_full\.json: file not found"),
        (dict(filepath=str(bad_full), full_frame_cameras=True), r"cameras_full\.json: no camera named \['cam02'\]"),
        (dict(filepath=str(up_clash)), r"capture\.json: field 'up_axis' is 'Y' but joints3d\.npz says 'Z'"),
    ]
    for kwargs, match in cases:
        _assert_cancelled_without_trace(bpy, lambda: bpy.ops.marionette.import_capture(**kwargs), match)


def test_failure_after_cameras_exist_rolls_everything_back(blender, blender_sandbox, toy_capture, monkeypatch):
    """A failure late in the import (cameras, collection and armature already made, scene settings
    already changed) removes all of it and puts the scene settings back."""
    bpy = blender
    scene = bpy.context.scene
    scene.render.fps, scene.render.resolution_x, scene.render.resolution_y = 24, 320, 200
    scene.frame_start, scene.frame_end = 5, 50
    armature = _mod(blender_sandbox, "armature")

    def boom(*args, **kwargs):
        raise ValueError("simulated failure while keying")

    monkeypatch.setattr(armature, "key_animation", boom)
    _assert_cancelled_without_trace(bpy, lambda: bpy.ops.marionette.import_capture(filepath=str(toy_capture)),
                                    "simulated failure.*nothing was imported")
    assert scene.camera is None and scene.render.fps == 24
    monkeypatch.undo()
    assert bpy.ops.marionette.import_capture(filepath=str(toy_capture)) == {"FINISHED"}
    assert scene.render.fps == 30 and scene.camera.name == "cam00"
