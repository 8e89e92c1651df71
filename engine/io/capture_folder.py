"""The capture folder: multi-view images, masks, cameras, 3D joints and 2D keypoints.

Written by ``marionette make-capture`` (synthetic, rendered by Blender) and read by
training and evaluation. Real captures in the same layout work too.

Layout::

    CAPTURE/
      capture.json                    metadata, written LAST (see below)
      cameras.json                    engine.geometry.camera.save_cameras; names = camera folder names
      cameras_full.json               optional, same format: the full video-frame cameras the crops
                                      came from (``marionette ingest``); see ``Capture.full_frame_cameras``
      images/<camera>/<frame:06d>.png RGBA (or RGB) 8-bit sRGB, straight alpha
      masks/<camera>/<frame:06d>.png  8-bit single channel, 255 = person, 0 = background
      joints3d.npz                    engine.io.skeleton_file file, one row per entry of "frames"
      keypoints/<camera>/<frame:06d>_keypoints.json   OpenPose-style 2D keypoints

``capture.json``::

    {"format": "marionette.capture", "version": 1, "complete": true, "fps": 30.0,
     "frames": [0, 1, ...], "cameras": ["cam00", ...], "train_cameras": [...],
     "heldout_cameras": [...], "heldout_frames": [...], "joint_set": "BODY_25B",
     "resolution": [W, H], "seed": 0, "up_axis": "Z", "generator": {...}}

Completeness: a writer builds the whole capture in ``CAPTURE.partial/`` and renames it
to ``CAPTURE`` only after ``capture.json`` (with ``"complete": true``) is in place, so a
folder that has a complete ``capture.json`` is a complete capture.

Images: ``load_image`` keeps sRGB values (no linearisation), 0..1. Background pixels
of an RGBA image have alpha 0 (their RGB is whatever the renderer left, usually 0);
use ``load_rgba`` or ``load_mask`` to composite. Masks are required unless
``load_capture(..., require_masks=False)``; keypoints are optional for readers.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine import MarionetteError
from engine.fileio import read_json, write_text_atomic
from engine.validate import MAX_FPS, MAX_FRAME_NUMBER, MAX_FRAMES, float_list, number, string_list
from engine.geometry.camera import Camera, load_cameras_json, save_cameras
from engine.io.skeleton_file import SkeletonSequence, load_skeleton, save_skeleton

CAPTURE_FORMAT = "marionette.capture"
CAPTURE_VERSION = 1
PARTIAL_SUFFIX = ".partial"
FULL_FRAME_CAMERAS = "cameras_full.json"  # optional: the uncropped video cameras (``marionette ingest``)


# ---------------------------------------------------------------------- paths
def image_relpath(camera: str, frame: int) -> str:
    return f"images/{camera}/{int(frame):06d}.png"


def mask_relpath(camera: str, frame: int) -> str:
    return f"masks/{camera}/{int(frame):06d}.png"


def keypoints_relpath(camera: str, frame: int) -> str:
    return f"keypoints/{camera}/{int(frame):06d}_keypoints.json"


def _check_camera_name(name: str, where: str) -> None:
    if not name or name in (".", "..") or any(c in name for c in "/\\\0") or name != name.strip():
        raise MarionetteError(f"{where}: camera name {name!r} cannot be a folder name")


# ---------------------------------------------------------------------- OpenPose JSON
def openpose_document(keypoints: np.ndarray) -> dict:
    """OpenPose ``*_keypoints.json`` content for one person.

    keypoints: [J, 3] (x, y, confidence) in pixels (integer pixel centres). Rows with
    NaN or confidence 0 are written as (0, 0, 0), as OpenPose does for undetected joints.
    """
    kp = np.asarray(keypoints, dtype=np.float64).reshape(-1, 3).copy()
    bad = ~np.isfinite(kp).all(-1) | (kp[:, 2] <= 0)
    kp[bad] = 0.0
    flat = [round(float(v), 4) for v in kp.ravel()]
    return {"version": 1.3, "people": [{
        "person_id": [-1], "pose_keypoints_2d": flat,
        "face_keypoints_2d": [], "hand_left_keypoints_2d": [], "hand_right_keypoints_2d": [],
        "pose_keypoints_3d": [], "face_keypoints_3d": [], "hand_left_keypoints_3d": [],
        "hand_right_keypoints_3d": []}]}


def write_openpose_json(path, keypoints: np.ndarray) -> None:
    """Write one OpenPose keypoint file atomically."""
    write_text_atomic(Path(path), json.dumps(openpose_document(keypoints)))


def read_openpose_json(path, num_joints: int) -> np.ndarray:
    """Read the first person of an OpenPose JSON file -> [J, 3] (x, y, c); NaN x/y where c == 0."""
    path = Path(path)
    doc = read_json(path, "keypoint file", expect_object=False)
    people = doc.get("people") if isinstance(doc, dict) else None
    if not isinstance(people, list):
        raise MarionetteError(f"{path}: field 'people' must be a list")
    out = np.full((num_joints, 3), np.nan)
    out[:, 2] = 0.0
    if not people:
        return out
    flat = people[0].get("pose_keypoints_2d") if isinstance(people[0], dict) else None
    if not isinstance(flat, list) or len(flat) != 3 * num_joints:
        raise MarionetteError(f"{path}: field 'people[0].pose_keypoints_2d' must hold {3 * num_joints} numbers "
                              f"(x, y, confidence for {num_joints} joints), got "
                              f"{len(flat) if isinstance(flat, list) else type(flat).__name__}")
    kp = float_list(flat, f"{path}: field 'people[0].pose_keypoints_2d'").reshape(num_joints, 3)
    ok = np.isfinite(kp).all(-1) & (kp[:, 2] > 0)  # NaN/infinite values: not detected
    out[ok] = kp[ok]
    return out


# ---------------------------------------------------------------------- writing
def partial_path(out) -> Path:
    out = Path(out)
    return out.with_name(out.name + PARTIAL_SUFFIX)


def begin_capture(out, camera_names: list[str], overwrite: bool = False) -> Path:
    """Check that ``out`` can be written and create the empty ``out.partial/`` tree.

    Raises MarionetteError when ``out`` exists (and not ``overwrite``), when its parent
    is not a writable folder, or when camera names are not usable folder names.
    Returns the partial folder to write into.
    """
    out = Path(out)
    if not camera_names:
        raise MarionetteError("capture: at least one camera is needed")
    if len(set(camera_names)) != len(camera_names):
        raise MarionetteError(f"capture: duplicate camera names in {camera_names}")
    for name in camera_names:
        _check_camera_name(name, "capture")
    if out.exists() and not out.is_dir():
        raise MarionetteError(f"{out}: exists and is not a folder")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise MarionetteError(f"{out}: folder exists and is not empty (choose another path or pass --overwrite)")
    parent = out.absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MarionetteError(f"{out}: cannot create the parent folder {parent} ({exc.strerror})") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise MarionetteError(f"{out}: the folder {parent} is not writable")
    partial = partial_path(out)
    try:
        if partial.exists():
            shutil.rmtree(partial)  # debris of an interrupted earlier run
        for sub in ("images", "masks", "keypoints"):
            for name in camera_names:
                (partial / sub / name).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MarionetteError(f"{partial}: cannot write the capture folder ({exc.strerror})") from None
    return partial


def finish_capture(partial, out, meta: dict, cameras: list[Camera], skeleton: SkeletonSequence,
                   overwrite: bool = False) -> Path:
    """Write cameras.json, joints3d.npz, then capture.json (last), and move ``partial`` to ``out``.

    ``meta`` holds the capture.json fields (fps, frames, cameras, ... see the module doc);
    format, version and complete are filled in here. The result is validated with
    ``load_capture`` before it is renamed into place.
    """
    partial, out = Path(partial), Path(out)
    save_cameras(partial / "cameras.json", cameras, up_axis=meta.get("up_axis", "Z"))
    save_skeleton(partial / "joints3d.npz", skeleton)
    doc = {"format": CAPTURE_FORMAT, "version": CAPTURE_VERSION, "complete": True}
    doc.update({k: v for k, v in meta.items() if k not in doc})
    write_text_atomic(partial / "capture.json", json.dumps(doc, indent=1))
    load_capture(partial)  # refuse to publish something our own reader rejects
    if out.exists():
        if not overwrite:
            raise MarionetteError(f"{out}: appeared while the capture was being written")
        # move the old capture aside first so there is never a moment with a half capture at `out`
        trash = out.with_name(out.name + ".old")
        if trash.exists():
            shutil.rmtree(trash)
        os.replace(out, trash)
        os.replace(partial, out)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(partial, out)
    return out


# ---------------------------------------------------------------------- reading
@dataclass
class Capture:
    root: Path
    cameras: list[Camera]
    frames: list[int]
    skeleton: SkeletonSequence
    train_cameras: list[str]
    heldout_cameras: list[str]
    heldout_frames: list[int]
    fps: float
    meta: dict = field(default_factory=dict)
    has_masks: bool = True
    has_keypoints: bool = False

    @property
    def camera_names(self) -> list[str]:
        return [c.name for c in self.cameras]

    @property
    def joint_set(self):
        return self.skeleton.joint_set

    @property
    def train_frames(self) -> list[int]:
        held = set(self.heldout_frames)
        return [f for f in self.frames if f not in held]

    @property
    def up_axis(self) -> str:
        """The world's up axis: capture.json's 'up_axis', else joints3d.npz's (they must agree)."""
        declared = self.meta.get("up_axis")
        if declared is None:
            return self.skeleton.up_axis
        if declared != self.skeleton.up_axis:
            raise MarionetteError(f"{self.root / 'capture.json'}: field 'up_axis' is {declared!r} but "
                                  f"joints3d.npz says {self.skeleton.up_axis!r}")
        return str(declared)

    def full_frame_cameras(self) -> list[Camera]:
        """The cameras of ``cameras_full.json`` for this capture's cameras, in their order."""
        path = self.root / FULL_FRAME_CAMERAS
        if not path.is_file():
            raise MarionetteError(f"{path}: file not found (only captures made by 'marionette ingest' have "
                                  f"full-frame cameras; use the capture's own cameras.json)")
        full = {c.name: c for c in load_cameras_json(path)}
        absent = [n for n in self.camera_names if n not in full]
        if absent:
            raise MarionetteError(f"{path}: no camera named {absent} (capture.json field 'cameras' lists "
                                  f"{self.camera_names}; {FULL_FRAME_CAMERAS} has {sorted(full)})")
        return [full[n] for n in self.camera_names]

    def camera(self, name: str) -> Camera:
        for c in self.cameras:
            if c.name == name:
                return c
        raise MarionetteError(f"{self.root}: no camera named {name!r} (cameras: {self.camera_names})")

    def frame_row(self, frame: int) -> int:
        """Row of ``frame`` in ``skeleton.joints``."""
        try:
            return self.frames.index(int(frame))
        except ValueError:
            raise MarionetteError(f"{self.root}: frame {frame} is not in this capture") from None

    def joints3d(self, frame: int) -> np.ndarray:
        """[J, 3] metres, NaN where missing."""
        return self.skeleton.joints[self.frame_row(frame)]

    def image_path(self, cam: str, frame: int) -> Path:
        return self.root / image_relpath(cam, frame)

    def mask_path(self, cam: str, frame: int) -> Path:
        return self.root / mask_relpath(cam, frame)

    def keypoints_path(self, cam: str, frame: int) -> Path:
        return self.root / keypoints_relpath(cam, frame)

    def load_rgba(self, cam: str, frame: int) -> np.ndarray:
        """float32 [H, W, 4], sRGB values 0..1 with straight alpha (alpha 1 for RGB files)."""
        return self._read(self.image_path(cam, frame), "RGBA", "image", cam)

    def load_image(self, cam: str, frame: int) -> np.ndarray:
        """float32 [H, W, 3], sRGB values 0..1 (not linearised)."""
        return self.load_rgba(cam, frame)[..., :3]

    def load_mask(self, cam: str, frame: int) -> np.ndarray:
        """float32 [H, W], 1 = person, 0 = background."""
        return self._read(self.mask_path(cam, frame), "L", "mask", cam)

    def load_keypoints(self, cam: str, frame: int) -> np.ndarray:
        """[J, 3] (x, y, confidence) pixels; NaN x/y where not detected."""
        return read_openpose_json(self.keypoints_path(cam, frame), self.joint_set.num_joints)

    def _read(self, path: Path, mode: str, what: str, cam: str) -> np.ndarray:
        """An 8-bit image converted to PIL ``mode`` as float32 0..1, its size checked against the camera."""
        from PIL import Image

        try:
            with Image.open(path) as im:
                arr = np.asarray(im.convert(mode), dtype=np.float32) / 255.0
        except FileNotFoundError:
            raise MarionetteError(f"{path}: {what} file not found") from None
        except OSError as exc:
            raise MarionetteError(f"{path}: not a readable image ({exc})") from None
        self._check_size(path, arr.shape, cam)
        return arr

    def _check_size(self, path: Path, shape, cam: str) -> None:
        c = self.camera(cam)
        if tuple(shape[:2]) != (c.height, c.width):
            raise MarionetteError(f"{path}: image is {shape[1]}x{shape[0]}, camera {cam!r} in cameras.json "
                                  f"is {c.width}x{c.height}")


