"""The neural viewport and the primitive overlay on the bpy module (no window: view_draw and the
GPU drawing cannot run; what decides and produces the pictures can).

* change detection (``addon/viewport.py`` ViewportTracker) from the depsgraph: pose, frame,
  binding, visibility, background, settings; updates that cannot change the picture read nothing;
* the session: a view change asks for a new picture, the same view does not; an orthographic
  view is refused; the viewport resolution scales the picture;
* frame production: the viewport path's full-size picture at the scene camera's view and
  projection matrices equals ``marionette render`` from the same camera within 1/255;
* the overlay's properties, draw handler and geometry.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest

pytest.importorskip("bpy")
torch = pytest.importorskip("torch")

from engine.body.joint_sets import BODY_25B  # noqa: E402
from engine.geometry.camera import Camera, save_cameras, to_blender  # noqa: E402
from engine.io.skeleton_file import SkeletonSequence, save_skeleton  # noqa: E402
from engine.neural.actor.model import Actor, make_config  # noqa: E402
from engine.neural.actor.model_file import save_actor  # noqa: E402
from engine.synthetic.toy_capture import walk_sequence  # noqa: E402

pytestmark = pytest.mark.blender

W, H = 48, 40


@pytest.fixture(scope="module")
def actor_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("actor") / "tiny"
    torch.manual_seed(0)
    actor = Actor(make_config("BODY_25B", latent_dim=8, preset="tiny", per_bone=4), seed=3)
    with torch.no_grad():
        for p in actor.decoder.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    save_actor(path, actor, {"command": "test"})
    return path


@pytest.fixture(scope="module")
def skeleton_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("skel") / "walk.npz"
    save_skeleton(path, SkeletonSequence(walk_sequence(6, fps=30.0), BODY_25B, 30.0))
    return path


def _mod(sandbox, name):
    return importlib.import_module(f"{sandbox.module}.{name}")


def _camera():
    return Camera.look_at("cam", eye=[2.2, -2.6, 1.3], target=[0, 0, 0.9], width=W, height=H, f_px=60.0)


def _scene(bpy, skeleton_path, actor_path):
    from mathutils import Matrix

    scene = bpy.context.scene
    scene.render.fps = 30
    bpy.ops.marionette.import_skeleton(filepath=str(skeleton_path))
    arm = bpy.context.active_object
    assert bpy.ops.marionette.bind_actor(filepath=str(actor_path)) == {"FINISHED"}
    p = to_blender(_camera())
    data = bpy.data.cameras.new("cam")
    cam = bpy.data.objects.new("cam", data)
    scene.collection.objects.link(cam)
    cam.matrix_world = Matrix(p["matrix_world"])
    data.lens, data.sensor_width, data.sensor_fit = p["lens"], p["sensor_width"], p["sensor_fit"]
    data.shift_x, data.shift_y = p["shift_x"], p["shift_y"]
    scene.camera = cam
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = W, H, 100
    bpy.ops.marionette.setup_render()
    scene.render.film_transparent = True
    scene.frame_set(scene.frame_start + 2)
    return arm, cam


def _matrices(bpy, cam):
    """What a viewport in camera view at the render's size holds: view and window matrices."""
    dg = bpy.context.evaluated_depsgraph_get()
    return np.array(cam.matrix_world.inverted()), np.array(cam.calc_matrix_camera(dg, x=W, y=H))


def test_tracker_detects_what_changes_the_picture(blender, blender_sandbox, actor_dir, skeleton_file):
    bpy = blender
    vp = _mod(blender_sandbox, "viewport")
    arm, cam = _scene(bpy, skeleton_file, actor_dir)
    scene = bpy.context.scene
    tracker = vp.ViewportTracker()

    def update():
        return tracker.update(bpy.context.evaluated_depsgraph_get(), device="cpu")

    first = update()
    assert "initial" in first and [a.name for a in tracker.actors] == [arm.name]
    assert tracker.actors[0].joints.shape == (BODY_25B.num_joints, 3)
    assert update() == set()                                             # nothing changed
    scene.frame_set(scene.frame_current + 1)
    assert update() == {"frame", "pose"}
    arm.location.x += 0.25
    assert update() == {"pose"}
    arm.pose.bones[0].rotation_mode = "XYZ"
    arm.pose.bones[0].rotation_euler.z += 0.3
    assert update() == {"pose"}
    arm.hide_set(True)
    assert update() == {"visibility"} and tracker.actors == []
    arm.hide_set(False)
    assert update() == {"visibility"}
    arm.marionette_actor = ""
    assert update() == {"binding", "visibility"} and tracker.actors == []
    arm.marionette_actor = str(actor_dir)
    assert "binding" in update()
    scene.render.film_transparent = False
    assert update() == {"background"}
    assert tracker.update(bpy.context.evaluated_depsgraph_get(), device="cuda") == {"settings"}
    # a frame change that moves nothing is no reason to draw again
    assert not vp.picture_changed({"frame"}) and vp.picture_changed({"frame", "pose"})


