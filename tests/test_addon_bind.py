"""Binding actors in Blender (bpy module, extension installed in a sandbox): full validation before
success, the actor panel's information, and a BODY_25 skeleton driving the BODY_25B demo actor."""

from __future__ import annotations

import importlib
import json
import shutil

import numpy as np
import pytest

pytest.importorskip("bpy")
torch = pytest.importorskip("torch")

from engine.body.joint_sets import BODY_25, BODY_25B, map_joints  # noqa: E402
from engine.data import demo_actor_path, synthetic_actor_path  # noqa: E402
from engine.io.skeleton_file import SkeletonSequence, save_skeleton  # noqa: E402
from engine.neural.actor.model import Actor, make_config  # noqa: E402
from engine.neural.actor.model_file import save_actor, write_tensors  # noqa: E402

pytestmark = pytest.mark.blender

METRICS = {"train_psnr": 30.0, "heldout": {"psnr": 24.5, "ssim": 0.912, "mask_iou": 0.88, "views": 12}}


@pytest.fixture(scope="module")
def good_actor(tmp_path_factory):
    path = tmp_path_factory.mktemp("actors") / "tiny"
    torch.manual_seed(0)
    actor = Actor(make_config("BODY_25B", latent_dim=4, preset="tiny"), seed=1)
    save_actor(path, actor, {"steps": 120, "time_s": 95.0, "device": "cpu", "metrics": METRICS})
    return path


def _skeleton(tmp_path, js=BODY_25, name="walk"):
    # a clean walk with rigid bones (the synthetic actor's reference): an armature reproduces it exactly,
    # whereas a real capture's bone lengths vary from frame to frame and an armature's cannot
    X = np.load(synthetic_actor_path() / "reference_skeleton.npz")["joints"].astype(np.float64)
    path = tmp_path / f"{name}.npz"
    save_skeleton(path, SkeletonSequence(map_joints(X, BODY_25B, js).astype(np.float32), js, 7.5))
    return path


