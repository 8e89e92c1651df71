"""Resample the active object's animation to another frame rate, by time.

    bpy.ops.marionette.resample_motion(fps=60)

Quaternion rotations (``rotation_quaternion`` channels, per bone or object) follow the
C1 quaternion spline of ``engine.motion.resample``; every other animated channel (locations,
scales, Euler rotations, custom properties) a C1 cubic. The motion keeps its speed: a
key at frame ``f`` (scene rate ``F``) lands at time ``(f - start) / F`` and the new keys
sit on the grid ``start + k`` at the new rate. With ``set_scene_fps`` the scene's frame
rate and end frame follow, so playback looks the same. All channels are computed
before any is replaced; undo restores the old keys.
"""

from __future__ import annotations

import traceback

import bpy
import numpy as np
from bpy.props import BoolProperty, FloatProperty

from engine import MarionetteError
from engine.motion.channels import plan_resample

from . import fcurves

def _scene_fps(scene) -> float:
    return float(scene.render.fps) / float(scene.render.fps_base)


class MARIONETTE_OT_resample_motion(bpy.types.Operator):
    """Resample the active object's animation to a new frame rate (quaternion splines, smooth cubics)"""

    bl_idname = "marionette.resample_motion"
    bl_label = "Resample Motion"
    bl_options = {"REGISTER", "UNDO"}

    fps: FloatProperty(name="Frame Rate", default=60.0, min=0.1, soft_max=240.0,
                       description="New keys per second")
    set_scene_fps: BoolProperty(name="Set Scene Frame Rate", default=True,
                                description="Also set the scene's frame rate (and end frame) so playback speed "
                                            "stays the same")

    @classmethod
    def poll(cls, context):
        return context.active_object is not None

    def execute(self, context):
        try:
            message = self._run(context)
        except MarionetteError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        except Exception as exc:
            traceback.print_exc()
            self.report({"ERROR"}, f"Marionette resample failed ({type(exc).__name__}: {exc}); nothing was changed")
            return {"CANCELLED"}
        self.report({"INFO"}, message)
        return {"FINISHED"}

    def _run(self, context) -> str:
        obj = context.active_object
        scene = context.scene
        ad = obj.animation_data
        action = ad.action if ad is not None else None
        if action is None:
            raise MarionetteError(f"{obj.name!r} has no animation to resample")
        fcs = fcurves.action_fcurves(action, obj)
        channels = {}
        for fc in fcs:
            frames, values = fcurves.read_keys(fc)
            if len(frames):
                order = np.argsort(frames)
                channels[(fc.data_path, fc.array_index)] = (frames[order], values[order])
        fps_in = _scene_fps(scene)
        fps_out = float(self.fps)
        if not (np.isfinite(fps_out) and fps_out > 0):
            raise MarionetteError(f"frame rate must be positive, got {fps_out}")
        new_frames, values, (f0, f1) = plan_resample(channels, fps_in, fps_out)
        # everything computed: now replace the keys
        by_key = {(fc.data_path, fc.array_index): fc for fc in fcs}
        for key, v in values.items():
            fcurves.write_keys(by_key[key], new_frames, v, interpolation="BEZIER")
        if "marionette_fps" in obj:
            obj["marionette_fps"] = fps_out  # the keyed frame rate (armatures imported by Marionette)
        if self.set_scene_fps:
            scene.render.fps = int(round(fps_out))
            scene.render.fps_base = scene.render.fps / fps_out
            scene.frame_start = int(f0)
            scene.frame_end = int(new_frames[-1])
        return (f"Resampled {len(values)} channels of '{obj.name}' from {fps_in:g} to {fps_out:g} fps: "
                f"{len(new_frames)} keys over frames {int(new_frames[0])}..{int(new_frames[-1])}")


def menu_resample(self, context):
    self.layout.operator(MARIONETTE_OT_resample_motion.bl_idname)


CLASSES = (MARIONETTE_OT_resample_motion,)


def register():
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    if hasattr(bpy.types, "VIEW3D_MT_object_animation"):
        bpy.types.VIEW3D_MT_object_animation.append(menu_resample)


def unregister():
    if hasattr(bpy.types, "VIEW3D_MT_object_animation"):
        bpy.types.VIEW3D_MT_object_animation.remove(menu_resample)
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
