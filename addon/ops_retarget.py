"""Retarget the active armature's animation onto the selected armature.

    bpy.ops.marionette.retarget(root_motion='KEEP', pin_feet=True)       # active -> selected
    bpy.ops.marionette.retarget_detect()                                 # fill the bone maps shown in the panel

The math is ``engine.motion.retarget``; this module reads poses and writes keys. The source is
sampled as world-space joint positions frame by frame (so constraints, drivers and NLA
on the source are honoured); the target's rest pose, bone lengths and rest orientations
come from its armature. Bone maps: an armature imported by Marionette knows its joints
(custom properties); any other armature is matched by bone names against
``engine/body/bone_maps/*.json``; either can be overridden per armature in the Retarget panel
(stored on the object as ``marionette_bone_map``).

All-or-nothing: every check runs and the whole retarget is computed before anything is
changed; if writing fails, the new action is removed and the target's previous action
and rotation modes are put back.
"""

from __future__ import annotations

import traceback

import bpy
import numpy as np
from bpy.props import BoolProperty, CollectionProperty, EnumProperty, FloatProperty, IntProperty, StringProperty

from engine import MarionetteError

from . import compat, fcurves
from .armature import JOINT_AT_TAIL_PROP, JOINT_BONES_PROP, JOINT_SET_PROP
from .pose_read import pose_matrices

ROOT_ITEMS = [
    ("KEEP", "Keep", "The hips travel like the source's, the distance scaled by leg length"),
    ("IN_PLACE", "In Place", "No horizontal travel (vertical motion is kept)"),
]


class MARIONETTE_PG_bone_map_item(bpy.types.PropertyGroup):
    canonical: StringProperty(name="Joint", description="Marionette's canonical joint name")
    bone: StringProperty(name="Bone", description="Bone whose head (or tail, for Marionette armatures) is at the joint")
    at_tail: BoolProperty(name="At Tail", default=False, description="The joint is at the bone's tail")


# ----------------------------------------------------------------------------- reading armatures

def _escape(name: str) -> str:
    return bpy.utils.escape_identifier(name)


def bone_map(obj) -> tuple[dict, dict, str]:
    """(head mapping, tail mapping, description) of an armature: panel override, Marionette
    properties, or detection from bone names. Raises MarionetteError when nothing matches."""
    from engine.body.bone_maps import detect_rig

    names = [b.name for b in obj.data.bones]
    items = getattr(obj, "marionette_bone_map", None)
    if items is not None and len(items):
        head = {it.canonical: it.bone for it in items if it.bone and not it.at_tail}
        tail = {it.canonical: it.bone for it in items if it.bone and it.at_tail}
        bad = [b for b in list(head.values()) + list(tail.values()) if b not in names]
        if bad:
            raise MarionetteError(f"armature {obj.name!r}: the bone map in the Retarget panel names bones it does not "
                                  f"have: {', '.join(bad[:5])}; fix them or press Detect Mapping")
        return head, tail, str(obj.get("marionette_rig_name", "edited map"))
    if JOINT_BONES_PROP in obj and JOINT_SET_PROP in obj:
        from engine.body.joint_sets import get_joint_set

        js = get_joint_set(str(obj[JOINT_SET_PROP]))
        bones = [str(n) for n in obj[JOINT_BONES_PROP]]
        at_tail = [bool(int(v)) for v in obj[JOINT_AT_TAIL_PROP]]
        head, tail = {}, {}
        for c, b, t in zip(js.canonical, bones, at_tail):
            if b in names:
                (tail if t else head)[c] = b
        return head, tail, f"Marionette {js.name}"
    det = detect_rig(names)
    if det.rig is None:
        raise MarionetteError(
            f"armature {obj.name!r}: no bone map matches its bone names (known rigs: Mixamo, Rigify meta-rig/DEF, "
            "SMPL-24, BODY_25/25B, COCO-17, H3.6M-17, Panoptic-19); select it, press Detect Mapping in the "
            "Retarget panel and fill in the bones by hand")
    return dict(det.mapping), {}, det.rig.title


