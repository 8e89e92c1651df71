"""TRC marker files (OpenSim's format, what Pose2Sim writes) as skeleton sequences.

A ``.trc`` file is tab-separated text::

    PathFileType  4  (X/Y/Z)  walk.trc
    DataRate  CameraRate  NumFrames  NumMarkers  Units  OrigDataRate  OrigDataStartFrame  OrigNumFrames
    30.0      30.0        120        25          m      30.0          1                   120
    Frame#  Time  Nose  .  .  Neck  .  .  ...
                  X1  Y1  Z1  X2  Y2  Z2  ...
    (blank line)
    1  0.000  x  y  z  x  y  z ...

``Units`` is ``m`` or ``mm`` (``cm`` too); a missing marker is an empty field or ``NaN``. The
world is Y-up (OpenSim's convention): ``read_trc`` returns ``up_axis="Y"`` and ``write_trc``
turns a sequence of any up axis into Y-up coordinates.

Marker names become the joint set: the known set whose names they are (in any order: columns
are reordered into the set's order), else, with ``allow_generic``, a generic skeleton of the
marker names with every marker hanging from the first (a TRC file holds no bone tree).
``Frame#`` becomes ``frame_indices`` (0-based, ``Frame# - 1``), ``DataRate`` the fps.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from engine import MarionetteError
from engine.body.joint_sets import JOINT_SETS, JointSet, generic_joint_set, infer_joint_set
from engine.fileio import write_text_atomic
from engine.geometry.axes import up_axis_matrix
from engine.io.skeleton_file import SkeletonSequence, check_frame_indices
from engine.validate import MAX_FPS, MAX_FRAMES, number, output_file

UNITS = {"m": 1.0, "mm": 1e-3, "cm": 1e-2}
MAX_TRC_BYTES = 2 << 30
MAX_MARKERS = 4096
MAX_COORDINATE = 1e6  # metres: larger is a broken file (or wrong units), not a body
_HEADER_KEYS = ("DataRate", "CameraRate", "NumFrames", "NumMarkers", "Units", "OrigDataRate",
                "OrigDataStartFrame", "OrigNumFrames")


def _joint_set(names: list[str], path: Path, allow_generic: bool) -> tuple[JointSet, np.ndarray]:
    """(joint set, column of each of its joints among the markers)."""
    js, why = infer_joint_set(names)
    if js is not None:
        return js, np.arange(len(names))
    for cand in JOINT_SETS.values():  # a known set's names in another order
        if len(cand.names) == len(names) and set(cand.names) == set(names):
            return cand, np.array([names.index(n) for n in cand.names])
    if not allow_generic:
        raise MarionetteError(f"{path}: marker names: {why}")
    parents = [-1] + [0] * (len(names) - 1)
    return generic_joint_set(names, parents, where=f"{path}: marker names"), np.arange(len(names))


def _float(text: str, path: Path, where: str) -> float:
    text = text.strip()
    if text == "" or text.lower() == "nan":
        return math.nan
    try:
        return float(text)
    except ValueError:
        raise MarionetteError(f"{path}: {where}: expected a number, got {text[:40]!r}") from None


def read_trc(path, allow_generic: bool = False) -> SkeletonSequence:
    """Read and validate a ``.trc`` file; errors name the file and the line or field."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_TRC_BYTES:
            raise MarionetteError(f"{path}: the TRC file is larger than {MAX_TRC_BYTES >> 20} MiB")
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise MarionetteError(f"{path}: cannot read the TRC file ({exc.strerror or exc})") from None
    lines = text.splitlines()
    if len(lines) < 5:
        raise MarionetteError(f"{path}: not a TRC file: expected at least 5 header lines, got {len(lines)}")
    if not lines[0].startswith("PathFileType"):
        raise MarionetteError(f"{path}: line 1: expected 'PathFileType 4 (X/Y/Z) ...', got {lines[0][:60]!r}")
    keys = [k.strip() for k in lines[1].split("\t")]
    values = [v.strip() for v in lines[2].split("\t")]
    header = dict(zip(keys, values))
    for key in ("DataRate", "NumFrames", "NumMarkers", "Units"):
        if key not in header:
            raise MarionetteError(f"{path}: line 2: missing header field {key!r} (expected {' '.join(_HEADER_KEYS)})")
    fps = number(_float(header["DataRate"], path, "field 'DataRate'"), f"{path}: field 'DataRate'",
                 lo=0, lo_open=True, hi=MAX_FPS)
    num_frames = number(_float(header["NumFrames"], path, "field 'NumFrames'"), f"{path}: field 'NumFrames'",
                        lo=1, hi=MAX_FRAMES, integer=True)
    num_markers = number(_float(header["NumMarkers"], path, "field 'NumMarkers'"), f"{path}: field 'NumMarkers'",
                         lo=1, hi=MAX_MARKERS, integer=True)
    units = header["Units"].lower()
    if units not in UNITS:
        raise MarionetteError(f"{path}: field 'Units' is {header['Units'][:20]!r}, expected one of {', '.join(UNITS)}")
    name_cells = lines[3].split("\t")
    if len(name_cells) < 2 or name_cells[0].strip() != "Frame#":
        raise MarionetteError(f"{path}: line 4: expected 'Frame#<TAB>Time<TAB>marker names...'")
    names = [n.strip() for n in name_cells[2:] if n.strip()]
    if len(names) != num_markers:
        raise MarionetteError(f"{path}: line 4 names {len(names)} markers, but field 'NumMarkers' says {num_markers}")
    joint_set, columns = _joint_set(names, path, allow_generic)
    rows = [(i + 1, ln) for i, ln in enumerate(lines[5:], start=5) if ln.strip()]
    if not rows:
        raise MarionetteError(f"{path}: no data rows after the header")
    if len(rows) != num_frames:
        raise MarionetteError(f"{path}: field 'NumFrames' says {num_frames} but the file has {len(rows)} data rows")
    frames = np.empty(num_frames, dtype=np.float64)
    data = np.full((num_frames, num_markers * 3), np.nan, dtype=np.float64)
    for r, (lineno, line) in enumerate(rows):
        cells = line.split("\t")
        if len(cells) > 2 + 3 * num_markers and any(c.strip() for c in cells[2 + 3 * num_markers:]):
            raise MarionetteError(f"{path}: line {lineno}: {len(cells)} fields, expected {2 + 3 * num_markers}")
        if len(cells) < 2:
            raise MarionetteError(f"{path}: line {lineno}: expected Frame#, Time and marker coordinates")
        frames[r] = _float(cells[0], path, f"line {lineno}, field 'Frame#'")
        _float(cells[1], path, f"line {lineno}, field 'Time'")
        for c, cell in enumerate(cells[2: 2 + 3 * num_markers]):
            data[r, c] = _float(cell, path, f"line {lineno}, marker {names[c // 3]!r}")
    if not np.isfinite(frames).all():
        raise MarionetteError(f"{path}: field 'Frame#' must hold a frame number on every row")
    if np.isinf(data).any():
        raise MarionetteError(f"{path}: marker coordinates must be finite numbers (or empty/NaN when missing)")
    joints = data.reshape(num_frames, num_markers, 3)[:, columns] * UNITS[units]
    if np.nanmax(np.abs(joints), initial=0.0) > MAX_COORDINATE:
        raise MarionetteError(f"{path}: marker coordinates must lie within {MAX_COORDINATE:g} m of the origin "
                              f"(got {np.nanmax(np.abs(joints)):g} m; check field 'Units')")
    indices = check_frame_indices(frames - 1 if frames.min() >= 1 else frames, num_frames, f"{path}: 'Frame#'")
    try:
        return SkeletonSequence(joints=joints, joint_set=joint_set, fps=fps, up_axis="Y",
                                extras={"frame_indices": indices})
    except MarionetteError as exc:
        raise MarionetteError(f"{path}: {exc}") from None


