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

import re
import traceback
from collections import defaultdict

import bpy
import numpy as np
from bpy.props import BoolProperty, FloatProperty

from engine import MarionetteError

from . import fcurves

_QUAT = re.compile(r"^(.*)rotation_quaternion$")


def _scene_fps(scene) -> float:
    return float(scene.render.fps) / float(scene.render.fps_base)


def plan_resample(channels, fps_in: float, fps_out: float):
    """channels: {(data_path, index): (frames, values)} -> (new frames, {(path, index): new values}).

    Pure numpy (testable without Blender): groups quaternion channels by owner and uses
    ``resample_rotations``; everything else ``resample_positions``.
    """
    from engine.motion.resample import resample_positions, resample_rotations

    if not channels:
        raise MarionetteError("nothing to resample: the action has no F-curves with keys")
    starts = [f[0] for f, _ in channels.values() if len(f)]
    ends = [f[-1] for f, _ in channels.values() if len(f)]
    if not starts:
        raise MarionetteError("nothing to resample: the action's F-curves have no keys")
    f0, f1 = min(starts), max(ends)
    if f1 <= f0:
        raise MarionetteError("the action spans a single frame; nothing to resample")
    n_out = int(np.floor((f1 - f0) / fps_in * fps_out + 1e-6)) + 1
    t_out = np.arange(n_out) / fps_out
    out = {}
    groups = defaultdict(dict)
    for (path, idx), fv in channels.items():
        m = _QUAT.match(path)
        if m:
            groups[path][idx] = fv
        else:
            frames, values = fv
            if len(frames) == 1:
                out[(path, idx)] = np.full(n_out, values[0])
                continue
            t = (np.asarray(frames) - f0) / fps_in
            out[(path, idx)] = resample_positions(np.asarray(values)[:, None], t, t_out, extrapolate="hold")[:, 0]
    for path, comps in groups.items():
        if set(comps) != {0, 1, 2, 3}:
            # incomplete quaternion: treat the channels independently
            for idx, (frames, values) in comps.items():
                t = (np.asarray(frames) - f0) / fps_in
                out[(path, idx)] = resample_positions(np.asarray(values)[:, None], t, t_out, extrapolate="hold")[:, 0]
            continue
        frames = np.unique(np.concatenate([np.asarray(comps[k][0]) for k in range(4)]))
        q = np.stack([np.interp(frames, comps[k][0], comps[k][1]) for k in range(4)], -1)  # keys usually shared
        if len(frames) == 1:
            r = np.repeat(q, n_out, axis=0)
        else:
            norms = np.linalg.norm(q, axis=-1, keepdims=True)
            r = resample_rotations(q / np.maximum(norms, 1e-12), (frames - f0) / fps_in, t_out, extrapolate="hold")
            # Blender does not require unit quaternions; keep the keyed magnitude (usually 1)
            r = r * np.interp(t_out, (frames - f0) / fps_in, norms[:, 0])[:, None]
        for k in range(4):
            out[(path, k)] = r[:, k]
    new_frames = f0 + np.arange(n_out)
    return new_frames, out, (f0, f1)


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
