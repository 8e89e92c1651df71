"""The Marionette render engine inside Blender (bpy module, extension installed in a sandbox)."""

from __future__ import annotations

import numpy as np
import pytest

from blender_sandbox import data_counts

pytest.importorskip("bpy")
torch = pytest.importorskip("torch")

from engine.neural.actor.model import Actor, make_config  # noqa: E402
from engine.neural.actor.model_file import save_actor  # noqa: E402
from engine.synthetic.toy_capture import walk_sequence  # noqa: E402
from engine.geometry.camera import Camera, save_cameras, to_blender  # noqa: E402
from engine.io.skeleton_file import SkeletonSequence, save_skeleton  # noqa: E402
from engine.body.joint_sets import BODY_25B  # noqa: E402

W, H = 48, 40


@pytest.fixture(scope="module")
def actor_dir(tmp_path_factory):
    """An untrained actor with random weights: enough to compare pixels exactly."""
    path = tmp_path_factory.mktemp("actor") / "demo"
    torch.manual_seed(0)
    actor = Actor(make_config("BODY_25B", latent_dim=8, preset="tiny"), seed=3)
    with torch.no_grad():  # make the decoder's output vary visibly over the body
        for p in actor.decoder.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    save_actor(path, actor, {"command": "test"})
    return path


@pytest.fixture(scope="module")
def skeleton_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("skel") / "walk.npz"
    joints = walk_sequence(4, fps=30.0)
    save_skeleton(path, SkeletonSequence(joints, BODY_25B, 30.0))
    return path, joints


def _camera():
    return Camera.look_at("cam", eye=[2.2, -2.6, 1.3], target=[0, 0, 0.9], width=W, height=H, f_px=60.0)


def _setup_scene(bpy, skeleton_path, actor_path, camera, transparent=True):
    bpy.context.scene.render.fps = 30  # same rate as the file: frame N is row N - frame_start
    bpy.ops.marionette.import_skeleton(filepath=str(skeleton_path))
    arm = bpy.context.active_object
    bpy.ops.marionette.bind_actor(filepath=str(actor_path))
    p = to_blender(camera)
    cam_data = bpy.data.cameras.new("cam")
    cam_obj = bpy.data.objects.new("cam", cam_data)
    bpy.context.scene.collection.objects.link(cam_obj)
    from mathutils import Matrix

    cam_obj.matrix_world = Matrix(p["matrix_world"])
    cam_data.lens, cam_data.sensor_width, cam_data.sensor_fit = p["lens"], p["sensor_width"], p["sensor_fit"]
    cam_data.shift_x, cam_data.shift_y = p["shift_x"], p["shift_y"]
    scene = bpy.context.scene
    scene.camera = cam_obj
    scene.render.resolution_x, scene.render.resolution_y = W, H
    scene.render.resolution_percentage = 100
    scene.render.pixel_aspect_x, scene.render.pixel_aspect_y = p["pixel_aspect_x"], p["pixel_aspect_y"]
    bpy.ops.marionette.setup_render()
    scene.render.film_transparent = transparent
    return arm


def _render_png(bpy, path):
    scene = bpy.context.scene
    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGBA")).astype(np.float64) / 255.0


def test_f12_equals_marionette_render(blender, tmp_path, actor_dir, skeleton_file):
    bpy = blender
    skel_path, joints = skeleton_file
    cam = _camera()
    _setup_scene(bpy, skel_path, actor_dir, cam)
    frame = bpy.context.scene.frame_start + 2
    bpy.context.scene.frame_set(frame)
    blender_img = _render_png(bpy, tmp_path / "f12.png")

    cams = tmp_path / "cams.json"
    save_cameras(cams, [cam])
    from engine.cli import main

    assert main(["render", str(actor_dir), "--skeleton", str(skel_path), "--camera", str(cams), "-o",
                 str(tmp_path / "cli"), "--frames", "2-2", "--quiet"]) == 0
    from PIL import Image

    cli_img = np.asarray(Image.open(tmp_path / "cli" / "frame_000002.png").convert("RGBA")).astype(np.float64) / 255
    assert blender_img.shape == cli_img.shape == (H, W, 4)
    assert np.ptp(cli_img[..., :3]) > 0.05, "the actor should be in view (an untrained actor still varies)"
    # alpha everywhere; colour where there is enough coverage for 8-bit straight colour to be defined
    assert np.abs(blender_img[..., 3] - cli_img[..., 3]).max() <= 1.0 / 255 + 1e-9
    covered = cli_img[..., 3] > 0.2
    assert np.abs(blender_img[covered, :3] - cli_img[covered, :3]).max() <= 1.0 / 255 + 1e-9