def target_rig(obj, head: dict, tail: dict):
    """engine.body.kinematics.Rig of an armature's rest pose, in armature space."""
    from engine.body.kinematics import Rig

    bones = obj.data.bones
    names = [b.name for b in bones]
    parents = [names.index(b.parent.name) if b.parent else -1 for b in bones]
    heads = np.array([b.head_local for b in bones], dtype=np.float64).reshape(-1, 3)
    tails = np.array([b.tail_local for b in bones], dtype=np.float64).reshape(-1, 3)
    rot = np.array([[list(r) for r in b.matrix_local.to_3x3()] for b in bones], dtype=np.float64).reshape(-1, 3, 3)
    # the world's up in armature space (armatures imported from Y-up files are often rotated)
    Minv = np.array(obj.matrix_world.inverted_safe().to_3x3(), dtype=np.float64)
    up = Minv @ np.array([0.0, 0.0, 1.0])
    return Rig(bone_names=names, parents=parents, heads=heads, tails=tails, rest_rotations=rot, mapping=head,
               tail_mapping=tail, up=up)


def _unit_columns(M: np.ndarray) -> np.ndarray:
    return M / np.maximum(np.linalg.norm(M, axis=-2, keepdims=True), 1e-12)


def sample_source(context, obj, head: dict, tail: dict, frames, to_space: np.ndarray, wm=None, progress=(0, 50),
                  frame_bones=()):
    """Canonical joint positions [T, 3] of ``obj`` at ``frames``, mapped by ``to_space`` (4x4), and the
    orientation [T, 3, 3] (unit axes) of each bone in ``frame_bones`` in that space."""
    scene = context.scene
    T = len(frames)
    out = {c: np.zeros((T, 3)) for c in list(head) + list(tail)}
    orient = {b: np.zeros((T, 3, 3)) for b in frame_bones}
    names = None
    for i, f in enumerate(frames):
        scene.frame_set(int(f))
        names_f, P, lengths = pose_matrices(obj, context.evaluated_depsgraph_get())
        if names is None:
            names = {n: k for k, n in enumerate(names_f)}
        P = to_space @ P
        for c, b in head.items():
            out[c][i] = P[names[b], :3, 3]
        for c, b in tail.items():
            k = names[b]
            out[c][i] = P[k, :3, 3] + P[k, :3, 1] * lengths[k]
        for b in frame_bones:
            orient[b][i] = _unit_columns(P[names[b], :3, :3])
        if wm is not None and i % 10 == 0:
            wm.progress_update(progress[0] + (progress[1] - progress[0]) * i / max(T, 1))
    return out, orient


def source_twist_data(src, s_head: dict, s_tail: dict, to_space: np.ndarray):
    """The source's rest joint positions and the rest frames of its bones that start at a mapped
    joint, in the target's armature space (for carrying bone roll over)."""
    rig = target_rig(src, s_head, s_tail)
    M = to_space @ np.array(src.matrix_world, dtype=np.float64)
    rest_pos = {c: M[:3, :3] @ p + M[:3, 3] for c, p in rig.canonical_rest.items()}
    bones = {}
    for b, (hc, tc) in enumerate(rig.bone_joints()):
        if hc is not None:
            bones[rig.bone_names[b]] = ((hc, tc), _unit_columns(M[:3, :3] @ rig.rest_rotations[b]))
    return rest_pos, bones


def _check_target(obj) -> None:
    s = np.array(obj.matrix_world.to_scale(), dtype=np.float64)
    if np.abs(s - s.mean()).max() > 1e-4 * max(abs(s.mean()), 1e-9):
        raise MarionetteError(f"target {obj.name!r} has non-uniform scale {tuple(round(float(v), 4) for v in s)}; "
                              "apply the scale (Ctrl+A > Scale) first")
    if len(obj.constraints):
        raise MarionetteError(f"target {obj.name!r} has object constraints ({obj.constraints[0].name}, ...); "
                              "remove or apply them first, they would fight the baked keys")
    constrained = [pb.name for pb in obj.pose.bones if len(pb.constraints)]
    if constrained:
        raise MarionetteError(f"target {obj.name!r} has bone constraints on {', '.join(constrained[:4])}"
                              f"{' ...' if len(constrained) > 4 else ''}; remove them (or retarget onto the "
                              "bones they copy from) first")


def _source_action(obj):
    ad = obj.animation_data
    action = ad.action if ad is not None else None
    if action is None or not fcurves.action_fcurves(action, obj):
        raise MarionetteError(f"source {obj.name!r} has no animation (no action with keyframes); "
                              "import or bake motion onto it first")
    return action


