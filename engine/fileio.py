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
    if path.is_dir():
        raise MarionetteError(f"{path}: is a folder; expected a {what} (JSON)")
    try:
        text = path.read_text(encoding="utf-8-sig")  # a UTF-8 byte-order mark is allowed
    except FileNotFoundError:
        raise MarionetteError(f"{path}: {what} not found") from None
    except UnicodeDecodeError:
        raise MarionetteError(f"{path}: not a UTF-8 text file; expected a {what} (JSON)") from None
    except OSError as exc:
        raise MarionetteError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    doc = parse_json(text, path)
    if expect_object and not isinstance(doc, dict):
        raise MarionetteError(f"{path}: expected a JSON object")
    return doc


def parse_json(text: str, path) -> object:
    """``json.loads`` whose every failure (syntax, a 5000-digit number, nesting too deep) is a MarionetteError."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise MarionetteError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        raise MarionetteError(f"{path}: not valid JSON ({exc})") from None
    except RecursionError:
        raise MarionetteError(f"{path}: not valid JSON (nested too deeply)") from None


def new_file_mode() -> int:
    """The permissions a newly created file gets under the process's umask (e.g. 0o644 for umask 022)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def write_text_atomic(path, text: str) -> None:
    """Write through a temporary file renamed into place: readers never see a partial file.

    Missing parent folders are created; a path that cannot be written is a MarionetteError."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise MarionetteError(f"{path}: cannot write the file ({exc.strerror or exc})") from None


def write_json_atomic(path, doc, indent: int | None = 1, default=None) -> None:
    write_text_atomic(path, json.dumps(doc, indent=indent, default=default))


MAX_NPZ_BYTES = 8 << 30  # decompressed size of all arrays of one .npz


def read_npz(path, max_bytes: int = MAX_NPZ_BYTES) -> dict:
    """All arrays of an ``.npz`` (never unpickling); missing or unreadable files are MarionetteErrors.

    The arrays' sizes are read from their headers first: a file whose arrays would
    decompress to more than ``max_bytes`` is refused before anything is allocated.
    """
    path = Path(path)
    if path.is_dir():
        raise MarionetteError(f"{path}: is a folder; expected an .npz file")
    if not path.is_file():
        raise MarionetteError(f"{path}: file not found")
    try:
        total = _npz_bytes(path)
        if total > max_bytes:
            raise MarionetteError(f"{path}: its arrays would take {total / 2 ** 30:.1f} GiB "
                                  f"(more than {max_bytes / 2 ** 30:.0f} GiB); not a file Marionette wrote")
        with np.load(path, allow_pickle=False) as data:
            if not hasattr(data, "files"):
                raise MarionetteError(f"{path}: a single .npy array, expected an .npz archive of named arrays")
            return {k: data[k] for k in data.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, zipfile.LargeZipFile) as exc:
        raise MarionetteError(f"{path}: not a readable .npz file ({exc})") from None


def _npz_bytes(path: Path) -> int:
    """Sum of the arrays' sizes from their .npy headers (0 for a file that is not a zip: np.load decides)."""
    if not zipfile.is_zipfile(path):
        return 0
    total = 0
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                continue
            with zf.open(info) as fh:
                version = np.lib.format.read_magic(fh)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
                else:
                    shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
            count = 1
            for n in shape:
                count *= int(n)
            total += count * dtype.itemsize
    return total
