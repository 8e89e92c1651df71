"""Marionette: Blender add-on (a Blender 4.2+ extension).

Submodules named in ``MODULES`` are imported relatively and registered in order;
each exposes ``register()``/``unregister()``. To add one, append its name.

How the add-on finds ``engine``
-------------------------------
The add-on's math lives in the ``engine`` package, which uses absolute imports
(``from engine import ...``). The built extension zip carries a copy of it at
``<extension>/_vendor/engine``; importing this package puts ``_vendor`` at the front
of ``sys.path`` so ``import engine`` resolves to that copy. Only the ``_vendor``
folder goes on the path (never the add-on folder itself, whose module names such as
``compat`` would shadow others). When the add-on is imported straight from the
source tree (tests, development), there is no ``_vendor`` and the ``engine`` installed
with ``pip install -e .`` is used. If some other ``engine`` module was imported first,
registration stops with a clear message instead of running foreign code.
"""

from __future__ import annotations

import importlib
import os
import sys

_VENDOR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_vendor")


def _ensure_engine() -> None:
    if os.path.isdir(os.path.join(_VENDOR, "engine")) and _VENDOR not in sys.path:
        sys.path.insert(0, _VENDOR)
    try:
        import engine
    except ImportError as exc:
        raise ImportError("Marionette: the 'engine' package is missing; install the extension zip built by "
                          "scripts/build_extension.py, or 'pip install -e .' for development") from exc
    if not hasattr(engine, "MarionetteError"):
        raise ImportError(f"Marionette: a different module named 'engine' is already loaded "
                          f"({getattr(engine, '__file__', '?')}); disable the add-on that provides it")


_ensure_engine()

# Other engineers' modules are appended here (e.g. "ops_retarget", "ops_resample", "render_engine", "ops_bind").
MODULES = ("preferences", "torch_setup", "ops_import", "ops_capture", "ops_retarget", "ops_resample", "ops_bind", "render_engine",
           "primitive_overlay", "ops_export")

_registered = []


def _modules():
    return [importlib.import_module(f".{name}", __package__) for name in MODULES]


def register():
    _ensure_engine()
    for mod in _modules():
        try:
            mod.register()
        except Exception:
            # leave Blender clean when a later module fails
            unregister()
            raise
        _registered.append(mod)


def unregister():
    while _registered:
        mod = _registered.pop()
        try:
            mod.unregister()
        except Exception as exc:  # keep unregistering the others
            print(f"Marionette: unregistering {mod.__name__} failed: {exc}")
    # The vendored engine stays on sys.path and in sys.modules: modules still holding it (and
    # lazy imports inside engine) must keep resolving. After upgrading the extension, restart Blender.
