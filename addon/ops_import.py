"""File > Import operators: skeleton sequences and SMPL motion as keyframed armatures.

    bpy.ops.marionette.import_skeleton(filepath="walk.npz", target_fps=0, start_frame=1,
                                       scale=1.0, up_axis='FILE', object_name="",
                                       set_scene_fps=True, set_frame_range=True)
    bpy.ops.marionette.import_smpl(filepath="amass.npz", model_path="", create_mesh=True, ...)

Timing: the motion is keyed at ``target_fps`` (0: the motion's own rate, or the scene's with
``set_scene_fps`` off), resampled by time; ``set_scene_fps`` sets the scene's rate to the keyed
one (reported when it changes), so the motion plays at its real speed; ``set_frame_range``
sets the scene's start and end frames to the clip. Option bounds (``engine.motion.timing``)
give clear errors instead of being clamped.

A skeleton file without ``joint_set`` gets the known set its ``joint_names`` are; one whose
names match no known set becomes a generic armature of its own names and parents (it can be
keyed, resampled and retargeted by bone names, but drives no actor).

Both are all-or-nothing: any error is reported in Blender's UI and the blend data is
left exactly as it was (``compat.Transaction``), so undo history stays consistent.
"""

from __future__ import annotations

import os
import traceback

import bpy
import numpy as np
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, StringProperty
from bpy_extras.io_utils import ImportHelper

from engine import MarionetteError
from engine.body import kinematics as kin
from engine.geometry import axes
from engine.motion import resample, timing

from . import armature, compat

UP_AXIS_ITEMS = [
    ("FILE", "From File", "Use the up axis the file declares (skeleton files: 'up_axis'; SMPL motion: "
                          "'up_axis' if present, else Z as in AMASS)"),
    ("Z", "Z Up", "The file's +Z is up"),
    ("Y", "Y Up", "The file's +Y is up (converted to Blender's Z-up)"),
    ("X", "X Up", "The file's +X is up"),
    ("-Z", "-Z Up", "The file's -Z is up"),
    ("-Y", "-Y Up", "The file's -Y is up"),
    ("-X", "-X Up", "The file's -X is up"),
]