def test_updates_that_cannot_change_the_picture_read_nothing(blender, blender_sandbox, actor_dir, skeleton_file):
    bpy = blender
    vp = _mod(blender_sandbox, "viewport")
    arm, cam = _scene(bpy, skeleton_file, actor_dir)
    mesh = bpy.data.objects.new("box", bpy.data.meshes.new("box"))
    bpy.context.scene.collection.objects.link(mesh)
    tracker = vp.ViewportTracker()
    seen = []

    def handler(scene, depsgraph):                   # the same list view_update receives
        seen.append(vp.ViewportTracker.update(tracker, depsgraph, list(depsgraph.updates), device="cpu"))

    bpy.app.handlers.depsgraph_update_post.append(handler)
    try:
        vl = bpy.context.view_layer
        tracker.update(bpy.context.evaluated_depsgraph_get(), device="cpu")
        reads = tracker.reads
        mesh.location.x = 1.0
        vl.update()
        assert seen[-1] == set() and tracker.reads == reads          # a mesh moved: armatures not read
        arm.location.y = 0.5
        vl.update()
        assert seen[-1] == {"pose"} and tracker.reads == reads + 1
    finally:
        bpy.app.handlers.depsgraph_update_post.remove(handler)
    assert vp.updates_may_change_picture([]) and vp.updates_may_change_picture(None)


