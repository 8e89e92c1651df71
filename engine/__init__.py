"""Marionette engine: everything that computes. Never imports ``bpy``."""

__version__ = "0.1.0"


class MarionetteError(Exception):
    """A user-facing error: bad input, a missing file, an unsupported option.

    The CLI prints these as one clear message (no traceback); Blender operators
    report them in the UI. Messages name the file, the field and what was expected.
    """
