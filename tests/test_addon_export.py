"""File > Export > Marionette Skeleton (.npz/.trc), and Blender's own BVH exporter on imported armatures:
import, export, re-import and compare joints."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

pytest.importorskip("bpy")

from engine.synthetic.skeleton_motion import synthetic_skeleton_motion  # noqa: E402
from engine.io.skeleton_file import SkeletonSequence, load_skeleton, save_skeleton  # noqa: E402
from engine.body.joint_sets import BODY_25B, COCO_17  # noqa: E402
from engine.geometry.axes import up_axis_matrix  # noqa: E402
from engine.io.trc import write_trc  # noqa: E402

pytestmark = pytest.mark.blender


def _mod(sandbox, name):
    return importlib.import_module(f"{sandbox.module}.{name}")


def _import(bpy, path, name, **kw):
    assert bpy.ops.marionette.import_skeleton(filepath=str(path), object_name=name, **kw) == {"FINISHED"}
    return bpy.data.objects[name]


def _joints(bpy, pose_read, obj, frames):
    out = []
    for f in frames:
        bpy.context.scene.frame_set(f)
        out.append(pose_read.evaluated_joints(obj, bpy.context.evaluated_depsgraph_get()))
    return np.array(out)


def test_export_operator_registered_in_file_export_menu(blender):
    bpy = blender
    assert hasattr(bpy.ops.marionette, "export_skeleton")
    drawn = [getattr(f, "__module__", "") for f in bpy.types.TOPBAR_MT_file_export._dyn_ui_initialize()]
    assert any(m.endswith("marionette.ops_export") for m in drawn)


@pytest.mark.parametrize("ext, units", [(".npz", "m"), (".trc", "m"), (".trc", "mm")])
def test_export_round_trip(blender, blender_sandbox, tmp_path, ext, units):
    bpy = blender
    pose_read = _mod(blender_sandbox, "pose_read")
    X = synthetic_skeleton_motion(BODY_25B, 40, fps=30.0, seed=4, amplitude=0.3)
    save_skeleton(tmp_path / "walk.npz", SkeletonSequence(joints=X, joint_set=BODY_25B, fps=30.0, up_axis="Z"))
    src = _import(bpy, tmp_path / "walk.npz", "Walk", start_frame=5)
    scene = bpy.context.scene
    assert (scene.frame_start, scene.frame_end, scene.render.fps) == (5, 44, 30)
    before = _joints(bpy, pose_read, src, range(5, 45))
    assert np.abs(before - X).max() < 1e-3

    out = tmp_path / f"edited{ext}"
    bpy.context.view_layer.objects.active = src
    assert bpy.ops.marionette.export_skeleton(filepath=str(out), trc_units=units) == {"FINISHED"}
    seq = load_skeleton(out)
    assert seq.joint_set == BODY_25B and seq.num_frames == 40 and seq.fps == pytest.approx(30.0)
    blender_xyz = seq.joints.astype(np.float64) @ up_axis_matrix(seq.up_axis).T
    assert np.abs(blender_xyz - before).max() < 1e-3

    scene.frame_start, scene.frame_end = 1, 1
    again = _import(bpy, out, "Again", start_frame=1)
    after = _joints(bpy, pose_read, again, range(1, 41))
    assert np.abs(after - before).max() < 1e-3  # within 1 mm


def test_export_refuses_a_non_marionette_armature(blender, tmp_path):
    bpy = blender
    arm = bpy.data.armatures.new("Plain")
    obj = bpy.data.objects.new("Plain", arm)
    bpy.context.scene.collection.objects.link(obj)
    bpy.context.view_layer.objects.active = obj
    with pytest.raises(RuntimeError, match="no Marionette joint set"):
        bpy.ops.marionette.export_skeleton(filepath=str(tmp_path / "x.npz"))
    assert not (tmp_path / "x.npz").exists()


def test_import_reads_trc(blender, blender_sandbox, tmp_path):
    bpy = blender
    pose_read = _mod(blender_sandbox, "pose_read")
    X = synthetic_skeleton_motion(COCO_17, 12, fps=60.0, seed=5, amplitude=0.3)  # Y-up, millimetres
    write_trc(tmp_path / "markers.trc", SkeletonSequence(joints=X, joint_set=COCO_17, fps=60.0, up_axis="Y"),
              units="mm")
    obj = _import(bpy, tmp_path / "markers.trc", "Markers", start_frame=1)
    assert obj["marionette_joint_set"] == "COCO_17" and bpy.context.scene.render.fps == 60
    got = _joints(bpy, pose_read, obj, range(1, 13))
    assert np.abs(got - X @ up_axis_matrix("Y").T).max() < 1e-3


def _bone_heads(bpy, obj, frames):
    names = sorted(b.name for b in obj.pose.bones)
    out = []
    for f in frames:
        bpy.context.scene.frame_set(f)
        M = np.array(obj.matrix_world)
        out.append([(M @ np.append(np.array(obj.pose.bones[n].head), 1.0))[:3] for n in names])
    return names, np.array(out)


def test_bvh_export_round_trip_keeps_joint_positions(blender, tmp_path):
    """Blender's own BVH exporter on an imported armature: bone heads in world space survive export and
    re-import (axis_forward='Y', axis_up='Z': the exporter writes Blender's Z-up axes unchanged)."""
    bpy = blender
    if "io_anim_bvh" not in bpy.context.preferences.addons:  # on by default; a trimmed build may lack it
        bpy.ops.preferences.addon_enable(module="io_anim_bvh")
    X = synthetic_skeleton_motion(BODY_25B, 30, fps=30.0, seed=6, amplitude=0.3)
    save_skeleton(tmp_path / "walk.npz", SkeletonSequence(joints=X, joint_set=BODY_25B, fps=30.0, up_axis="Z"))
    src = _import(bpy, tmp_path / "walk.npz", "Walk", start_frame=1)
    names, heads = _bone_heads(bpy, src, range(1, 31))

    bpy.ops.object.select_all(action="DESELECT")
    src.select_set(True)
    bpy.context.view_layer.objects.active = src
    out = tmp_path / "walk.bvh"
    assert bpy.ops.export_anim.bvh(filepath=str(out), frame_start=1, frame_end=30) == {"FINISHED"}
    before = set(bpy.data.objects)
    assert bpy.ops.import_anim.bvh(filepath=str(out), axis_forward="Y", axis_up="Z", frame_start=1,
                                   update_scene_fps=False, update_scene_duration=False) == {"FINISHED"}
    (bvh,) = [o for o in bpy.data.objects if o not in before]
    got_names, got = _bone_heads(bpy, bvh, range(1, 31))
    assert got_names == names
    assert np.abs(got - heads).max() < 1e-3  # within 1 mm (it reaches ~2e-6 m: 6-decimal text)
