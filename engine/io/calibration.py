"""Calibration readers: Pose2Sim TOML, Qualisys ``.qca.txt``, CMU Panoptic JSON, Marionette JSON.

``load_calibration(path)`` looks at the file's *content* (not its extension) and
returns ``list[Camera]`` in the engine's convention (OpenCV, metres, integer pixel
centres). ``load_calibration_info(path)`` also returns the world's up axis and the
detected format.

Formats
-------
Pose2Sim / anipose TOML
    one table per camera with ``name``, ``size = [W, H]``, ``matrix`` (3x3 K),
    ``distortions`` (k1, k2, p1, p2), ``rotation`` (Rodrigues vector, world to camera),
    ``translation`` (metres); an optional ``[metadata]`` table is ignored. Pose2Sim's
    worlds are Z-up.
Qualisys QTM ``.qca.txt`` (XML)
    per ``<camera>``: ``<fov_video left top right bottom>`` gives the image rectangle
    on the sensor in pixels (size = right-left+1 by bottom-top+1, so the Pose2Sim demo is
    1088x1920 portrait); ``<intrinsic>`` gives focal lengths and principal point in
    1/64 pixel *sensor* units (the principal point is shifted by the fov origin);
    ``<transform>`` is the camera-to-world rotation ``r11..r33`` (``r_ab`` = column a, row b) and the
    camera position ``x y z`` in millimetres, with the Qualisys camera looking down its
    -Z axis with +Y up (hence a flip of Y and Z to OpenCV). The distortion coefficients
    are plain (not 1/64) OpenCV-style k1, k2, k3, p1, p2. Z-up world. These conventions
    were checked against the bundled Pose2Sim capture: triangulated OpenPose keypoints
    reproject to within about 3 px median (a wrong convention gives tens or hundreds).
CMU Panoptic ``calibration_*.json``
    ``{"cameras": [{"name", "type", "resolution", "K", "distCoef", "R", "t"}]}`` with
    ``t`` in centimetres; its world is Y-down (up axis ``-Y``).
Marionette JSON
    ``engine.geometry.camera.save_cameras`` / ``load_cameras_json``.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine import MarionetteError
from engine.fileio import parse_json
from engine.geometry.axes import UP_AXES
from engine.geometry.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from engine.geometry.camera import CAMERA_JSON_FORMAT, Camera, load_cameras_json
from engine.validate import MAX_IMAGE_SIDE, whole_number

# The OpenCV frame is the Qualisys camera frame rotated by pi about X (looks down +Z, Y down).
_FLIP_YZ = np.diag([1.0, -1.0, -1.0])


@dataclass
class Calibration:
    cameras: list[Camera]
    up_axis: str
    format: str  # "pose2sim-toml" | "qualisys-qca" | "panoptic-json" | "marionette-json"
    path: Path


def load_calibration(path) -> list[Camera]:
    """Read any supported calibration file (dispatch on content) into engine cameras."""
    return load_calibration_info(path).cameras


def load_calibration_info(path) -> Calibration:
    path = Path(path)
    if not path.exists():
        raise MarionetteError(f"{path}: calibration file not found")
    if path.is_dir():
        raise MarionetteError(f"{path}: is a folder; expected a calibration file (.toml, .qca.txt or .json)")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise MarionetteError(f"{path}: not a text file; expected a calibration file "
                              "(Pose2Sim .toml, Qualisys .qca.txt, CMU Panoptic or Marionette .json)") from None
    head = text.lstrip()[:200]
    if not head:
        raise MarionetteError(f"{path}: file is empty; expected a calibration")
    if head.startswith("<"):
        cams = read_qualisys_qca(path, text)
        return Calibration(cams, "Z", "qualisys-qca", path)
    if head.startswith("{") or re.match(r"\[\s*[\[{\]\d\"-]", head):
        # "[cam_01]" opens a TOML table; "[{" or "[ 1" would be a JSON list
        doc = parse_json(text, path)
        entries = doc.get("cameras") if isinstance(doc, dict) else None
        if isinstance(entries, list) and entries and isinstance(entries[0], dict) and (
                "distCoef" in entries[0] or "panel" in entries[0] or "resolution" in entries[0]) \
                and doc.get("format") != CAMERA_JSON_FORMAT:
            return Calibration(read_panoptic_json(path, doc), "-Y", "panoptic-json", path)
        cams = load_cameras_json(path)
        up = doc.get("up_axis", "Z") if isinstance(doc, dict) else "Z"
        if up not in UP_AXES:
            raise MarionetteError(f"{path}: field 'up_axis' must be one of {', '.join(UP_AXES)}, got {str(up)[:40]!r}")
        return Calibration(cams, up, "marionette-json", path)
    return Calibration(read_pose2sim_toml(path, text), "Z", "pose2sim-toml", path)


# ---------------------------------------------------------------------- Pose2Sim TOML
def _get(table: dict, key: str, where: str):
    if key not in table:
        raise MarionetteError(f"{where}: missing field {key!r}")
    return table[key]


def read_pose2sim_toml(path, text: str | None = None) -> list[Camera]:
    path = Path(path)
    text = path.read_text() if text is None else text
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MarionetteError(f"{path}: not a recognised calibration (not XML, JSON, or valid TOML: {exc})") from None
    cams = []
    for section, table in doc.items():
        if section == "metadata" or not isinstance(table, dict):
            continue
        where = f"{path}: [{section}]"
        if table.get("fisheye", False):
            raise MarionetteError(f"{where} field 'fisheye': fisheye cameras are not supported")
        size = _get(table, "size", where)
        if not (isinstance(size, list) and len(size) == 2):
            raise MarionetteError(f"{where} field 'size': expected [width, height], got {size!r}")
        width, height = (whole_number(v, f"{where} field 'size' ({n})", lo=1, hi=MAX_IMAGE_SIDE)
                         for v, n in zip(size, ("width", "height")))
        rotation = _get(table, "rotation", where)
        try:
            if isinstance(rotation, (str, dict)):
                raise ValueError
            rvec = np.asarray(rotation, dtype=np.float64)
        except (TypeError, ValueError, OverflowError):
            raise MarionetteError(f"{where} field 'rotation': expected a Rodrigues vector of 3 numbers, "
                                  f"got {str(rotation)[:60]}") from None
        if not np.all(np.isfinite(rvec)):
            raise MarionetteError(f"{where} field 'rotation': contains NaN or infinite values")
        if rvec.shape == (3, 3):
            R = rvec
        elif rvec.shape == (3,):
            R = axis_angle_to_matrix(rvec)
        else:
            raise MarionetteError(f"{where} field 'rotation': expected a Rodrigues vector of 3 numbers, "
                                  f"got shape {rvec.shape}")
        try:
            cams.append(Camera(name=str(table.get("name", section)), K=_get(table, "matrix", where), R=R,
                               t=_get(table, "translation", where), width=width, height=height,
                               dist=table.get("distortions", [])))
        except MarionetteError as exc:
            raise MarionetteError(f"{where}: {exc}") from None
    if not cams:
        raise MarionetteError(f"{path}: no camera tables found (expected [cam_01] with name, size, matrix, "
                              "distortions, rotation, translation)")
    _check_unique(cams, path)
    return cams


def write_pose2sim_toml(path, cameras: list[Camera]) -> None:
    """Write cameras as a Pose2Sim/anipose calibration TOML (atomic)."""
    def fmt(v):
        return "[ " + ", ".join(repr(float(x)) for x in v) + "]"

    lines = []
    for i, c in enumerate(cameras):
        rvec = matrix_to_axis_angle(c.R)
        lines += [f"[cam_{i:02d}]", f'name = "{c.name}"', f"size = {fmt([c.width, c.height])}",
                  "matrix = [ " + ", ".join(fmt(r) for r in c.K) + "]",
                  f"distortions = {fmt(c.dist[:4])}", f"rotation = {fmt(rvec)}",
                  f"translation = {fmt(c.t)}", "fisheye = false", ""]
    lines += ["[metadata]", "adjusted = false", "error = 0.0", ""]
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines))
    os.replace(tmp, path)


# ---------------------------------------------------------------------- Qualisys
def _attr(node, name: str, where: str) -> float:
    value = node.get(name)
    if value is None:
        raise MarionetteError(f"{where}: missing attribute {name!r}")
    try:
        out = float(value)
    except ValueError:
        raise MarionetteError(f"{where}: attribute {name!r} is {value!r}, expected a number") from None
    if not math.isfinite(out):
        raise MarionetteError(f"{where}: attribute {name!r} is not finite")
    return out


def _optional_attr(node, name: str, where: str, default: float = 0.0) -> float:
    """An attribute that may be absent or empty (then ``default``), else a finite number."""
    if not node.get(name):
        return default
    return _attr(node, name, where)


def read_qualisys_qca(path, text: str | None = None) -> list[Camera]:
    path = Path(path)
    text = path.read_text() if text is None else text
    try:
        root = ET.fromstring(text.encode() if text.lstrip().startswith("<?xml") else text)
    except ET.ParseError as exc:
        raise MarionetteError(f"{path}: not valid XML ({exc})") from None
    nodes = root.findall("cameras/camera")
    if root.tag != "calibration" or not nodes:
        raise MarionetteError(f"{path}: expected a Qualisys <calibration> with <cameras><camera> entries")
    cams = []
    for i, node in enumerate(nodes):
        name = node.get("serial") or f"camera{i}"
        where = f"{path}: camera {name!r}"
        if node.get("active", "1") == "0":
            continue
        rot = _optional_attr(node, "viewrotation", where)
        if rot % 360 != 0:
            # QTM stores rotated cameras in sensor orientation; the image the detector saw
            # would be rotated too. Refuse rather than guess the direction.
            raise MarionetteError(f"{where} attribute 'viewrotation' is {rot}; only 0 is supported "
                                  "(re-export the calibration with unrotated video or rotate it first)")
        fov = node.find("fov_video")
        intr = node.find("intrinsic")
        tr = node.find("transform")
        for tag, el in (("fov_video", fov), ("intrinsic", intr), ("transform", tr)):
            if el is None:
                raise MarionetteError(f"{where}: missing element <{tag}>")
        left, top = _attr(fov, "left", f"{where} <fov_video>"), _attr(fov, "top", f"{where} <fov_video>")
        width = round(_attr(fov, "right", f"{where} <fov_video>") - left + 1)
        height = round(_attr(fov, "bottom", f"{where} <fov_video>") - top + 1)
        w_i = f"{where} <intrinsic>"
        fx, fy = _attr(intr, "focalLengthU", w_i) / 64, _attr(intr, "focalLengthV", w_i) / 64
        cx, cy = _attr(intr, "centerPointU", w_i) / 64 - left, _attr(intr, "centerPointV", w_i) / 64 - top
        skew = _optional_attr(intr, "skew", w_i) / 64
        k1, k2 = _attr(intr, "radialDistortion1", w_i), _attr(intr, "radialDistortion2", w_i)
        k3 = _optional_attr(intr, "radialDistortion3", w_i)
        p1, p2 = _attr(intr, "tangentalDistortion1", w_i), _attr(intr, "tangentalDistortion2", w_i)
        w_t = f"{where} <transform>"
        M = np.array([[_attr(tr, f"r{a}{b}", w_t) for b in (1, 2, 3)] for a in (1, 2, 3)])
        pos = np.array([_attr(tr, k, w_t) for k in ("x", "y", "z")]) / 1000.0
        # QTM's r_ab indexes the camera-to-world matrix column-first, so M read row-wise
        # is world-to-camera already; checked by reprojection on the Pose2Sim capture
        # (reading it the other way gives ~300 px errors).
        R = _FLIP_YZ @ M
        try:
            cams.append(Camera(name=name, K=[[fx, skew, cx], [0, fy, cy], [0, 0, 1]], R=R, t=-R @ pos,
                               width=width, height=height, dist=[k1, k2, p1, p2, k3]))
        except MarionetteError as exc:
            raise MarionetteError(f"{path}: {exc}") from None
    if not cams:
        raise MarionetteError(f"{path}: no active cameras")
    _check_unique(cams, path)
    return sorted(cams, key=lambda c: _natural_key(c.name))


def _natural_key(s: str):
    return [int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", s)]


# ---------------------------------------------------------------------- CMU Panoptic
def read_panoptic_json(path, doc: dict | None = None, camera_type: str | None = None) -> list[Camera]:
    """CMU Panoptic ``calibration_<seq>.json``; ``camera_type`` ("hd", "vga", "kinect-color") filters."""
    path = Path(path)
    if doc is None:
        doc = parse_json(path.read_text(encoding="utf-8-sig"), path)
    entries = doc.get("cameras") if isinstance(doc, dict) else None
    if not isinstance(entries, list) or not entries:
        raise MarionetteError(f"{path}: field 'cameras' must be a non-empty list")
    cams = []
    for i, e in enumerate(entries):
        where = f"{path}: cameras[{i}]"
        if not isinstance(e, dict):
            raise MarionetteError(f"{where}: expected an object")
        if camera_type is not None and e.get("type") != camera_type:
            continue
        for key in ("K", "R", "t", "resolution"):
            if key not in e:
                raise MarionetteError(f"{where}: missing field {key!r}")
        res = e["resolution"]
        if not (isinstance(res, list) and len(res) == 2):
            raise MarionetteError(f"{where} field 'resolution': expected [width, height], got {res!r}")
        name = str(e.get("name", f"cam{i}"))
        try:
            t = np.asarray(e["t"], dtype=np.float64).ravel() / 100.0  # centimetres
            cams.append(Camera(name=name, K=e["K"], R=e["R"], t=t, width=res[0], height=res[1],
                               dist=e.get("distCoef", [])))
        except (MarionetteError, ValueError, TypeError, OverflowError) as exc:
            raise MarionetteError(f"{where} ({name!r}): {exc}") from None
    if not cams:
        raise MarionetteError(f"{path}: no cameras of type {camera_type!r}")
    _check_unique(cams, path)
    return cams


def _check_unique(cams: list[Camera], path: Path) -> None:
    names = [c.name for c in cams]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise MarionetteError(f"{path}: duplicate camera names {dup}")