def _broken_actors(good, tmp):
    """name -> (folder, what the error must say): missing or tampered tensors, wrong hash, newer version..."""
    cases = {}

    def variant(name, match, edit_json=None, edit_files=None):
        folder = tmp / name
        shutil.copytree(good, folder)
        if edit_files is not None:
            edit_files(folder)
        if edit_json is not None:
            doc = json.loads((folder / "actor.json").read_text())
            edit_json(doc, folder)
            (folder / "actor.json").write_text(json.dumps(doc))
        cases[name] = (folder, match)

    def truncate(folder):
        data = (folder / "actor.safetensors").read_bytes()
        (folder / "actor.safetensors").write_bytes(data[: len(data) // 2])

    def flip(folder):
        data = bytearray((folder / "actor.safetensors").read_bytes())
        data[-5] ^= 0xFF
        (folder / "actor.safetensors").write_bytes(bytes(data))

    def nan_tensors(doc, folder):  # a consistent file (size and hash recorded) holding NaN
        from safetensors.torch import load_file

        state = load_file(str(folder / "actor.safetensors"))
        state["codes"][0, 0] = float("nan")
        doc["tensors"] = write_tensors(folder / "actor.safetensors", state)

    def wrong_shapes(doc, folder):  # tensors of another configuration, hash recorded
        from safetensors.torch import load_file

        state = load_file(str(folder / "actor.safetensors"))
        state["codes"] = torch.zeros(state["codes"].shape[0], state["codes"].shape[1] + 1)
        doc["tensors"] = write_tensors(folder / "actor.safetensors", state)

    variant("no_tensors", "tensor file missing", edit_files=lambda f: (f / "actor.safetensors").unlink())
    variant("truncated", "truncated", edit_files=truncate)
    variant("flipped_byte", "SHA-256", edit_files=flip)
    variant("newer_version", "version 99 is newer", edit_json=lambda d, f: d.update(version=99))
    variant("no_tensor_record", "missing field 'tensors'", edit_json=lambda d, f: d.pop("tensors"))
    variant("recorded_shape", "JSON records", edit_json=lambda d, f: d["tensors"]["shapes"].update(codes=[1, 1]))
    variant("nan", "NaN", edit_json=nan_tensors)
    variant("shapes", "shape", edit_json=wrong_shapes)
    variant("other_bones", "bones", edit_json=lambda d, f: d.update(bones=d["bones"][:-1]))
    variant("not_json", "actor", edit_files=lambda f: (f / "actor.json").write_text("{not json"))
    return cases


def test_bind_validates_the_actor_fully_before_success(blender, tmp_path, good_actor):
    bpy = blender
    bpy.ops.marionette.import_skeleton(filepath=str(_skeleton(tmp_path, BODY_25B)))
    arm = bpy.context.active_object
    for name, (folder, match) in _broken_actors(good_actor, tmp_path).items():
        with pytest.raises(RuntimeError, match=f"cannot bind.*{match}"):
            bpy.ops.marionette.bind_actor(filepath=str(folder))
        assert arm.marionette_actor == "", name
    assert bpy.ops.marionette.bind_actor(filepath=str(good_actor / "actor.json")) == {"FINISHED"}
    assert arm.marionette_actor == str(good_actor)


def test_panel_shows_actor_name_training_quality_estimates_and_validation(blender, blender_sandbox, tmp_path,
                                                                          good_actor, capfd):
    bpy = blender
    ops_bind = importlib.import_module(f"{blender_sandbox.module}.ops_bind")
    actor = tmp_path / "my_actor"
    shutil.copytree(good_actor, actor)
    bpy.ops.marionette.import_skeleton(filepath=str(_skeleton(tmp_path, BODY_25)))
    arm = bpy.context.active_object
    capfd.readouterr()
    assert bpy.ops.marionette.bind_actor(filepath=str(actor)) == {"FINISHED"}
    out = capfd.readouterr()
    assert "BODY_25 mapped onto BODY_25B; estimated: Neck, HeadTop" in out.out + out.err
    lines = [text for text, _ in ops_bind.panel_lines(arm, arm.marionette_actor)]
    assert lines[0] == "actor for BODY_25B (BODY_25 mapped onto BODY_25B; estimated: Neck, HeadTop)"
    assert "Actor: my_actor (BODY_25B)" in lines
    assert "Training: 120 steps, 2 min, on cpu, " + json.loads((actor / "actor.json").read_text())[
        "training"]["created"][:10] in lines
    assert "Held-out: PSNR 24.5 dB, SSIM 0.912, mask IoU 0.880 (12 views)" in lines
    assert "Estimated: Neck, HeadTop" in lines
    assert not [t for t in lines if "not validated" in t or t.startswith("Invalid")]
    # the files change after binding: the panel says they are no longer validated
    doc = json.loads((actor / "actor.json").read_text())
    doc["tensors"]["sha256"] = "0" * 64
    (actor / "actor.json").write_text(json.dumps(doc))
    lines = [text for text, _ in ops_bind.panel_lines(arm, arm.marionette_actor)]
    assert any("not validated" in t for t in lines)
    with pytest.raises(RuntimeError, match="SHA-256"):
        bpy.ops.marionette.bind_actor(filepath=str(actor))
    lines = [text for text, _ in ops_bind.panel_lines(arm, arm.marionette_actor)]
    assert any(t.startswith("Invalid:") and "SHA-256" in t for t in lines)
    # an actor trained without recorded metrics
    bare = tmp_path / "bare"
    save_actor(bare, Actor(make_config("BODY_25B", latent_dim=4, preset="tiny"), seed=2), {})
    assert bpy.ops.marionette.bind_actor(filepath=str(bare)) == {"FINISHED"}
    lines = [text for text, _ in ops_bind.panel_lines(arm, arm.marionette_actor)]
    assert "Held-out: not recorded" in lines
    assert any(t.startswith("Training: ") for t in lines)


def test_body_25_skeleton_drives_the_demo_actor_in_blender_as_on_the_cli(blender, tmp_path):
    """OpenPose's BODY_25 (no head top, no upper neck) renders the BODY_25B demo actor: F12 equals
    ``marionette render`` from the same camera."""
    bpy = blender
    from mathutils import Matrix

    from engine.cli import main
    from engine.geometry.camera import Camera, save_cameras, to_blender

    skel = _skeleton(tmp_path, BODY_25)
    assert bpy.ops.marionette.import_skeleton(filepath=str(skel)) == {"FINISHED"}
    assert bpy.ops.marionette.bind_demo_actor() == {"FINISHED"}
    W, H = 48, 64
    X = np.load(synthetic_actor_path() / "reference_skeleton.npz")["joints"]
    centre = X[2].mean(0)
    cam = Camera.look_at("cam", eye=centre + np.array([2.0, 2.6, 0.2]), target=centre, width=W, height=H, f_px=115.0)
    p = to_blender(cam)
    cam_obj = bpy.data.objects.new("cam", bpy.data.cameras.new("cam"))
    bpy.context.scene.collection.objects.link(cam_obj)
    cam_obj.matrix_world = Matrix(p["matrix_world"])
    cam_obj.data.lens, cam_obj.data.sensor_width, cam_obj.data.sensor_fit = p["lens"], p["sensor_width"], p["sensor_fit"]
    cam_obj.data.shift_x, cam_obj.data.shift_y = p["shift_x"], p["shift_y"]
    scene = bpy.context.scene
    scene.camera = cam_obj
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = W, H, 100
    scene.render.pixel_aspect_x, scene.render.pixel_aspect_y = p["pixel_aspect_x"], p["pixel_aspect_y"]
    bpy.ops.marionette.setup_render()
    scene.render.film_transparent = True
    assert scene.render.fps / scene.render.fps_base == pytest.approx(7.5) and scene.frame_start == 1  # row = frame - 1
    scene.frame_set(3)
    scene.render.filepath = str(tmp_path / "f12.png")
    bpy.ops.render.render(write_still=True)
    from PIL import Image

    f12 = np.asarray(Image.open(tmp_path / "f12.png").convert("RGBA")).astype(np.float64) / 255
    save_cameras(tmp_path / "cams.json", [cam])
    assert main(["render", str(demo_actor_path()), "--skeleton", str(skel), "--camera", str(tmp_path / "cams.json"),
                 "-o", str(tmp_path / "cli"), "--frames", "2-2", "--quiet"]) == 0
    cli = np.asarray(Image.open(tmp_path / "cli" / "frame_000002.png").convert("RGBA")).astype(np.float64) / 255
    assert cli[..., 3].mean() > 0.05  # the person is in view
    # the armature holds float32 joints (FK in Blender): a trained decoder turns those micrometres into
    # a 1-2/255 alpha difference on a handful of edge pixels
    da = np.abs(f12[..., 3] - cli[..., 3])
    assert da.max() <= 2.0 / 255 + 1e-9 and da.mean() < 0.05 / 255
    covered = cli[..., 3] > 0.2
    assert np.abs(f12[covered, :3] - cli[covered, :3]).max() <= 1.0 / 255 + 1e-9


class _Layout:
    """Records what a panel draws (a stand-in for ``UILayout``, which needs a window)."""

    def __init__(self, out):
        self.out = out

    def label(self, text="", icon="NONE"):
        self.out.append(("label", text, icon))

    def prop(self, data, name, text=None, **kwargs):
        assert hasattr(data, name)
        self.out.append(("prop", name))

    def operator(self, idname, icon="NONE", **kwargs):
        self.out.append(("operator", idname))

    def row(self, **kwargs):
        return self


def test_actor_panel_draws(blender, tmp_path, good_actor):
    from types import SimpleNamespace

    bpy = blender
    bpy.ops.marionette.import_skeleton(filepath=str(_skeleton(tmp_path, BODY_25)))
    arm = bpy.context.active_object
    assert bpy.ops.marionette.bind_actor(filepath=str(good_actor)) == {"FINISHED"}
    drawn = []
    panel = bpy.types.OBJECT_PT_marionette_actor
    panel.draw(SimpleNamespace(layout=_Layout(drawn)), SimpleNamespace(object=arm, scene=bpy.context.scene))
    labels = [d[1] for d in drawn if d[0] == "label"]
    assert labels[0] == "Joint set: BODY_25"
    assert "Actor: tiny (BODY_25B)" in labels and "Estimated: Neck, HeadTop" in labels
    assert ("operator", "marionette.unbind_actor") in drawn
    assert ("prop", "marionette_show_primitives") in drawn and ("prop", "marionette_primitive_sigma") in drawn
    icons = set(bpy.types.UILayout.bl_rna.functions["label"].parameters["icon"].enum_items.keys())
    assert {d[2] for d in drawn if d[0] == "label"} <= icons