class _ImportOptions:
    """Options shared by both importers (ImportHelper supplies ``filepath``)."""

    filename_ext = ".npz"
    filter_glob: StringProperty(default="*.npz", options={"HIDDEN"})
    # no hard limits (Blender would clamp silently): out-of-range values get a clear error
    target_fps: FloatProperty(
        name="Frame Rate", default=0.0, soft_min=0.0, soft_max=240.0,
        description="Keys per second of the imported animation; the motion is resampled by time. 0: the "
                    "motion's own rate (the scene's when 'Set Scene Frame Rate' is off)")
    start_frame: IntProperty(name="Start Frame", default=1, soft_min=0, soft_max=100000,
                             description="Frame of the first key")
    scale: FloatProperty(name="Scale", default=1.0, soft_min=0.001, soft_max=100.0,
                         description="Multiply all positions (the files are in metres)")
    set_scene_fps: BoolProperty(
        name="Set Scene Frame Rate", default=True,
        description="Set the scene's frame rate to the keyed rate, so the motion plays at its real speed")
    set_frame_range: BoolProperty(name="Set Frame Range", default=True,
                                  description="Set the scene's start and end frames to the imported clip")
    up_axis: EnumProperty(name="Up Axis", items=UP_AXIS_ITEMS, default="FILE",
                          description="The file's up axis, converted to Blender's Z-up")
    object_name: StringProperty(name="Name", default="",
                                description="Name of the new armature (empty: the file's name)")

    def _options(self) -> tuple[int, float, float]:
        """(start frame, target fps or 0, scale), checked (``engine.motion.timing``)."""
        return timing.check_import_options(self.start_frame, self.target_fps, self.scale)

    def _target_fps(self, context, motion_fps: float) -> float:
        """Keys per second: the option, else the motion's own rate (or the scene's, without set_scene_fps)."""
        _, fps, _ = self._options()
        if fps > 0:
            return fps
        if self.set_scene_fps:
            return float(motion_fps)
        r = context.scene.render
        return timing.rate_of(r.fps, r.fps_base)

    def _name(self) -> str:
        return self.object_name.strip() or os.path.splitext(os.path.basename(self.filepath))[0] or "Marionette"

    def execute(self, context):
        if not self.filepath:
            self.report({"ERROR"}, "No file selected")
            return {"CANCELLED"}
        return run_import(self, context)

    def _key(self, context, tx, obj, rig, q, loc, times, motion_fps: float):
        """Resample by time to the target rate, key, set the scene's frame range and rate."""
        target = self._target_fps(context, motion_fps)
        action, _ = key_rig_animation(context, tx, obj, rig, q, loc, times, target, self._options()[0], self.filepath,
                                      set_frame_range=self.set_frame_range)
        return action, target

    def _scene_notes(self, context, tx, target: float) -> list[str]:
        """Set the scene's rate to ``target`` (option); notes on what changed or what to beware of."""
        scene = context.scene
        r = scene.render
        before = timing.rate_of(r.fps, r.fps_base)
        notes = []
        if self.set_scene_fps and not timing.same_rate(before, target):
            fps, base = timing.scene_rate(target)
            tx.set(r, "fps", fps)
            tx.set(r, "fps_base", base)
            notes.append(f"scene frame rate changed from {before:g} to {target:g} fps")
        elif not timing.same_rate(before, target):
            notes.append(f"keys are {target:g} per second but the scene plays {before:g} fps, so the motion plays at "
                         f"{before / target:.3g}x speed (turn on 'Set Scene Frame Rate')")
        if self.set_frame_range:
            notes.append(f"frame range {scene.frame_start}-{scene.frame_end}")
        return notes


def run_import(op, context) -> set:
    """Run ``op.build(context, tx, wm) -> message`` all-or-nothing (``compat.Transaction``) with a
    progress bar; report the message or the error. Returns the operator's result set.

    ``build`` may return ``(message, warnings)``: each warning is reported too, as a warning."""
    compat.ensure_object_mode(context)
    wm = context.window_manager
    wm.progress_begin(0, 100)
    try:
        with compat.Transaction(context) as tx:
            message = op.build(context, tx, wm)
    except MarionetteError as exc:
        op.report({"ERROR"}, str(exc))
        return {"CANCELLED"}
    except Exception as exc:  # a bug, not a user error: still leave the scene untouched
        traceback.print_exc()
        op.report({"ERROR"}, f"Marionette import failed ({type(exc).__name__}: {exc}); nothing was imported")
        return {"CANCELLED"}
    finally:
        wm.progress_end()
    message, warnings = message if isinstance(message, tuple) else (message, [])
    for warning in warnings:
        op.report({"WARNING"}, warning)
    op.report({"INFO"}, message)
    return {"FINISHED"}


def key_rig_animation(context, tx, obj, rig, q, loc, times, target_fps: float, start_frame: int,
                      source: str, set_frame_range: bool = False):
    """Resample keys [T, B, 4] / [T, 3] at ``times`` (seconds from the first) to ``target_fps``,
    key them from ``start_frame`` and set the scene's frame range to the clip (``set_frame_range``)
    or extend its end frame; returns (action, frame offsets)."""
    q, loc, offsets = resample.resample_animation(q, loc, times, target_fps)
    seconds = float(times[-1] - times[0]) if len(times) else 0.0
    last = timing.check_key_range(start_frame, int(offsets[-1]) if len(offsets) else 0, set_frame_range,
                                  target_fps, seconds)
    action = armature.key_animation(tx, obj, rig, q, loc, start_frame, obj.name + "Action", frame_offsets=offsets)
    scene = context.scene
    if set_frame_range:  # start first: Blender keeps end >= start
        scene.frame_start = int(start_frame)
        scene.frame_end = last
        scene.frame_current = int(start_frame)
    elif last > scene.frame_end:
        scene.frame_end = last
    obj["marionette_fps"] = float(target_fps)
    obj["marionette_source"] = source
    return action, offsets


