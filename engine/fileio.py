"""Reading user files (JSON, .npz) with errors that name the file, and writing JSON/text atomically."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np

from engine import MarionetteError


def read_json(path, what: str = "file", expect_object: bool = True):
    """Parse a JSON file; a missing or malformed file is a MarionetteError naming it."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MarionetteError(f"{path}: {what} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MarionetteError(f"{path}: not valid JSON ({exc})") from None
    except OSError as exc:
        raise MarionetteError(f"{path}: cannot read {what} ({exc.strerror})") from None
    if expect_object and not isinstance(doc, dict):
        raise MarionetteError(f"{path}: expected a JSON object")
    return doc


def write_text_atomic(path, text: str) -> None:
    """Write through a temporary file renamed into place: readers never see a partial file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_json_atomic(path, doc, indent: int | None = 1, default=None) -> None:
    write_text_atomic(path, json.dumps(doc, indent=indent, default=default))


def read_npz(path) -> dict:
    """All arrays of an ``.npz`` (never unpickling); missing or unreadable files are MarionetteErrors."""
    path = Path(path)
    if not path.is_file():
        raise MarionetteError(f"{path}: file not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise MarionetteError(f"{path}: not a readable .npz file ({exc})") from None