def _pair(context):
    src = context.active_object
    if src is None or src.type != "ARMATURE":
        raise MarionetteError("make the armature with the motion (the source) the active object")
    others = [o for o in context.selected_objects if o is not src and o.type == "ARMATURE"]
    if len(others) != 1:
        raise MarionetteError(f"select exactly one other armature as the target (selected: {len(others)}); "
                              "the active armature is the source")
    return src, others[0]


# ----------------------------------------------------------------------------- operators

class MARIONETTE_OT_retarget_detect(bpy.types.Operator):
    """Detect the bone maps of the active and selected armatures and show them in the Retarget panel"""

    bl_idname = "marionette.retarget_detect"
    bl_label = "Detect Mapping"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        objs = [o for o in context.selected_objects if o.type == "ARMATURE"]
        if context.active_object is not None and context.active_object.type == "ARMATURE" \
                and context.active_object not in objs:
            objs.append(context.active_object)
        if not objs:
            self.report({"ERROR"}, "Select one or more armatures")
            return {"CANCELLED"}
        notes, failed = [], []
        for obj in objs:
            items = obj.marionette_bone_map
            saved = [(it.canonical, it.bone, it.at_tail) for it in items]
            items.clear()  # detect from scratch, not from the old override
            try:
                head, tail, label = bone_map(obj)
            except MarionetteError as exc:
                for c, b, t in saved:
                    it = items.add()
                    it.canonical, it.bone, it.at_tail = c, b, t
                failed.append(str(exc))
                continue
            for c, b in sorted(head.items()):
                it = items.add()
                it.canonical, it.bone, it.at_tail = c, b, False
            for c, b in sorted(tail.items()):
                it = items.add()
                it.canonical, it.bone, it.at_tail = c, b, True
            obj["marionette_rig_name"] = label
            notes.append(f"{obj.name}: {label} ({len(head) + len(tail)} joints)")
        if failed and not notes:
            self.report({"ERROR"}, failed[0])
            return {"CANCELLED"}
        for f in failed:
            self.report({"WARNING"}, f)
        self.report({"INFO"}, "; ".join(notes))
        return {"FINISHED"}


class MARIONETTE_OT_retarget_clear_map(bpy.types.Operator):
    """Forget the edited bone map of the selected armatures (detection from bone names is used again)"""

    bl_idname = "marionette.retarget_clear_map"
    bl_label = "Clear Mapping"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        for obj in context.selected_objects:
            if obj.type == "ARMATURE":
                obj.marionette_bone_map.clear()
                if "marionette_rig_name" in obj:
                    del obj["marionette_rig_name"]
        return {"FINISHED"}