def import_skeleton_sequence(context, tx, seq, name: str, source: str, target_fps: float, start_frame: int = 1,
                             up_axis: str = "FILE", scale: float = 1.0, times=None, progress=None,
                             set_frame_range: bool = False):
    """The skeleton importer's body: ``seq`` (a ``SkeletonSequence``) as a keyed armature named ``name``.

    ``up_axis`` 'FILE' uses ``seq.up_axis``; ``times`` (seconds, one per row) default to
    ``skeleton_times(seq)``. Every datablock goes through ``tx``. Returns
    ``(object, frame offsets of the keys, number of missing bone-frames)``.
    """
    from engine.motion.resample import skeleton_times

    progress = progress or (lambda value: None)
    up = seq.up_axis if up_axis == "FILE" else up_axis
    C = axes.up_axis_matrix(up)
    X = scale * (seq.joints.astype(np.float64) @ C.T)
    if seq.missing.all():
        raise MarionetteError(f"{source}: every joint of every frame is missing (NaN); nothing to import")
    rig = kin.build_skeleton_rig(X, seq.joint_set)
    obj = armature.create_armature(context, tx, name, rig)
    progress(30)
    q, loc = kin.skeleton_animation(rig, X)
    progress(60)
    times = skeleton_times(seq) if times is None else np.asarray(times, dtype=np.float64)
    _, offsets = key_rig_animation(context, tx, obj, rig, q, loc, times - times[0], target_fps, start_frame,
                                   source, set_frame_range)
    return obj, offsets, int(np.isnan(q[..., 0]).sum())


class MARIONETTE_OT_import_skeleton(_ImportOptions, bpy.types.Operator, ImportHelper):
    """Import a skeleton sequence (.npz from 'marionette triangulate', or OpenSim/Pose2Sim .trc markers) as a
    keyframed armature"""

    bl_idname = "marionette.import_skeleton"
    bl_label = "Import Skeleton Sequence"
    bl_options = {"REGISTER", "UNDO"}
    filter_glob: StringProperty(default="*.npz;*.trc", options={"HIDDEN"})

    def build(self, context, tx, wm):
        from engine.body.joint_sets import JOINT_SETS, infer_joint_set
        from engine.io.skeleton_file import load_skeleton

        start, _, scale = self._options()
        seq = load_skeleton(self.filepath, allow_generic=True)
        wm.progress_update(10)
        target = self._target_fps(context, seq.fps)
        obj, _, gaps = import_skeleton_sequence(context, tx, seq, self._name(), self.filepath, target,
                                                start, self.up_axis, scale, progress=wm.progress_update,
                                                set_frame_range=self.set_frame_range)
        notes = self._scene_notes(context, tx, target)
        wm.progress_update(100)
        warnings = []
        js = seq.joint_set
        if JOINT_SETS.get(js.name) == js:
            kind = js.name
        else:
            kind = f"a generic skeleton ({js.num_joints} joints)"
            why = infer_joint_set(js.names, js.parents)[1]
            warnings.append(f"Marionette: {os.path.basename(self.filepath)}: {why}; imported as a generic armature "
                            "from its joint names and parents (it can be keyed and retargeted but drives no actor)")
        if gaps:
            notes.append(f"{gaps} bone-frames missing, left as gaps")
        return (f"Imported {seq.num_frames} frames of {kind} as '{obj.name}' at {target:g} fps"
                + (f" ({'; '.join(notes)})" if notes else "")), warnings