def _field(doc: dict, key: str, kind, where: Path, default=None, required=True):
    if key not in doc:
        if required:
            raise MarionetteError(f"{where}: missing field {key!r}")
        return default
    value = doc[key]
    if kind is list and not isinstance(value, list):
        raise MarionetteError(f"{where}: field {key!r} must be a list, got {type(value).__name__}")
    return value


def _int_list(values, key: str, where: Path) -> list[int]:
    if len(values) > MAX_FRAMES:
        raise MarionetteError(f"{where}: field {key!r} lists {len(values)} frames, more than {MAX_FRAMES}")
    out = []
    for v in values:
        out.append(number(v, f"{where}: field {key!r} entry", lo=0, hi=MAX_FRAME_NUMBER - 1, integer=True))
    if len(set(out)) != len(out):
        raise MarionetteError(f"{where}: field {key!r} has duplicate entries")
    return out


def load_capture(path, require_masks: bool = True, check_files: bool = True) -> Capture:
    """Read and validate a capture folder; every error names the file and field.

    ``check_files`` verifies that every image (and mask) exists and has its camera's
    size (reads PNG headers only).
    """
    root = Path(path)
    if not root.is_dir():
        if partial_path(root).is_dir():
            raise MarionetteError(f"{root}: not found; {partial_path(root)} exists but is an unfinished capture")
        raise MarionetteError(f"{root}: capture folder not found")
    meta_path = root / "capture.json"
    doc = read_json(meta_path, "capture description (an unfinished or not a capture folder)")
    if doc.get("format") != CAPTURE_FORMAT:
        raise MarionetteError(f"{meta_path}: field 'format' is {doc.get('format')!r}, expected {CAPTURE_FORMAT!r}")
    version = number(doc.get("version", 0), f"{meta_path}: field 'version'", integer=True)
    if version < 1 or version > CAPTURE_VERSION:
        raise MarionetteError(f"{meta_path}: field 'version' is {doc.get('version')!r}; this Marionette reads "
                              f"version {CAPTURE_VERSION}")
    if doc.get("complete") is not True:
        raise MarionetteError(f"{meta_path}: field 'complete' is not true (the capture was not finished)")

    fps = number(_field(doc, "fps", float, meta_path), f"{meta_path}: field 'fps'", lo=0, lo_open=True, hi=MAX_FPS)
    frames = _int_list(_field(doc, "frames", list, meta_path), "frames", meta_path)
    if not frames:
        raise MarionetteError(f"{meta_path}: field 'frames' is empty")
    names = _field(doc, "cameras", list, meta_path)
    if not names or not all(isinstance(n, str) for n in names):
        raise MarionetteError(f"{meta_path}: field 'cameras' must be a non-empty list of names")
    for n in names:
        _check_camera_name(n, f"{meta_path}: field 'cameras'")
    if len(set(names)) != len(names):
        raise MarionetteError(f"{meta_path}: field 'cameras' lists {sorted({n for n in names if names.count(n) > 1})} "
                              "more than once")
    heldout = string_list(_field(doc, "heldout_cameras", list, meta_path, default=[], required=False),
                          f"{meta_path}: field 'heldout_cameras'")
    train = _field(doc, "train_cameras", list, meta_path, default=None, required=False)
    if train is not None:
        train = string_list(train, f"{meta_path}: field 'train_cameras'")
    if train is None:
        train = [n for n in names if n not in heldout]
    for key, sub in (("train_cameras", train), ("heldout_cameras", heldout)):
        unknown = [n for n in sub if n not in names]
        if unknown:
            raise MarionetteError(f"{meta_path}: field {key!r} names cameras not in 'cameras': {unknown}")
    if set(train) & set(heldout):
        raise MarionetteError(f"{meta_path}: cameras {sorted(set(train) & set(heldout))} are both train and held out")
    heldout_frames = _int_list(_field(doc, "heldout_frames", list, meta_path, default=[], required=False),
                               "heldout_frames", meta_path)
    missing_frames = [f for f in heldout_frames if f not in frames]
    if missing_frames:
        raise MarionetteError(f"{meta_path}: field 'heldout_frames' lists frames not in 'frames': {missing_frames}")

    cams = load_cameras_json(root / "cameras.json")
    by_name = {c.name: c for c in cams}
    absent = [n for n in names if n not in by_name]
    if absent:
        raise MarionetteError(f"{root / 'cameras.json'}: no camera named {absent} (capture.json lists "
                              f"{names}; cameras.json has {sorted(by_name)})")
    cams = [by_name[n] for n in names]

    skel = load_skeleton(root / "joints3d.npz")
    if skel.num_frames != len(frames):
        raise MarionetteError(f"{root / 'joints3d.npz'}: field 'joints' has {skel.num_frames} frames, capture.json "
                              f"field 'frames' lists {len(frames)}")
    js = doc.get("joint_set")
    if js is not None and js != skel.joint_set.name:
        raise MarionetteError(f"{meta_path}: field 'joint_set' is {js!r} but joints3d.npz uses "
                              f"{skel.joint_set.name!r}")

    has_masks = (root / "masks").is_dir()
    if require_masks and not has_masks:
        raise MarionetteError(f"{root / 'masks'}: folder not found (this reader needs person masks)")
    cap = Capture(root=root, cameras=cams, frames=frames, skeleton=skel, train_cameras=list(train),
                  heldout_cameras=list(heldout), heldout_frames=heldout_frames, fps=float(fps), meta=doc,
                  has_masks=has_masks, has_keypoints=(root / "keypoints").is_dir())
    if check_files:
        _check_files(cap, masks=has_masks)
    return cap


def _png_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from a PNG header, or None if the file is not a PNG."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(24)
    except FileNotFoundError:
        raise MarionetteError(f"{path}: file not found") from None
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise MarionetteError(f"{path}: not a PNG file")
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def _check_files(cap: Capture, masks: bool) -> None:
    for cam in cap.cameras:
        for frame in cap.frames:
            paths = [cap.image_path(cam.name, frame)] + ([cap.mask_path(cam.name, frame)] if masks else [])
            for p in paths:
                w, h = _png_size(p)
                if (w, h) != (cam.width, cam.height):
                    raise MarionetteError(f"{p}: image is {w}x{h}, camera {cam.name!r} in cameras.json is "
                                          f"{cam.width}x{cam.height}")