class MARIONETTE_OT_retarget(bpy.types.Operator):
    """Retarget the active armature's animation onto the selected armature, baking keyframes"""

    bl_idname = "marionette.retarget"
    bl_label = "Retarget Motion"
    bl_options = {"REGISTER", "UNDO"}

    use_action_range: BoolProperty(name="Whole Action", default=True,
                                   description="Bake every frame of the source's action; off: use the range below")
    frame_start: IntProperty(name="Start", default=1, description="First frame to bake")
    frame_end: IntProperty(name="End", default=250, description="Last frame to bake")
    root_motion: EnumProperty(name="Root Motion", items=ROOT_ITEMS, default="KEEP")
    pin_feet: BoolProperty(name="Pin Feet", default=True,
                           description="Keep the target's feet planted where the source's feet touch the ground")
    contact_height: FloatProperty(name="Contact Height", default=0.05, min=0.0, soft_max=0.3, unit="LENGTH",
                                  description="A source foot joint this far above its standing height still "
                                              "counts as touching the ground")
    contact_speed: FloatProperty(name="Contact Speed", default=0.3, min=0.0, soft_max=2.0,
                                 description="Metres per second below which a low source foot joint is planted")
    action_name: StringProperty(name="Action", default="",
                                description="Name of the new action (empty: '<source action> on <target>')")

    @classmethod
    def poll(cls, context):
        return context.active_object is not None and context.active_object.type == "ARMATURE"

    def execute(self, context):
        wm = context.window_manager
        scene = context.scene
        frame_before = scene.frame_current
        wm.progress_begin(0, 100)
        try:
            compat.ensure_object_mode(context)
            src, tgt = _pair(context)
            message = self._run(context, src, tgt, wm)
        except MarionetteError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        except Exception as exc:  # a bug: still leave the scene as it was
            traceback.print_exc()
            self.report({"ERROR"}, f"Marionette retarget failed ({type(exc).__name__}: {exc}); nothing was changed")
            return {"CANCELLED"}
        finally:
            scene.frame_set(frame_before)
            wm.progress_end()
        self.report({"INFO"}, message)
        return {"FINISHED"}

    def _frames(self, action):
        lo, hi = (int(round(v)) for v in action.frame_range)
        if self.use_action_range:
            return np.arange(lo, hi + 1)
        if self.frame_end < self.frame_start:
            raise MarionetteError(f"frame range {self.frame_start}..{self.frame_end} is empty (end before start)")
        if self.frame_start < lo or self.frame_end > hi:
            raise MarionetteError(f"frame range {self.frame_start}..{self.frame_end} does not lie within the source "
                                  f"action '{action.name}' ({lo}..{hi}); the source has no motion outside it")
        return np.arange(self.frame_start, self.frame_end + 1)

    def _run(self, context, src, tgt, wm) -> str:
        from engine.motion.retarget import CanonicalMotion, retarget

        # every check first: nothing is changed before all of them pass
        action = _source_action(src)
        _check_target(tgt)
        frames = self._frames(action)
        if len(frames) < 2:
            raise MarionetteError("the frame range holds a single frame; need at least two")
        s_head, s_tail, s_label = bone_map(src)
        t_head, t_tail, t_label = bone_map(tgt)
        rig = target_rig(tgt, t_head, t_tail)
        to_space = np.array(tgt.matrix_world.inverted_safe(), dtype=np.float64)
        rest_pos, twist_bones = source_twist_data(src, s_head, s_tail, to_space)
        positions, orient = sample_source(context, src, s_head, s_tail, frames, to_space, wm, (0, 60),
                                          frame_bones=list(twist_bones))
        fps = context.scene.render.fps / context.scene.render.fps_base
        bone_frames = {key: (rest_frame, orient[b]) for b, (key, rest_frame) in twist_bones.items()}
        motion = CanonicalMotion(positions, fps, up=rig.up, rest=rest_pos, frames=bone_frames)
        # the engine works in the target's armature space; its contact thresholds are in metres
        unit = float(np.mean(np.array(tgt.matrix_world.to_scale(), dtype=np.float64)))
        res = retarget(motion, rig, root="keep" if self.root_motion == "KEEP" else "in_place", feet=self.pin_feet,
                       contact_height=self.contact_height / unit, contact_speed=self.contact_speed / unit)
        wm.progress_update(80)
        if not np.isfinite(res.rotations).all() or not np.isfinite(res.location).all():
            raise MarionetteError("retargeting produced invalid rotations (the source motion has missing joints "
                                  "in every frame?); nothing was changed")
        bone = tgt.data.bones[res.root_bone]
        if bone.use_connect:
            raise MarionetteError(f"target {tgt.name!r}: the hips bone '{bone.name}' is connected to its parent, so "
                                  "its location cannot be keyed; disconnect it (Edit Mode > Bone > Connected) first")
        location = res.location
        if not bone.use_local_location:
            # Blender then reads the location in the armature's axes, not the bone's
            location = location @ rig.rest_rotations[rig.bone_index(bone.name)].T
        name = self.action_name.strip() or f"{action.name} on {tgt.name}"
        self._write(context, tgt, res, frames, name, location)
        wm.progress_update(100)
        pinned = int(sum(m.sum() for m in res.contacts.values())) if self.pin_feet else 0
        return (f"Retargeted {len(frames)} frames ({frames[0]}..{frames[-1]}) from '{src.name}' ({s_label}) onto "
                f"'{tgt.name}' ({t_label}): {len(res.aims)} bones driven, root scale {res.scale:.3f}"
                + (f", feet pinned in {pinned} joint-frames" if self.pin_feet else ""))

    def _write(self, context, tgt, res, frames, name, location):
        ad = tgt.animation_data
        old_action = ad.action if ad is not None else None
        old_slot = getattr(ad, "action_slot", None) if ad is not None else None
        old_modes = {pb.name: pb.rotation_mode for pb in tgt.pose.bones}
        had_ad = ad is not None
        with compat.Transaction(context) as tx:
            try:
                act = tx.add(fcurves.new_action(name))
                fcurves.assign_action(tgt, act)
                for b, bname in enumerate(res.bone_names):
                    pb = tgt.pose.bones[bname]
                    pb.rotation_mode = "QUATERNION"
                    path = f'pose.bones["{_escape(bname)}"].rotation_quaternion'
                    for k in range(4):
                        fc = fcurves.ensure_fcurve(act, tgt, path, k, group=bname)
                        fcurves.write_keys(fc, frames, res.rotations[:, b, k])
                path = f'pose.bones["{_escape(res.root_bone)}"].location'
                for k in range(3):
                    fc = fcurves.ensure_fcurve(act, tgt, path, k, group=res.root_bone)
                    fcurves.write_keys(fc, frames, location[:, k])
            except Exception:
                for bname, mode in old_modes.items():
                    tgt.pose.bones[bname].rotation_mode = mode
                if had_ad:
                    tgt.animation_data.action = old_action
                    if old_slot is not None and hasattr(tgt.animation_data, "action_slot"):
                        tgt.animation_data.action_slot = old_slot
                elif tgt.animation_data is not None:
                    tgt.animation_data_clear()
                raise
        tgt["marionette_retarget_scale"] = float(res.scale)
        if "marionette_fps" in tgt:
            tgt["marionette_fps"] = float(res.fps)  # now keyed at the scene's rate, like the source


