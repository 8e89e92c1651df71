"""Frame rates and frame ranges of imported motion, and the bounds of import options.

The Blender importers (``addon/ops_import.py``) key motion at a frame rate, from a start
frame, and may set the scene's rate and frame range to the clip's; this module holds the
arithmetic and the checks, so they are tested without Blender::

    >>> scene_rate(30.0)
    (30, 1.0)
    >>> fps, base = scene_rate(29.97); fps, round(base, 6)
    (30, 1.001001)
    >>> check_import_options(start_frame=1, target_fps=0.0, scale=1.0)
    (1, 0.0, 1.0)

Blender stores a scene's rate as an integer ``fps`` over a float ``fps_base``; frames run
from -1048574 to 1048574 (the scene's start and end frames from 0).
"""

from __future__ import annotations

import math

from engine import MarionetteError

MAX_SCENE_FRAME = 1_048_574     # Blender's MAXFRAME
MIN_IMPORT_FPS, MAX_IMPORT_FPS = 0.1, 1000.0
MIN_SCALE, MAX_SCALE = 1e-4, 1e4


def scene_rate(fps: float) -> tuple[int, float]:
    """Blender's ``(render.fps, render.fps_base)`` for a frame rate: ``fps / fps_base == rate``."""
    fps = float(fps)
    if not (math.isfinite(fps) and fps > 0):
        raise MarionetteError(f"frame rate must be a positive number, got {fps}")
    whole = max(1, int(round(fps)))
    return whole, whole / fps


def rate_of(fps: int, fps_base: float) -> float:
    """The frame rate of Blender's ``(render.fps, render.fps_base)``."""
    return float(fps) / float(fps_base)


def same_rate(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-6 * max(abs(a), abs(b), 1.0)


def check_import_options(start_frame, target_fps, scale) -> tuple[int, float, float]:
    """Validate an importer's options -> (start_frame, target_fps, scale), or a MarionetteError saying
    which option, what it must be and what it got. ``target_fps`` 0 means "not given"."""
    if isinstance(start_frame, bool) or not isinstance(start_frame, int) or abs(start_frame) > MAX_SCENE_FRAME:
        raise MarionetteError(f"Start Frame must be a whole frame number from {-MAX_SCENE_FRAME} to "
                              f"{MAX_SCENE_FRAME} (Blender's frame range), got {start_frame!r}")
    fps = float(target_fps)
    if not (math.isfinite(fps) and (fps == 0 or MIN_IMPORT_FPS <= fps <= MAX_IMPORT_FPS)):
        raise MarionetteError(f"Frame Rate must be 0 (the motion's own rate) or from {MIN_IMPORT_FPS:g} to "
                              f"{MAX_IMPORT_FPS:g} frames per second, got {target_fps!r}")
    s = float(scale)
    if not (math.isfinite(s) and MIN_SCALE <= s <= MAX_SCALE):
        raise MarionetteError(f"Scale must be a number from {MIN_SCALE:g} to {MAX_SCALE:g} (positions are "
                              f"multiplied by it; files are in metres), got {scale!r}")
    return int(start_frame), fps, s


def check_key_range(start_frame: int, last_offset: int, set_frame_range: bool, fps: float, seconds: float) -> int:
    """The last keyed frame of a clip keyed from ``start_frame``, checked against Blender's frame range."""
    last = int(start_frame) + int(last_offset)
    if last > MAX_SCENE_FRAME:
        raise MarionetteError(f"the clip ({seconds:g} s at {fps:g} fps) keyed from frame {start_frame} would end at "
                              f"frame {last}, past Blender's last frame {MAX_SCENE_FRAME}; use an earlier Start "
                              "Frame or a lower Frame Rate")
    if set_frame_range and start_frame < 0:
        raise MarionetteError(f"Start Frame {start_frame} is negative but the scene's frame range starts at 0 or "
                              "later; use a Start Frame >= 0 or turn off 'Set Frame Range'")
    return last
