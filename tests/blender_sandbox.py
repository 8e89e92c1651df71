"""A sandboxed Blender for add-on tests: the extension zip installed into a throw-away user folder.

Used through the fixtures in ``tests/conftest.py`` (``blender_sandbox``, session-wide, and
``blender``, per test); add-on tests of every engineer should use those rather than this
module directly::

    def test_my_operator(blender):                # blender is the bpy module, scene reset
        bpy = blender
        before = data_counts(bpy)
        bpy.ops.marionette.my_operator(...)

How it works
------------
* ``conftest.py`` points ``BLENDER_USER_RESOURCES`` at a temporary folder when it is
  imported, *before anything imports bpy* (Blender resolves its extension repositories
  once, at import). Nothing is ever written to the real Blender config of the machine.
* :func:`build_zip` builds the extension exactly as users get it
  (``scripts/build_extension.py``) into a temporary folder, so tests exercise the zip,
  not the source tree.
* :meth:`BlenderSandbox.install` runs
  ``bpy.ops.extensions.package_install_files(filepath=zip, repo="user_default",
  enable_on_install=True)``; the add-on then lives at ``bl_ext.user_default.marionette``.
* :meth:`BlenderSandbox.reset` runs ``bpy.ops.wm.read_factory_settings(use_empty=True)``
  (empty scene, factory preferences, which also disables add-ons) and enables the
  installed add-on again, so each test starts from the same state.

Inside a real Blender (pytest-blender, ``pytest --blender-executable /path/to/blender``) the
outer pytest process sets the same environment variable before Blender starts, so the
same fixtures work there too.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPO = "user_default"
PACKAGE_ID = "marionette"
MODULE = f"bl_ext.{REPO}.{PACKAGE_ID}"
SANDBOX_ENV = "MARIONETTE_TEST_BLENDER_USER"

# bpy.data collections compared before/after an operator that must leave no trace
DATA_KINDS = ("objects", "armatures", "actions", "meshes", "shape_keys", "materials", "collections", "cameras",
              "images", "node_groups")


def build_zip(out_dir) -> Path:
    """Build the extension zip with ``scripts/build_extension.py`` into ``out_dir``."""
    spec = importlib.util.spec_from_file_location("_marionette_build_extension", ROOT / "scripts" / "build_extension.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.build(Path(out_dir), check=False)


def data_counts(bpy) -> dict:
    """Number of datablocks of each kind in ``DATA_KINDS`` (to prove an operator left no trace)."""
    return {kind: len(getattr(bpy.data, kind)) for kind in DATA_KINDS}


class BlenderSandbox:
    """The installed extension in the sandboxed user folder."""

    def __init__(self, user_dir, zip_path):
        import bpy

        self.bpy = bpy
        self.user_dir = Path(user_dir)
        self.zip_path = Path(zip_path)
        self.module = MODULE
        repo_dir = Path(bpy.utils.user_resource("EXTENSIONS", path=REPO))
        if self.user_dir.resolve() not in repo_dir.resolve().parents:
            raise RuntimeError(
                f"Blender's user extensions folder is {repo_dir}, not inside the sandbox {self.user_dir}: bpy was "
                "imported before tests/conftest.py set BLENDER_USER_RESOURCES. Refusing to install into a real "
                "Blender configuration.")

    def install(self) -> None:
        bpy = self.bpy
        bpy.ops.wm.read_factory_settings(use_empty=True)
        result = bpy.ops.extensions.package_install_files(filepath=str(self.zip_path), repo=REPO,
                                                          enable_on_install=True)
        if result != {"FINISHED"} or self.module not in bpy.context.preferences.addons:
            raise RuntimeError(f"installing {self.zip_path} failed: {result}")

    @property
    def installed_path(self) -> Path:
        return Path(self.bpy.utils.user_resource("EXTENSIONS", path=REPO)) / PACKAGE_ID

    def enable(self) -> None:
        import addon_utils

        if self.module not in self.bpy.context.preferences.addons:
            mod = addon_utils.enable(self.module, default_set=True, handle_error=None)
            if mod is None:
                raise RuntimeError(f"could not enable {self.module}")

    def reset(self) -> None:
        """Empty scene, factory preferences, the add-on enabled (and only its default settings)."""
        self.bpy.ops.wm.read_factory_settings(use_empty=True)
        self.enable()

    def preferences(self):
        return self.bpy.context.preferences.addons[self.module].preferences

    def uninstall(self) -> None:
        import addon_utils

        if self.module in self.bpy.context.preferences.addons:
            addon_utils.disable(self.module, default_set=True)


def sandbox_user_dir() -> Path | None:
    value = os.environ.get(SANDBOX_ENV)
    return Path(value) if value else None
