"""Binding a learned actor to an armature, and one-click render setup.

* ``Object.marionette_actor``: the actor folder an armature renders as (a file path property,
  so it is saved in the .blend, relative paths allowed).
* ``bpy.ops.marionette.bind_actor(filepath=...)``: checks that the active armature's joint set
  matches (or maps onto) the actor's, then binds it. Undoable.
* ``bpy.ops.marionette.setup_render()``: Marionette engine, 'Standard' view transform, no dither —
  the settings under which saved PNGs hold exactly what the decoder produced. Undoable.
* An Object Properties panel "Marionette Actor" for armatures.
"""

from __future__ import annotations

import os

import bpy
from bpy.props import StringProperty
from bpy_extras.io_utils import ImportHelper

from engine import MarionetteError

from .pose_read import joint_set_name


def _actor_folder(path: str) -> str:
    path = bpy.path.abspath(path)
    return os.path.dirname(path) if os.path.basename(path) in ("actor.json", "actor.safetensors") else path


def check_binding(obj, path: str) -> tuple[bool, str]:
    """(ok, message) for binding the actor at ``path`` to armature ``obj``."""
    from engine.scene.shot import joint_set_compatibility, read_actor_header

    if obj is None or obj.type != "ARMATURE":
        return False, "select an armature"
    js = joint_set_name(obj)
    if not js:
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
        layout.label(text=f"Joint set: {js or 'none (not a Marionette armature)'}", icon="ARMATURE_DATA")
        layout.prop(obj, "marionette_actor", text="Actor")
        if obj.marionette_actor:
            ok, message = check_binding(obj, obj.marionette_actor)
            layout.label(text=message, icon="CHECKMARK" if ok else "ERROR")
            layout.operator(MARIONETTE_OT_unbind_actor.bl_idname, icon="X")
        row = layout.row()
        row.operator(MARIONETTE_OT_bind_actor.bl_idname, icon="FILEBROWSER")
        row.operator(MARIONETTE_OT_bind_demo_actor.bl_idname, icon="USER")
        if context.scene.render.engine != "MARIONETTE":
            layout.operator(MARIONETTE_OT_setup_render.bl_idname, icon="RENDER_STILL")


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
