"""Add-on preferences: where the user's own SMPL model files are (licensed, never shipped)."""

from __future__ import annotations

import bpy
from bpy.props import EnumProperty, StringProperty


class MARIONETTE_AP_preferences(bpy.types.AddonPreferences):
    # extensions load as bl_ext.<repo>.marionette; preferences are keyed by that package name
    bl_idname = __package__

    smpl_model_neutral: StringProperty(
        name="SMPL model (neutral)", subtype="FILE_PATH",
        description="Your SMPL model file (.npz, or .pkl read without running code); used when the "
                    "motion's gender has no model of its own")
    smpl_model_female: StringProperty(name="SMPL model (female)", subtype="FILE_PATH",
                                      description="SMPL model used for motions whose gender is 'female'")
    smpl_model_male: StringProperty(name="SMPL model (male)", subtype="FILE_PATH",
                                    description="SMPL model used for motions whose gender is 'male'")

    # neural rendering (addon/render_engine.py, addon/torch_setup.py)
    device: EnumProperty(
        name="Device", default="AUTO",
        items=(("AUTO", "Auto", "CUDA if available, then Apple Metal, else CPU"),
               ("CPU", "CPU", "Render on the CPU"), ("CUDA", "CUDA", "Render on an NVIDIA GPU"),
               ("MPS", "Metal", "Render on an Apple GPU")),
        description="Where the neural renderer runs")
    torch_path: StringProperty(
        name="PyTorch folder", subtype="DIR_PATH",
        description="Extra site-packages folder holding PyTorch for Blender's Python (filled in by Install PyTorch)")

    def model_for_gender(self, gender: str) -> str:
        """The model path for a motion's gender: that gender's model, else the neutral one, else ''."""
        g = (gender or "").strip().lower()
        by_gender = {"female": self.smpl_model_female, "male": self.smpl_model_male}
        path = by_gender.get(g) or self.smpl_model_neutral
        return bpy.path.abspath(path) if path else ""

    def draw(self, context):
        col = self.layout.column()
        col.label(text="SMPL model files are licensed separately; Marionette never ships them.")
        col.prop(self, "smpl_model_neutral")
        col.prop(self, "smpl_model_female")
        col.prop(self, "smpl_model_male")
        col.label(text="Without a model, SMPL motion imports onto a generic rest skeleton (no mesh).")
        from .torch_setup import draw_preferences

        draw_preferences(self, self.layout)


CLASSES = (MARIONETTE_AP_preferences,)


register, unregister = bpy.utils.register_classes_factory(CLASSES)
