"""File > Export > Marionette Skeleton (.npz / .trc): an armature's animation as a skeleton file.

The active armature (one Marionette imported, so it carries a joint set) is evaluated at every
frame of the scene's range; its joints' world positions (``pose_read.evaluated_joints``) are
written in the skeleton format (``engine.io.skeleton_file``, Blender's Z-up, metres) at the
scene's frame rate, so motion edited in Blender goes back to every CLI command. A path ending
in ``.trc`` writes OpenSim's marker format instead (``engine.io.trc``, Y-up, in the chosen units).
"""

from __future__ import annotations

import os

import bpy
import numpy as np
from bpy.props import EnumProperty
from bpy_extras.io_utils import ExportHelper

from engine import MarionetteError
from engine.motion import timing

from .pose_read import evaluated_joints, joint_set_name


def armature_motion(context, obj, frame_start: int, frame_end: int):
    """A ``SkeletonSequence`` of ``obj``'s evaluated joints at frames ``frame_start..frame_end``."""
    from engine.body.joint_sets import get_joint_set
    from engine.io.skeleton_file import SkeletonSequence

    if obj is None or obj.type != "ARMATURE":
        raise MarionetteError("select an armature to export (the active object is not one)")
    js_name = joint_set_name(obj)
    if not js_name:
        raise MarionetteError(f"armature {obj.name!r} has no Marionette joint set (a generic or foreign armature); "
                              "import or retarget it with Marionette first, or use Blender's BVH/FBX exporters")
    joint_set = get_joint_set(js_name)
    if frame_end < frame_start:
        raise MarionetteError(f"the scene's frame range {frame_start}-{frame_end} is empty")
    scene = context.scene
    r = scene.render
    fps = timing.rate_of(r.fps, r.fps_base)
    current = scene.frame_current
    frames = range(int(frame_start), int(frame_end) + 1)
    joints = np.empty((len(frames), joint_set.num_joints, 3), dtype=np.float64)
    try:
        for t, f in enumerate(frames):
            scene.frame_set(f)
            joints[t] = evaluated_joints(obj, context.evaluated_depsgraph_get())
    finally:
        scene.frame_set(current)
    return SkeletonSequence(joints=joints, joint_set=joint_set, fps=fps, up_axis="Z",
                            extras={"frame_indices": np.arange(len(frames), dtype=np.int64) + max(0, int(frame_start))})


class MARIONETTE_OT_export_skeleton(bpy.types.Operator, ExportHelper):
    """Export the active armature's animation (evaluated joint positions over the scene's frame range) as a
    Marionette skeleton file (.npz), or as OpenSim markers (.trc)"""

    bl_idname = "marionette.export_skeleton"
    bl_label = "Export Skeleton Sequence"
    bl_options = {"REGISTER"}

    filename_ext = ".npz"
    check_extension = None  # .npz or .trc: the extension chooses the format
    filter_glob: bpy.props.StringProperty(default="*.npz;*.trc", options={"HIDDEN"})
    trc_units: EnumProperty(name="TRC Units", default="m",
                            items=[("m", "Metres", "Write TRC coordinates in metres"),
                                   ("mm", "Millimetres", "Write TRC coordinates in millimetres")],
                            description="Units of a .trc file's coordinates")

    @classmethod
    def poll(cls, context):
        obj = context.active_object
        return obj is not None and obj.type == "ARMATURE"

    def execute(self, context):
        from engine.io.skeleton_file import save_skeleton
        from engine.io.trc import write_trc

        path = bpy.path.abspath(self.filepath)
        ext = os.path.splitext(path)[1].lower()
        if ext not in (".npz", ".trc"):
            path += ".npz"
            ext = ".npz"
        scene = context.scene
        try:
            seq = armature_motion(context, context.active_object, scene.frame_start, scene.frame_end)
            if ext == ".trc":
                write_trc(path, seq, units=self.trc_units)
            else:
                save_skeleton(path, seq)
        except MarionetteError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Exported {seq.num_frames} frames of {seq.joint_set.name} at {seq.fps:g} fps "
                              f"to {os.path.basename(path)}")
        return {"FINISHED"}


def menu_export(self, context):
    self.layout.operator(MARIONETTE_OT_export_skeleton.bl_idname, text="Marionette Skeleton (.npz/.trc)")


def register():
    bpy.utils.register_class(MARIONETTE_OT_export_skeleton)
    bpy.types.TOPBAR_MT_file_export.append(menu_export)


def unregister():
    bpy.types.TOPBAR_MT_file_export.remove(menu_export)
    bpy.utils.unregister_class(MARIONETTE_OT_export_skeleton)