# ----------------------------------------------------------------------------- panel

class MARIONETTE_UL_bone_map(bpy.types.UIList):
    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index):
        row = layout.row(align=True)
        row.label(text=item.canonical + (" (tail)" if item.at_tail else ""))
        row.prop_search(item, "bone", data.data, "bones", text="")


class MARIONETTE_PT_retarget(bpy.types.Panel):
    bl_idname = "MARIONETTE_PT_retarget"
    bl_label = "Retarget"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Marionette"

    def draw(self, context):
        layout = self.layout
        src = context.active_object
        tgts = [o for o in context.selected_objects if o is not src and o.type == "ARMATURE"]
        col = layout.column()
        if src is None or src.type != "ARMATURE":
            col.label(text="Active armature = source (with motion)", icon="INFO")
            col.label(text="Selected armature = target")
            return
        col.label(text=f"Source: {src.name}", icon="ARMATURE_DATA")
        col.label(text=f"Target: {tgts[0].name if len(tgts) == 1 else '(select one other armature)'}",
                  icon="OUTLINER_OB_ARMATURE")
        row = col.row(align=True)
        row.operator(MARIONETTE_OT_retarget_detect.bl_idname, icon="VIEWZOOM")
        row.operator(MARIONETTE_OT_retarget_clear_map.bl_idname, text="", icon="X")
        for obj in [src] + tgts[:1]:
            box = layout.box()
            try:
                head, tail, label = bone_map(obj)
                box.label(text=f"{obj.name}: {label}, {len(head) + len(tail)} joints mapped")
            except MarionetteError:
                box.label(text=f"{obj.name}: no mapping - Detect, then fill in bones", icon="ERROR")
            if len(obj.marionette_bone_map):
                box.template_list("MARIONETTE_UL_bone_map", obj.name, obj, "marionette_bone_map",
                                  obj, "marionette_bone_map_index", rows=4)
        if len(tgts) == 1:
            op = layout.operator(MARIONETTE_OT_retarget.bl_idname, icon="ARMATURE_DATA")
            op.root_motion = "KEEP"


CLASSES = (MARIONETTE_PG_bone_map_item, MARIONETTE_OT_retarget_detect, MARIONETTE_OT_retarget_clear_map,
           MARIONETTE_OT_retarget, MARIONETTE_UL_bone_map, MARIONETTE_PT_retarget)


def register():
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Object.marionette_bone_map = CollectionProperty(type=MARIONETTE_PG_bone_map_item)
    bpy.types.Object.marionette_bone_map_index = IntProperty(default=0)


def unregister():
    del bpy.types.Object.marionette_bone_map_index
    del bpy.types.Object.marionette_bone_map
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