def test_world_background_and_two_actors_composite(blender, tmp_path, actor_dir, skeleton_file):
    bpy = blender
    skel_path, _ = skeleton_file
    _setup_scene(bpy, skel_path, actor_dir, _camera(), transparent=True)
    scene = bpy.context.scene
    if scene.world is None:
        scene.world = bpy.data.worlds.new("w")
    world = scene.world
    world.color = (0.2, 0.5, 0.1)
    if world.node_tree is not None:
        for node in world.node_tree.nodes:
            if node.type == "BACKGROUND":
                node.inputs["Color"].default_value = (0.2, 0.5, 0.1, 1.0)
                node.inputs["Strength"].default_value = 1.0
    straight = _render_png(bpy, tmp_path / "transparent.png")
    scene.render.film_transparent = False
    opaque = _render_png(bpy, tmp_path / "opaque.png")
    from engine.scene.compositing import linear_to_srgb

    bg = linear_to_srgb(np.array([0.2, 0.5, 0.1]))
    a = straight[..., 3:4]
    expected = straight[..., :3] * a + bg * (1 - a)
    assert np.allclose(opaque[..., 3], 1.0)
    assert np.abs(opaque[..., :3] - expected).max() < 3 / 255
    # a second actor nearer the camera changes the picture where it covers the first
    bpy.ops.marionette.import_skeleton(filepath=str(skel_path), object_name="second")
    second = bpy.context.active_object
    bpy.ops.marionette.bind_actor(filepath=str(actor_dir))
    second.location = (0.4, -0.6, 0.0)
    two = _render_png(bpy, tmp_path / "two.png")
    assert np.abs(two - opaque).max() > 0.05


def test_errors_are_reported_and_change_nothing(blender, tmp_path, actor_dir, skeleton_file):
    bpy = blender
    skel_path, _ = skeleton_file
    arm = _setup_scene(bpy, skel_path, actor_dir, _camera())
    scene = bpy.context.scene
    before = data_counts(bpy)
    # orthographic camera
    scene.camera.data.type = "ORTHO"
    with pytest.raises(RuntimeError):
        _render_png(bpy, tmp_path / "ortho.png")
    scene.camera.data.type = "PERSP"
    # no camera
    cam = scene.camera
    scene.camera = None
    with pytest.raises(RuntimeError):
        bpy.ops.render.render(write_still=False)
    scene.camera = cam
    # actor folder deleted between frames: the armature is skipped and the render says so
    arm.marionette_actor = str(tmp_path / "gone")
    with pytest.raises(RuntimeError):
        _render_png(bpy, tmp_path / "gone.png")
    assert data_counts(bpy)["objects"] == before["objects"]


def test_bind_estimates_joints_a_set_lacks_and_refuses_a_generic_skeleton(blender, tmp_path, actor_dir):
    bpy = blender
    from engine.body.joint_sets import H36M_17

    path = tmp_path / "h36m.npz"
    j = np.random.default_rng(0).normal(size=(3, 17, 3)) * 0.3 + [0, 0, 1]
    save_skeleton(path, SkeletonSequence(j, H36M_17, 30.0))
    bpy.ops.marionette.import_skeleton(filepath=str(path))
    arm = bpy.context.active_object
    # H3.6M has no eyes, ears or feet: the BODY_25B actor's are estimated (engine.body.joint_sets.ESTIMATED)
    assert bpy.ops.marionette.bind_actor(filepath=str(actor_dir)) == {"FINISHED"}
    assert arm.marionette_actor == str(actor_dir)
    # joint names of no known set: a generic armature, which no actor can use
    names = ["a", "b", "c"]
    np.savez(tmp_path / "generic.npz", joints=j[:, :3], joint_names=np.array(names), parents=np.array([-1, 0, 1]),
             fps=30.0)
    bpy.ops.marionette.import_skeleton(filepath=str(tmp_path / "generic.npz"))
    gen = bpy.context.active_object
    with pytest.raises(RuntimeError, match="cannot bind.*generic skeleton"):
        bpy.ops.marionette.bind_actor(filepath=str(actor_dir))
    assert gen.marionette_actor == ""


def test_render_batch_script_resumes_and_chunks(blender, tmp_path, actor_dir, skeleton_file):
    """scripts/render_batch.py on the bpy module: a chunk of frames, then a resumed re-run."""
    import subprocess
    import sys
    from pathlib import Path

    bpy = blender
    skel_path, _ = skeleton_file
    _setup_scene(bpy, skel_path, actor_dir, _camera())
    blend = tmp_path / "shot.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    script = Path(__file__).resolve().parent.parent / "scripts" / "render_batch.py"
    out = tmp_path / "frames"
    (out).mkdir()
    (out / "frame_000002.png").write_bytes(b"")  # pretend frame 2 is done: it must be skipped
    run = subprocess.run([sys.executable, str(script), str(blend), "--frames", "1-3", "-o", str(out)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "rendered 2, skipped 1" in run.stdout
    assert sorted(p.name for p in out.glob("frame_*.png")) == ["frame_000001.png", "frame_000002.png",
                                                               "frame_000003.png"]
    assert (out / "frame_000001.png").stat().st_size > 100
    again = subprocess.run([sys.executable, str(script), str(blend), "--frames", "1-3", "-o", str(out)],
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "rendered 0, skipped 3" in again.stdout


def test_bind_demo_actor_ships_with_the_extension(blender, blender_sandbox, skeleton_file):
    import zipfile
    from pathlib import Path

    bpy = blender
    names = zipfile.ZipFile(blender_sandbox.zip_path).namelist()
    assert any(n.endswith("demo_actor/actor.safetensors") for n in names)
    skel_path, _ = skeleton_file
    bpy.ops.marionette.import_skeleton(filepath=str(skel_path))
    arm = bpy.context.active_object
    assert bpy.ops.marionette.bind_demo_actor() == {"FINISHED"}
    assert Path(arm.marionette_actor, "actor.json").is_file() and Path(arm.marionette_actor).name == "demo_actor"
