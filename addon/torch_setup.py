"""Where PyTorch comes from inside Blender.

Blender ships its own Python without torch. Users either point the preferences at
a folder that holds a torch installation for Blender's Python version (e.g. a
virtual environment's ``site-packages``), or press "Install PyTorch", which runs
Blender's own Python's pip into the extension's user folder — only when Blender
allows online access (Preferences > System > Network), and never at register time.
"""

from __future__ import annotations

import os
import subprocess
import sys

import bpy
from bpy.props import StringProperty


def user_site_packages(create: bool = False) -> str:
    """The extension's own folder for packages it installs (survives extension upgrades)."""
    package = __package__
    try:
        return bpy.utils.extension_path_user(package, path="site-packages", create=create)
    except (ValueError, AttributeError):  # add-on loaded from source, not as an extension
        return os.path.join(bpy.utils.user_resource("SCRIPTS", path="marionette"), "site-packages")


def online_access_allowed() -> bool:
    return bool(getattr(bpy.app, "online_access", True))


def torch_status() -> str:
    try:
        import torch

        cuda = "CUDA" if torch.cuda.is_available() else "no CUDA"
        return f"PyTorch {torch.__version__} ({cuda})"
    except ImportError:
        return "PyTorch not found"


class MARIONETTE_OT_install_torch(bpy.types.Operator):
    """Install PyTorch for Blender's Python into Marionette's user folder (needs online access)"""

    bl_idname = "marionette.install_torch"
    bl_label = "Install PyTorch"
    bl_options = {"REGISTER"}

    spec: StringProperty(name="Requirements", default="torch safetensors",
                         description="pip requirements; the renderer needs torch and safetensors. For a CUDA build: "
                                     "'torch safetensors --extra-index-url https://download.pytorch.org/whl/cu124'")

    _proc = None
    _timer = None

    @classmethod
    def poll(cls, context):
        return online_access_allowed()

    def execute(self, context):
        if not online_access_allowed():
            self.report({"ERROR"}, "Blender does not allow online access (Preferences > System > Network)")
            return {"CANCELLED"}
        target = user_site_packages(create=True)
        cmd = [sys.executable, "-m", "pip", "install", "--upgrade", "--target", target, *self.spec.split()]
        self.report({"INFO"}, "Marionette: installing PyTorch (this takes minutes)…")
        self._target = target
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wm = context.window_manager
        self._timer = wm.event_timer_add(1.0, window=context.window)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        if event.type != "TIMER" or self._proc.poll() is None:
            return {"PASS_THROUGH"}
        context.window_manager.event_timer_remove(self._timer)
        output = self._proc.stdout.read() if self._proc.stdout else ""
        if self._proc.returncode != 0:
            tail = output.strip().splitlines()[-3:]
            self.report({"ERROR"}, "Marionette: pip failed: " + " | ".join(tail))
            return {"CANCELLED"}
        from .compat import addon_preferences

        prefs = addon_preferences(context)
        if prefs is not None:
            prefs.torch_path = self._target
        if self._target not in sys.path:
            sys.path.append(self._target)
        self.report({"INFO"}, f"Marionette: PyTorch installed into {self._target}")
        return {"FINISHED"}


def draw_preferences(prefs, layout) -> None:
    """The render/PyTorch part of the add-on preferences (called from preferences.draw)."""
    box = layout.box()
    box.label(text="Neural rendering", icon="RENDER_STILL")
    box.prop(prefs, "device")
    box.prop(prefs, "torch_path")
    box.label(text=torch_status())
    row = box.row()
    row.enabled = online_access_allowed()
    row.operator(MARIONETTE_OT_install_torch.bl_idname, icon="IMPORT")
    if not online_access_allowed():
        box.label(text="Online access is off (Preferences > System > Network)", icon="INFO")


CLASSES = (MARIONETTE_OT_install_torch,)


register, unregister = bpy.utils.register_classes_factory(CLASSES)