def test_session_view_changes_and_viewport_picture_equals_marionette_render(blender, blender_sandbox, actor_dir,
                                                                            skeleton_file, tmp_path):
    bpy = blender
    vp = _mod(blender_sandbox, "viewport")
    arm, cam = _scene(bpy, skeleton_file, actor_dir)
    scene = bpy.context.scene
    assert scene.marionette_viewport_resolution == 50
    session = vp.ViewportSession()
    try:
        session.update(bpy.context.evaluated_depsgraph_get(), device="cpu")
        assert session.submitted == 0                                 # no view yet
        V, P = _matrices(bpy, cam)
        assert session.set_view_from_region(W, H, V, P, 100) and session.submitted == 1
        assert not session.set_view_from_region(W, H, V, P, 100) and session.submitted == 1   # same view
        final = session.renderer.wait(final=True, timeout=120)
        assert final is not None and final.error is None, final and final.error
        assert (final.width, final.height) == (W, H)
        assert "Marionette | 1 actor(s)" in session.status()

        # the viewport path equals marionette render from the same camera (8-bit, within 1/255)
        save_cameras(tmp_path / "cams.json", [_camera()])
        from PIL import Image

        from engine.cli import main

        row = scene.frame_current - scene.frame_start
        assert main(["render", str(actor_dir), "--skeleton", str(skeleton_file), "--camera",
                     str(tmp_path / "cams.json"), "-o", str(tmp_path / "cli"), "--frames", f"{row}-{row}",
                     "--device", "cpu", "--quiet"]) == 0
        cli = np.asarray(Image.open(tmp_path / "cli" / f"frame_{row:06d}.png").convert("RGBA")) / 255.0
        ours = np.round(np.clip(final.rgba.astype(np.float64), 0, 1) * 255) / 255
        assert np.ptp(cli[..., :3]) > 0.05
        assert np.abs(ours[..., 3] - cli[..., 3]).max() <= 1 / 255 + 1e-9
        covered = cli[..., 3] > 0.2
        assert np.abs(ours[covered, :3] - cli[covered, :3]).max() <= 1 / 255 + 1e-9
        # ... and its Blender buffer is what F12 writes (scene-linear, premultiplied, bottom row first)
        from engine.scene.compositing import to_blender_pixels

        np.testing.assert_array_equal(final.pixels, to_blender_pixels(final.rgba))

        # a pose change asks for a new picture of the same view; a smaller viewport resolution shrinks it
        scene.frame_set(scene.frame_current + 1)
        reasons = session.update(bpy.context.evaluated_depsgraph_get(), device="cpu")
        assert "pose" in reasons and session.submitted == 2
        assert session.set_view_from_region(W, H, V, P, 50) and session.camera.width == W // 2
        f = session.renderer.wait(final=True, timeout=120)
        assert (f.width, f.height) == (W // 2, H // 2) and f.generation == session.renderer.generation

        # an orthographic view is reported, not drawn
        ortho = np.diag([0.2, 0.25, -0.01, 1.0])
        assert not session.set_view_from_region(W, H, V, ortho, 100)
        assert not session.can_draw and "orthographic" in session.status()
        assert session.set_view_from_region(W, H, V, P, 100) and session.can_draw
    finally:
        session.close()
    assert session.renderer.closed


def test_engine_and_overlay_registration(blender, blender_sandbox):
    bpy = blender
    engine_cls = bpy.types.RenderEngine.bl_rna_get_subclass_py("MARIONETTE")
    assert callable(getattr(engine_cls, "view_update", None)) and callable(getattr(engine_cls, "view_draw", None))
    scene = bpy.context.scene
    assert scene.marionette_viewport_resolution == 50
    assert scene.marionette_show_primitives is False and scene.marionette_primitive_sigma == "2"
    overlay = _mod(blender_sandbox, "primitive_overlay")
    assert overlay._handle is not None


def test_overlay_geometry(blender, blender_sandbox, actor_dir, skeleton_file):
    bpy = blender
    overlay = _mod(blender_sandbox, "primitive_overlay")
    arm, _ = _scene(bpy, skeleton_file, actor_dir)
    scene = bpy.context.scene
    scene.marionette_show_primitives = True
    dg = bpy.context.evaluated_depsgraph_get()
    geo, skipped = overlay.overlay_geometry(scene, dg, 1.0, background=False)
    assert skipped == {} and list(geo) == [arm.name]
    verts, cols = geo[arm.name]
    n_prims = len(BODY_25B.bones) * 4
    from engine.scene.overlay import DEFAULT_SEGMENTS

    assert verts.shape == (n_prims * 3 * DEFAULT_SEGMENTS * 2, 3) and cols.shape == (len(verts), 4)
    # the ellipsoids sit on the armature's joints
    vp = _mod(blender_sandbox, "viewport")
    actors, _, _, _ = vp.viewport_actors(dg)
    J = actors[0].joints
    d = np.linalg.norm(verts[:, None, :] - J[None], axis=-1).min(1)
    assert np.median(d) < 0.3
    # cached until the pose changes; twice the size at 2 sigma
    again, _ = overlay.overlay_geometry(scene, dg, 1.0, background=False)
    assert again[arm.name][0] is verts
    geo2, _ = overlay.overlay_geometry(scene, dg, 2.0, background=False)
    v2 = geo2[arm.name][0]
    centre = verts.reshape(n_prims, -1, 3).mean(1, keepdims=True)
    np.testing.assert_allclose(v2.reshape(n_prims, -1, 3) - centre, 2 * (verts.reshape(n_prims, -1, 3) - centre),
                               atol=1e-5)
    arm.hide_set(True)
    geo3, _ = overlay.overlay_geometry(scene, bpy.context.evaluated_depsgraph_get(), 1.0, background=False)
    assert geo3 == {}


def test_redraw_poll_tags_each_new_picture_and_stops_when_idle(blender, blender_sandbox, actor_dir, skeleton_file,
                                                               monkeypatch):
    """The main-thread poll (bpy.app.timers; timers do not fire on the bpy module, so it is run by hand)."""
    import time

    bpy = blender
    vp = _mod(blender_sandbox, "viewport")
    arm, cam = _scene(bpy, skeleton_file, actor_dir)
    timers = []
    monkeypatch.setattr(bpy.app.timers, "register", lambda fn, first_interval=0.0: timers.append(fn))
    session = vp.ViewportSession()
    tags = []
    try:
        assert not session.start_polling(lambda: tags.append(1))           # idle, nothing new: no timer
        session.update(bpy.context.evaluated_depsgraph_get(), device="cpu")
        V, P = _matrices(bpy, cam)
        session.set_view_from_region(W, H, V, P, 100)
        assert session.start_polling(lambda: tags.append(1)) and len(timers) == 1
        assert not session.start_polling(lambda: tags.append(1))           # one poll at a time
        poll, results = timers[0], []
        deadline = time.perf_counter() + 120
        while True:
            results.append(poll())
            if results[-1] is None:
                break
            assert time.perf_counter() < deadline
            time.sleep(results[-1])
        final = session.renderer.latest()
        assert final.final and not session.renderer.busy
        assert 1 <= len(tags) <= len(results) and session._tagged_key == final.key
        session.drawn_key = final.key                                      # view_draw drew it
        assert not session.start_polling(lambda: tags.append(1))           # idle: no timer, no CPU
        # Blender freed the engine: the poll closes the session instead of failing
        session.set_view_from_region(W, H, V, np.array(P) * 1.0001, 100)
        timers.clear()

        def gone():
            raise ReferenceError("StructRNA of type MarionetteRenderEngine has been removed")

        assert session.start_polling(gone)
        session.renderer.wait(timeout=60)
        assert timers[0]() is None and session.renderer.closed
    finally:
        session.close()


def test_render_panel_shows_the_viewport_resolution(blender):
    from types import SimpleNamespace

    bpy = blender
    drawn = []

    class Layout:
        def prop(self, data, name, **kwargs):
            assert hasattr(data, name)
            drawn.append(name)

        def label(self, **kwargs):
            pass

    bpy.ops.marionette.setup_render()
    bpy.types.RENDER_PT_marionette.draw(SimpleNamespace(layout=Layout()),
                                        SimpleNamespace(scene=bpy.context.scene, preferences=bpy.context.preferences))
    assert "marionette_viewport_resolution" in drawn