def _fmt(v: float) -> str:
    return "NaN" if not math.isfinite(v) else f"{v:.9g}"


def write_trc(path, seq: SkeletonSequence, units: str = "m") -> None:
    """Write ``seq`` as a TRC file (Y-up, in ``units``: 'm' or 'mm'), atomically."""
    path = Path(path)
    if path.suffix.lower() != ".trc":
        raise MarionetteError(f"{path}: TRC files must end in .trc")
    if units not in UNITS:
        raise MarionetteError(f"TRC units {units!r}: expected one of {', '.join(UNITS)}")
    output_file(path, "TRC file")
    # file coordinates -> Blender Z-up -> Y-up (the rotations are orthogonal)
    M = up_axis_matrix("Y").T @ up_axis_matrix(seq.up_axis)
    X = (seq.joints.astype(np.float64) @ M.T) / UNITS[units]
    T, J = X.shape[:2]
    fi = seq.extras.get("frame_indices")
    frames = np.arange(T) if fi is None else np.asarray(fi, dtype=np.int64)
    fps = float(seq.fps)
    names = seq.joint_set.names
    out = ["\t".join(("PathFileType", "4", "(X/Y/Z)", path.name)),
           "\t".join(_HEADER_KEYS),
           "\t".join((f"{fps:g}", f"{fps:g}", str(T), str(J), units, f"{fps:g}", str(int(frames[0]) + 1), str(T))),
           "\t".join(["Frame#", "Time"] + [f"{n}\t\t" for n in names]).rstrip("\t"),
           "\t".join(["", ""] + [f"X{j + 1}\tY{j + 1}\tZ{j + 1}" for j in range(J)]),
           ""]
    for t in range(T):
        cells = [str(int(frames[t]) + 1), f"{frames[t] / fps:.6f}"]
        cells += [_fmt(v) for v in X[t].reshape(-1)]
        out.append("\t".join(cells))
    write_text_atomic(path, "\n".join(out) + "\n")
