"""Checks for values that come from users: option values, fields of files, paths inside project files.

Every check raises a ``MarionetteError`` that names what was checked (an option such as
``--fps``, or ``PATH: field 'fps'``), what was expected and what it got. The module knows no
domain: its caps only keep absurd values (a tampered file, a typo) from asking for
terabytes or from reaching numerical code as NaN/inf. Readers and commands share them, so
one limit is spelled once.

>>> number(2.5, "--scale", lo=0, lo_open=True)
2.5
>>> number(float("inf"), "--scale", lo=0, lo_open=True)
Traceback (most recent call last):
engine.MarionetteError: --scale must be a finite number > 0, got inf
>>> whole_number(1920.0, "width", lo=1)
1920
"""

from __future__ import annotations

import math
import numbers
import os
from pathlib import Path

from engine import MarionetteError

MAX_FRAMES = 1_000_000        # rows a skeleton sequence may have, or a resampling may produce
MAX_FRAME_NUMBER = 10 ** 9    # frame numbers: keypoint file names, frame_indices, capture.json
MAX_FPS = 10_000.0            # frames per second
MAX_IMAGE_SIDE = 100_000      # pixels: a camera's width or height
MAX_RENDER_SIDE = 16_384      # pixels: a rendered or evaluated image's longer side
MAX_BATCH = 4096              # views or frames per forward pass
MAX_THREADS = 4096


def is_number(value) -> bool:
    """A real number (Python or numpy), not a bool and not a string."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _describe(lo, hi, lo_open: bool, hi_open: bool, integer: bool) -> str:
    kind = "an integer" if integer else "a finite number"
    parts = []
    if lo is not None:
        parts.append(f"{'>' if lo_open else '>='} {lo:g}" if not integer else f"{'>' if lo_open else '>='} {lo}")
    if hi is not None:
        parts.append(f"{'<' if hi_open else '<='} {hi:g}" if not integer else f"{'<' if hi_open else '<='} {hi}")
    return kind + (" " + " and ".join(parts) if parts else "")


def number(value, what: str, *, lo=None, hi=None, lo_open: bool = False, hi_open: bool = False,
           integer: bool = False):
    """``value`` if it is a finite real number within the bounds, else a MarionetteError.

    ``integer`` also requires a whole number (an ``int``, or a float such as ``3.0``) and returns an ``int``.
    """
    desc = _describe(lo, hi, lo_open, hi_open, integer)
    if not is_number(value):
        raise MarionetteError(f"{what} must be {desc}, got {_short(value)}")
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an int too large for a float
        finite = False
    if not finite:
        raise MarionetteError(f"{what} must be {desc}, got {_short(value)}")
    if integer:
        if isinstance(value, numbers.Integral):
            value = int(value)
        elif float(value).is_integer():
            value = int(value)
        else:
            raise MarionetteError(f"{what} must be {desc}, got {_short(value)}")
    else:
        value = float(value)
    if lo is not None and (value < lo or (lo_open and value == lo)):
        raise MarionetteError(f"{what} must be {desc}, got {_short(value)}")
    if hi is not None and (value > hi or (hi_open and value == hi)):
        raise MarionetteError(f"{what} must be {desc}, got {_short(value)}")
    return value


def whole_number(value, what: str, lo=None, hi=None) -> int:
    """An integer (``1920`` or ``1920.0``) within the bounds."""
    return number(value, what, lo=lo, hi=hi, integer=True)


def optional_number(value, what: str, **bounds):
    """``number`` that lets None through (an option left at its default)."""
    return None if value is None else number(value, what, **bounds)


def string(value, what: str) -> str:
    if not isinstance(value, str):
        raise MarionetteError(f"{what} must be a string, got {_short(value)}")
    return value


def string_list(value, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MarionetteError(f"{what} must be a list of strings, got {_short(value)}")
    return list(value)


def _short(value, limit: int = 60) -> str:
    try:
        text = repr(value)
    except Exception:  # a repr that fails (e.g. a 5000-digit int) must not hide the real message
        text = f"<{type(value).__name__}>"
    if isinstance(value, int) and not isinstance(value, bool) and len(text) > limit:
        return f"an integer of {len(text)} digits"
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------- paths
def confined_file(folder, name, what: str) -> Path:
    """``folder / name`` for a file name read from a project file, refusing anything that leaves ``folder``.

    ``name`` must be a plain relative path (no absolute path, drive, ``..`` or empty part).
    """
    if not isinstance(name, str) or not name or "\0" in name:
        raise MarionetteError(f"{what} must be a file name inside {folder}, got {_short(name)}")
    pure = Path(name.replace("\\", "/"))
    if pure.is_absolute() or pure.drive or any(p in ("..", "") for p in pure.parts) or name.startswith(("/", "\\")):
        raise MarionetteError(f"{what} is {name!r}: it must name a file inside {folder} (no absolute path, no '..')")
    path = Path(folder) / pure
    base = os.path.normpath(os.path.abspath(folder))
    if os.path.commonpath([base, os.path.normpath(os.path.abspath(path))]) != base:
        raise MarionetteError(f"{what} is {name!r}: it must name a file inside {folder}")
    return path


def _nearest_existing(path: Path) -> Path:
    probe = path.absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def output_file(path, what: str = "-o", suffix: str | None = None) -> Path:
    """Check that a file can be written at ``path`` (before any work is done); returns it as a Path.

    Refuses a path that is a folder, a path below a regular file, a missing parent that
    cannot be created and (with ``suffix``) a wrong extension.
    """
    path = Path(path)
    if str(path) in ("", "."):
        raise MarionetteError(f"{what}: expected a file path, got {str(path)!r}")
    if suffix is not None and path.suffix.lower() != suffix:
        raise MarionetteError(f"{what} {path}: the file name must end in {suffix}")
    if path.is_dir():
        raise MarionetteError(f"{what} {path}: is a folder; expected a file path")
    _check_parent(path, what)
    return path


def output_folder(path, what: str = "-o") -> Path:
    """Check that ``path`` is, or can become, a folder (before any work is done); returns it as a Path."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise MarionetteError(f"{what} {path}: exists and is not a folder")
    _check_parent(path, what)
    return path


def _check_parent(path: Path, what: str) -> None:
    probe = _nearest_existing(path.parent)
    if not probe.is_dir():
        raise MarionetteError(f"{what} {path}: cannot be created, {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise MarionetteError(f"{what} {path}: the folder {probe} is not writable")


def mkdir(path, what: str = "folder") -> Path:
    """``path.mkdir(parents=True, exist_ok=True)`` with a MarionetteError instead of an OSError."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MarionetteError(f"{path}: cannot create the {what} ({exc.strerror or exc})") from None
    return path


def float_list(values, what: str, none_as_nan: bool = True):
    """A JSON list of numbers as a float64 array; ``null`` becomes NaN (when allowed).

    Strings, booleans, nested lists and integers too large for a float are refused: a
    keypoint file holding ``"12"`` or ``true`` is malformed, not a number.
    """
    import numpy as np

    if not isinstance(values, list):
        raise MarionetteError(f"{what} must be a list of numbers, got {_short(values)}")
    out = np.empty(len(values), dtype=np.float64)
    for i, v in enumerate(values):
        if v is None and none_as_nan:
            out[i] = np.nan
            continue
        if not is_number(v):
            raise MarionetteError(f"{what} contains non-numbers: item {i} is {_short(v)}")
        try:
            out[i] = float(v)
        except OverflowError:
            raise MarionetteError(f"{what} contains a number too large for a float: item {i} is {_short(v)}") from None
    return out