class MARIONETTE_OT_import_smpl(_ImportOptions, bpy.types.Operator, ImportHelper):
    """Import SMPL motion (AMASS-style .npz) as a keyframed armature, with the skinned body when an SMPL model is set"""

    bl_idname = "marionette.import_smpl"
    bl_label = "Import SMPL Motion"
    bl_options = {"REGISTER", "UNDO"}

    model_path: StringProperty(
        name="SMPL Model", subtype="FILE_PATH", default="",
        description="SMPL model file (.npz or .pkl); empty uses the one set in the add-on preferences")
    create_mesh: BoolProperty(name="Create Body Mesh", default=True,
                              description="With a model file, also create the skinned SMPL mesh")

    def build(self, context, tx, wm):
        from engine.body.smpl import motion as sm

        self._options()
        motion = sm.load_smpl_motion(self.filepath)
        wm.progress_update(10)
        up = (motion.up_axis or "Z") if self.up_axis == "FILE" else self.up_axis
        C = axes.up_axis_matrix(up)
        s = self._options()[2]

        model_path = bpy.path.abspath(self.model_path) if self.model_path else ""
        if not model_path:
            prefs = compat.addon_preferences(context)
            model_path = prefs.model_for_gender(motion.gender) if prefs is not None else ""
        model = None
        if model_path:
            from engine.body.smpl.model import load_smpl_model

            model = load_smpl_model(model_path)
            betas = motion.betas[: model.num_betas]
            rest = model.rest_joints(betas)
        else:
            betas = motion.betas
            rest = sm.GENERIC_SMPL_REST_JOINTS
        wm.progress_update(25)

        name = self._name()
        # the rest pose stands upright in Blender (SMPL's body frame is Y-up) whatever the file's
        # world up axis; the body-to-world turn is carried by the root's rotation keys
        M = axes.up_axis_matrix("Y")
        rig = sm.smpl_rig(s * rest @ M.T)
        obj = armature.create_armature(context, tx, name, rig)
        q, loc = sm.smpl_animation(rig, motion.poses, motion.trans, rest, C, s, rest_axes=M)
        wm.progress_update(50)
        _, target = self._key(context, tx, obj, rig, q, loc, np.arange(motion.num_frames) / motion.fps, motion.fps)
        notes = self._scene_notes(context, tx, target)
        obj["marionette_gender"] = motion.gender
        obj["marionette_betas"] = [float(b) for b in betas]
        obj["marionette_smpl_model"] = model_path
        wm.progress_update(75)

        mesh_note = ""
        if model is not None and self.create_mesh:
            K = max(len(betas), min(10, model.num_betas))
            verts = s * model.v_template @ M.T
            dirs = s * np.einsum("ij,vjk->vik", M, model.shapedirs[:, :, :K])
            values = np.zeros(K)
            values[: len(betas)] = betas
            armature.create_skinned_mesh(context, tx, name + "_body", obj, verts, model.f, model.weights,
                                         rig.bone_names, dirs, values)
            mesh_note = " with its body mesh"
        wm.progress_update(100)
        source = f"model {os.path.basename(model_path)}" if model_path else "the generic rest skeleton (no SMPL model set)"
        return (f"Imported {motion.num_frames} SMPL frames as '{obj.name}'{mesh_note} at {target:g} fps, "
                f"rest joints from {source}" + (f" ({'; '.join(notes)})" if notes else ""))


def menu_import(self, context):
    self.layout.operator(MARIONETTE_OT_import_skeleton.bl_idname, text="Marionette Skeleton (.npz/.trc)")
    self.layout.operator(MARIONETTE_OT_import_smpl.bl_idname, text="Marionette SMPL Motion (.npz)")


CLASSES = (MARIONETTE_OT_import_skeleton, MARIONETTE_OT_import_smpl)


def register():
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.TOPBAR_MT_file_import.append(menu_import)


def unregister():
    bpy.types.TOPBAR_MT_file_import.remove(menu_import)
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
