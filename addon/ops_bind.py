"""Binding a learned actor to an armature, and one-click render setup.

* ``Object.marionette_actor``: the actor folder an armature renders as (a file path property,
  so it is saved in the .blend, relative paths allowed).
* ``bpy.ops.marionette.bind_actor(filepath=...)``: validates the actor folder as rendering loads it
  (``engine.scene.shot.validate_actor``: format, version, tensors present with the recorded size,
  hash and shapes; needs PyTorch), checks that the active armature's joint set matches (or maps
  onto) the actor's, reports which of the actor's joints are estimated from the armature's
  (``engine.body.joint_sets.ESTIMATED``), then binds it. Undoable.
* ``bpy.ops.marionette.setup_render()``: Marionette engine, 'Standard' view transform, no dither —
  the settings under which saved PNGs hold exactly what the decoder produced. Undoable.
* An Object Properties panel "Marionette Actor" for armatures: the bound actor's name, joint set,
  training summary and held-out quality (``actor.json``), the joints it estimates, and the
  result of the last full validation.
"""

from __future__ import annotations

import os

import bpy
from bpy.props import StringProperty
from bpy_extras.io_utils import ImportHelper

from engine import MarionetteError

from .armature import JOINT_BONES_PROP
from .pose_read import joint_set_name

# Full validations done by bind_actor: actor folder -> (file stamp, error message or "")
_VALIDATED: dict[str, tuple[tuple, str]] = {}


def _actor_folder(path: str) -> str:
    path = bpy.path.abspath(path)
    return os.path.dirname(path) if os.path.basename(path) in ("actor.json", "actor.safetensors") else path


def _stamp(folder: str) -> tuple:
    out = []
    for name in ("actor.json", "actor.safetensors"):
        try:
            st = os.stat(os.path.join(folder, name))
            out.append((st.st_mtime_ns, st.st_size))
        except OSError:
            out.append(None)
    return tuple(out)


def validate_actor(path: str) -> None:
    """Check the actor folder fully, as rendering loads it (needs PyTorch); a MarionetteError says
    what is wrong. The result is remembered for the panel until the files change."""
    from engine.scene.shot import validate_actor as engine_validate

    from .render_engine import ensure_torch

    folder = _actor_folder(path)
    stamp = _stamp(folder)
    try:
        ensure_torch()
        engine_validate(folder)
    except MarionetteError as exc:
        _VALIDATED[folder] = (stamp, str(exc))
        raise
    except Exception as exc:  # a file the loader did not foresee: still refuse, and say so
        message = f"{folder}: the actor could not be loaded ({type(exc).__name__}: {exc})"
        _VALIDATED[folder] = (stamp, message)
        raise MarionetteError(message) from None
    _VALIDATED[folder] = (stamp, "")


def last_validation(path: str) -> str | None:
    """"" when the actor passed full validation and has not changed since, its error when it failed,
    None when it was not validated (or changed since)."""
    folder = _actor_folder(path)
    hit = _VALIDATED.get(folder)
    return hit[1] if hit is not None and hit[0] == _stamp(folder) else None


def estimated_joints(obj, path: str) -> dict[str, list[str]]:
    """{actor joint: armature joints it is estimated from} for the actor at ``path`` ({} when none or unknown)."""
    from engine.scene.shot import estimated_joints as engine_estimated, read_actor_header

    js = joint_set_name(obj)
    try:
        return engine_estimated(js, str(read_actor_header(_actor_folder(path))["joint_set"])) if js else {}
    except MarionetteError:
        return {}


def check_binding(obj, path: str) -> tuple[bool, str]:
    """(ok, message) for binding the actor at ``path`` to armature ``obj`` (its actor.json only: cheap)."""
    from engine.scene.shot import joint_set_compatibility, read_actor_header

    if obj is None or obj.type != "ARMATURE":
        return False, "select an armature"
    js = joint_set_name(obj)
    if not js:
        if JOINT_BONES_PROP in obj:
            from engine.body.joint_sets import JOINT_SETS

            return False, (f"{obj.name!r} is a generic skeleton (its joint names match no known joint set); an "
                           f"actor needs one of {', '.join(JOINT_SETS)}")
        return False, f"{obj.name!r} has no Marionette joint set; import it with File > Import > Marionette"
    try:
        doc = read_actor_header(_actor_folder(path))
    except MarionetteError as exc:
        return False, str(exc)
    ok, missing = joint_set_compatibility(js, str(doc["joint_set"]))
    if not ok:
        return False, (f"the armature holds {js} joints but the actor needs {doc['joint_set']}; "
                       f"cannot obtain: {', '.join(missing)}")
    how = "same joint set" if js == doc["joint_set"] else f"{js} mapped onto {doc['joint_set']}"
    est = estimated_joints(obj, path)
    if est:
        how += f"; estimated: {', '.join(est)}"
    return True, f"actor for {doc['joint_set']} ({how})"


class MARIONETTE_OT_bind_actor(bpy.types.Operator, ImportHelper):
    """Render the active armature as a learned Marionette actor"""

    bl_idname = "marionette.bind_actor"
    bl_label = "Bind Actor"
    bl_options = {"REGISTER", "UNDO"}

    filter_glob: StringProperty(default="actor.json", options={"HIDDEN"})
    filepath: StringProperty(name="Actor", subtype="FILE_PATH",
                             description="Actor folder (or its actor.json) written by 'marionette train'")

    @classmethod
    def poll(cls, context):
        obj = context.active_object
        return obj is not None and obj.type == "ARMATURE"

    def execute(self, context):
        obj = context.active_object
        if not self.filepath:
            self.report({"ERROR"}, "choose an actor folder or its actor.json")
            return {"CANCELLED"}
        ok, message = check_binding(obj, self.filepath)
        if ok:
            try:
                validate_actor(self.filepath)
            except MarionetteError as exc:
                ok, message = False, str(exc)
        if not ok:
            self.report({"ERROR"}, f"Marionette: cannot bind: {message}")
            return {"CANCELLED"}
        obj.marionette_actor = _actor_folder(self.filepath)
        self.report({"INFO"}, f"Marionette: {obj.name} renders as {obj.marionette_actor} — {message}")
        return {"FINISHED"}


