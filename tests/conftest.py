"""Shared pytest fixtures.

Blender add-on tests
--------------------
``blender`` (per test) gives the ``bpy`` module with an empty factory scene and the
Marionette extension enabled, installed from the zip that ``scripts/build_extension.py``
builds, into a sandboxed Blender user folder (``blender_sandbox``, once per session).
Tests are skipped when ``bpy`` is not installed. See ``tests/blender_sandbox.py``.

The sandbox folder is chosen here, at import time: ``BLENDER_USER_RESOURCES`` must be
set before anything imports ``bpy`` (Blender resolves its extension folders once), and
conftest files are imported before test modules. Inside pytest-blender's Blender the
variable is inherited from the outer pytest process, which set it before Blender started.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import blender_sandbox as _sandbox  # noqa: E402

if not os.environ.get(_sandbox.SANDBOX_ENV):
    _dir = tempfile.mkdtemp(prefix="marionette-blender-user-")
    os.environ[_sandbox.SANDBOX_ENV] = _dir
    atexit.register(shutil.rmtree, _dir, ignore_errors=True)
if os.environ.get("PYTEST_XDIST_WORKER") and not os.environ.get("MARIONETTE_TEST_BLENDER_WORKER"):
    # pytest-xdist workers inherit the controller's folder: give each its own, or two workers
    # installing the extension at once collide on the repository lock
    _dir = tempfile.mkdtemp(prefix=f"marionette-blender-user-{os.environ['PYTEST_XDIST_WORKER']}-")
    os.environ[_sandbox.SANDBOX_ENV] = _dir
    os.environ["MARIONETTE_TEST_BLENDER_WORKER"] = _dir
    atexit.register(shutil.rmtree, _dir, ignore_errors=True)
os.environ["BLENDER_USER_RESOURCES"] = os.environ[_sandbox.SANDBOX_ENV]


@pytest.fixture(scope="session")
def blender_sandbox(tmp_path_factory):
    """The extension built and installed once per session (a ``BlenderSandbox``)."""
    pytest.importorskip("bpy")
    zip_path = _sandbox.build_zip(tmp_path_factory.mktemp("extension_zip"))
    sandbox = _sandbox.BlenderSandbox(_sandbox.sandbox_user_dir(), zip_path)
    sandbox.install()
    yield sandbox
    sandbox.uninstall()


@pytest.fixture
def blender(blender_sandbox):
    """``bpy`` with an empty factory scene and the Marionette add-on enabled."""
    blender_sandbox.reset()
    yield blender_sandbox.bpy
