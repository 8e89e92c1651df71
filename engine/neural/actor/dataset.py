"""Training/evaluation samples from a capture folder (``engine.io.capture_folder``).

A sample is one (camera, frame) view: the image and person mask resized so the
longer side is ``resolution`` pixels, the camera rescaled to match (integer pixel
centres, ``Camera.scaled``), and the frame's 3D joints. Everything is decoded once
and kept in memory as uint8 (a 256² view costs 256 KiB), because on CPUs the
decoding, not the memory, is what would otherwise limit training speed.

Masks come from ``masks/`` when the capture has them, else from the images' alpha
channel; a capture with neither is refused (the losses need to know where the person is).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine import MarionetteError
from engine.geometry.camera import Camera


@dataclass
class View:
    camera: str
    frame: int


def scale_for(camera: Camera, resolution: int | None) -> float:
    if not resolution:
        return 1.0
    return float(resolution) / max(camera.width, camera.height)


def open_capture(path):
    from engine.io.capture_folder import load_capture

    cap = load_capture(path, require_masks=False)
    if not cap.has_masks:
        # RGBA images carry the person mask in alpha; RGB-only captures cannot be trained on
        from PIL import Image

        first = cap.image_path(cap.cameras[0].name, cap.frames[0])
        with Image.open(first) as im:
            if "A" not in im.getbands():
                raise MarionetteError(f"{cap.root}: no masks/ folder and the images are not RGBA "
                                      f"(e.g. {first}); training needs a person mask per image")
    return cap


def split_views(cap, split: str) -> list[View]:
    """Views of a split: ``train`` (train cameras x train frames), ``novel_view`` (held-out cameras x
    train frames), ``novel_pose`` (train cameras x held-out frames), ``novel_both``."""
    held_f = set(cap.heldout_frames)
    train_frames = [f for f in cap.frames if f not in held_f]
    held_frames = [f for f in cap.frames if f in held_f]
    cams = {"train": (cap.train_cameras, train_frames), "novel_view": (cap.heldout_cameras, train_frames),
            "novel_pose": (cap.train_cameras, held_frames), "novel_both": (cap.heldout_cameras, held_frames)}
    if split not in cams:
        raise MarionetteError(f"unknown split {split!r}; expected one of {', '.join(cams)}")
    cs, fs = cams[split]
    excluded = excluded_views(cap)
    return [View(c, f) for c in cs for f in fs if (c, f) not in excluded]


def excluded_views(cap) -> set[tuple[str, int]]:
    """(camera, frame) pairs the capture marks unusable (``capture.json`` ``excluded_views``:
    e.g. frames where ingest's detector found nobody or the mask failed its checks)."""
    doc = cap.meta.get("excluded_views") or {}
    if not isinstance(doc, dict):
        raise MarionetteError(f"{cap.root / 'capture.json'}: field 'excluded_views' must be an object "
                              "{camera: [frames]}")
    out = set()
    for cam, frames in doc.items():
        if not isinstance(frames, list) or not all(isinstance(f, int) and not isinstance(f, bool) for f in frames):
            raise MarionetteError(f"{cap.root / 'capture.json'}: field 'excluded_views.{cam}' must be a list of "
                                  "frame numbers")
        out.update((str(cam), int(f)) for f in frames)
    return out


class ViewSet(torch.utils.data.Dataset):
    """In-memory views of a capture at one resolution. ``__getitem__`` -> dict of tensors."""

    def __init__(self, cap, views: list[View], resolution: int | None = None, joint_set=None, progress=None):
        from engine.body.joint_sets import map_joints

        if not views:
            raise MarionetteError(f"{cap.root}: no views to load (check train_cameras/heldout_cameras and "
                                  "heldout_frames in capture.json)")
        self.cap = cap
        self.views = list(views)
        self.resolution = resolution
        src = cap.joint_set
        self.joint_set = joint_set or src
        joints = cap.skeleton.joints
        if self.joint_set.name != src.name:
            joints = map_joints(joints, src, self.joint_set).astype(np.float32)
        self._joints = joints
        self.cameras: dict[str, Camera] = {}
        # index of each training camera (the actor's per-camera colour correction); -1 = none
        self.camera_index = {name: i for i, name in enumerate(cap.train_cameras)}
        for name in {v.camera for v in self.views}:
            cam = cap.camera(name)
            if cam.has_distortion:
                raise MarionetteError(f"{cap.root / 'cameras.json'}: camera {name!r} has lens distortion; training "
                                      "needs undistorted images and pinhole cameras (undistort the capture first)")
            self.cameras[name] = cam.scaled(scale_for(cam, resolution)) if resolution else cam
        sizes = {(c.width, c.height) for c in self.cameras.values()}
        self.size = sizes.pop() if len(sizes) == 1 else None  # None: mixed sizes (batch must be 1)
        self.images, self.masks, self.boxes = [], [], []
        for v in self.views:
            rgb, mask = self._load(v)
            self.images.append(rgb)
            self.masks.append(mask)
            self.boxes.append(_mask_box(mask))
            if progress is not None:
                progress(1)

    def _load(self, v: View):
        import cv2

        cam = self.cameras[v.camera]
        if self.cap.has_masks:
            rgb = self.cap.load_image(v.camera, v.frame)
            mask = self.cap.load_mask(v.camera, v.frame)
        else:
            rgba = self.cap.load_rgba(v.camera, v.frame)
            rgb, mask = rgba[..., :3], rgba[..., 3]
        if rgb.shape[:2] != (cam.height, cam.width):
            # INTER_AREA averages instead of skipping pixels, the right filter for downscaling
            rgb = cv2.resize(rgb, (cam.width, cam.height), interpolation=cv2.INTER_AREA)
            mask = cv2.resize(mask, (cam.width, cam.height), interpolation=cv2.INTER_AREA)
        to8 = lambda a: np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8)
        return to8(rgb), to8(mask)

    def __len__(self) -> int:
        return len(self.views)

    def joints(self, frame: int) -> np.ndarray:
        return self._joints[self.cap.frame_row(frame)]

    def __getitem__(self, i: int) -> dict:
        v = self.views[i]
        cam = self.cameras[v.camera]
        joints = self.joints(v.frame)
        if not np.isfinite(joints).all():
            raise MarionetteError(f"{self.cap.root / 'joints3d.npz'}: frame {v.frame} has missing (NaN) joints; "
                                  "fill them before training")
        return {
            "rgb": torch.from_numpy(self.images[i]).permute(2, 0, 1).float() / 255.0,
            "mask": torch.from_numpy(self.masks[i])[None].float() / 255.0,
            "joints": torch.from_numpy(np.ascontiguousarray(joints, dtype=np.float32)),
            "K": torch.as_tensor(cam.K, dtype=torch.float32),
            "R": torch.as_tensor(cam.R, dtype=torch.float32),
            "t": torch.as_tensor(cam.t, dtype=torch.float32),
            "index": torch.tensor(i),
            "row": torch.tensor(self.cap.frame_row(v.frame)),  # the frame's row in the capture's skeleton
            "camera_index": torch.tensor(self.camera_index.get(v.camera, -1)),
            "box": torch.tensor(self.boxes[i], dtype=torch.float32),  # the person's pixels (crop training)
        }

    def batch(self, indices) -> dict:
        items = [self[int(i)] for i in indices]
        shapes = {tuple(it["rgb"].shape) for it in items}
        if len(shapes) != 1:
            raise MarionetteError(f"{self.cap.root}: cameras have different image sizes at this resolution "
                                  f"({sorted(shapes)}); use --batch 1")
        return {k: torch.stack([it[k] for it in items]) for k in items[0]}


def _mask_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) pixel bounds (inclusive) of a uint8 mask's person (> half); the whole image
    when it shows nobody."""
    ys, xs = np.nonzero(mask > 127)
    if len(xs) == 0:
        return 0.0, 0.0, float(mask.shape[1] - 1), float(mask.shape[0] - 1)
    return float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())


def check_trainable_frames(cap, joint_set, frames) -> None:
    """Fail early, naming frames, when the actor's joints are missing in training frames."""
    from engine.body.joint_sets import map_joints

    joints = cap.skeleton.joints
    if joint_set.name != cap.joint_set.name:
        joints = map_joints(joints, cap.joint_set, joint_set)
    needed = sorted({j for b in joint_set.bones for j in b})
    rows = [cap.frame_row(f) for f in frames]
    bad = [f for f, r in zip(frames, rows) if not np.isfinite(joints[r][needed]).all()]
    if bad:
        raise MarionetteError(f"{Path(cap.root) / 'joints3d.npz'}: frames {bad[:10]}{'...' if len(bad) > 10 else ''} "
                              f"miss joints the {joint_set.name} bones need; fill the gaps or drop those frames")