class MARIONETTE_OT_bind_demo_actor(bpy.types.Operator):
    """Render the active armature as the demo actor that ships with Marionette"""

    bl_idname = "marionette.bind_demo_actor"
    bl_label = "Bind Demo Actor"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        obj = context.active_object
        return obj is not None and obj.type == "ARMATURE"

    def execute(self, context):
        from engine.data import demo_actor_path

        try:
            path = str(demo_actor_path())
        except MarionetteError as exc:
            self.report({"ERROR"}, f"Marionette: {exc}")
            return {"CANCELLED"}
        return bpy.ops.marionette.bind_actor(filepath=path)


class MARIONETTE_OT_unbind_actor(bpy.types.Operator):
    """Stop rendering the active armature as an actor"""

    bl_idname = "marionette.unbind_actor"
    bl_label = "Unbind Actor"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        obj = context.active_object
        return obj is not None and obj.type == "ARMATURE" and bool(obj.marionette_actor)

    def execute(self, context):
        context.active_object.marionette_actor = ""
        return {"FINISHED"}


class MARIONETTE_OT_setup_render(bpy.types.Operator):
    """Use the Marionette engine with colour settings that keep the decoder's colours exact"""

    bl_idname = "marionette.setup_render"
    bl_label = "Set Up Marionette Render"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        scene = context.scene
        scene.render.engine = "MARIONETTE"
        vs = scene.view_settings
        vs.view_transform = "Standard"
        vs.look = "None"
        vs.exposure = 0.0
        vs.gamma = 1.0
        vs.use_curve_mapping = False
        scene.render.dither_intensity = 0.0
        scene.render.image_settings.file_format = "PNG"
        scene.render.image_settings.color_mode = "RGBA"
        return {"FINISHED"}


class OBJECT_PT_marionette_actor(bpy.types.Panel):
    bl_label = "Marionette Actor"
    bl_space_type = "PROPERTIES"
    bl_region_type = "WINDOW"
    bl_context = "object"

    @classmethod
    def poll(cls, context):
        return context.object is not None and context.object.type == "ARMATURE"

    def draw(self, context):
        layout = self.layout
        obj = context.object
        js = joint_set_name(obj)
        generic = not js and JOINT_BONES_PROP in obj
        layout.label(text=f"Joint set: {js or ('generic skeleton' if generic else 'none (not a Marionette armature)')}",
                     icon="ARMATURE_DATA")
        layout.prop(obj, "marionette_actor", text="Actor")
        if obj.marionette_actor:
            for line, icon in panel_lines(obj, obj.marionette_actor):
                layout.label(text=line, icon=icon)
            layout.operator(MARIONETTE_OT_unbind_actor.bl_idname, icon="X")
        row = layout.row()
        row.operator(MARIONETTE_OT_bind_actor.bl_idname, icon="FILEBROWSER")
        row.operator(MARIONETTE_OT_bind_demo_actor.bl_idname, icon="USER")
        if hasattr(context.scene, "marionette_show_primitives"):  # addon/primitive_overlay.py
            row = layout.row(align=True)
            row.prop(context.scene, "marionette_show_primitives", icon="MESH_UVSPHERE")
            sub = row.row(align=True)
            sub.active = context.scene.marionette_show_primitives
            sub.prop(context.scene, "marionette_primitive_sigma", expand=True)
        if context.scene.render.engine != "MARIONETTE":
            layout.operator(MARIONETTE_OT_setup_render.bl_idname, icon="RENDER_STILL")


def panel_lines(obj, path: str) -> list[tuple[str, str]]:
    """(text, icon) lines the actor panel shows for the actor bound at ``path``: the binding check, the
    actor's name, joint set, training and held-out quality, its estimated joints, the last full validation."""
    from engine.scene.shot import actor_summary, read_actor_header

    ok, message = check_binding(obj, path)
    lines = [(message, "CHECKMARK" if ok else "ERROR")]
    try:
        doc = read_actor_header(_actor_folder(path))
    except MarionetteError:
        return lines
    info = actor_summary(doc, _actor_folder(path))
    lines += [(f"Actor: {info['name']} ({info['joint_set']})", "USER"),
              (f"Training: {info['training']}", "TIME"),
              (f"Held-out: {info['quality']}", "IMAGE_DATA")]
    est = list(estimated_joints(obj, path))
    for i in range(0, len(est), 4):
        lines.append((("Estimated: " if i == 0 else "    ") + ", ".join(est[i:i + 4]), "INFO"))
    checked = last_validation(path)
    if checked is None:
        lines.append(("Files not validated in this session: Bind Actor checks them", "QUESTION"))
    elif checked:
        lines.append((f"Invalid: {checked}", "ERROR"))
    return lines


CLASSES = (MARIONETTE_OT_bind_actor, MARIONETTE_OT_bind_demo_actor, MARIONETTE_OT_unbind_actor, MARIONETTE_OT_setup_render,
           OBJECT_PT_marionette_actor)


def register():
    bpy.types.Object.marionette_actor = StringProperty(
        name="Actor", subtype="DIR_PATH", default="",
        description="Folder of the learned actor this armature renders as (Marionette render engine)")
    for cls in CLASSES:
        bpy.utils.register_class(cls)


def unregister():
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
    del bpy.types.Object.marionette_actor
