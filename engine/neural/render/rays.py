"""Camera rays for the renderer (OpenCV convention, integer pixel centres).

Pixel (i, j) (i = column, j = row) has normalised coordinates
``y = (j - cy)/fy``, ``x = (i - cx - K01*y)/fx``; its camera-frame ray is
``(x, y, 1)/|(x, y, 1)|``, its world ray ``d = R^T d_cam`` and every ray of a camera
starts at the camera centre ``o = -R^T t``.  Distorted cameras (``Camera.dist``)
need explicit per-pixel directions (``camera_ray_directions``), which only the
reference renderer accepts.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from engine import MarionetteError
from engine.geometry.camera import Camera


def cameras_to_tensors(cameras, batch: int | None = None, device=None, dtype=torch.float32):
    """A Camera, a list of Cameras, or (K, R, t) tensors -> K [B,3,3], R [B,3,3], t [B,3].

    A single camera (or a list of one) is broadcast to ``batch`` when given.
    """
    if isinstance(cameras, Camera):
        cameras = [cameras]
    if isinstance(cameras, dict):
        cameras = (cameras["K"], cameras["R"], cameras["t"])
    if isinstance(cameras, (tuple, list)) and len(cameras) == 3 and not isinstance(cameras[0], Camera):
        K, R, t = (torch.as_tensor(x, device=device, dtype=dtype) for x in cameras)
        if K.dim() == 2:
            K, R, t = K[None], R[None], t[None]
        if K.shape[-2:] != (3, 3) or R.shape[-2:] != (3, 3) or t.shape[-1] != 3 or not (K.shape[0] == R.shape[0] == t.shape[0]):
            raise MarionetteError(f"cameras: expected K [B,3,3], R [B,3,3], t [B,3], got "
                                  f"{tuple(K.shape)}, {tuple(R.shape)}, {tuple(t.shape)}")
    elif isinstance(cameras, Sequence) and cameras and all(isinstance(c, Camera) for c in cameras):
        K = torch.as_tensor(np.stack([c.K for c in cameras]), device=device, dtype=dtype)
        R = torch.as_tensor(np.stack([c.R for c in cameras]), device=device, dtype=dtype)
        t = torch.as_tensor(np.stack([c.t for c in cameras]), device=device, dtype=dtype)
    else:
        raise MarionetteError("cameras: expected a Camera, a non-empty list of Cameras, or (K, R, t) tensors, "
                              f"got {type(cameras).__name__}")
    if batch is not None and K.shape[0] != batch:
        if K.shape[0] != 1:
            raise MarionetteError(f"cameras: got {K.shape[0]} cameras for a batch of {batch} frames "
                                  "(give one camera per frame, or one for all)")
        K, R, t = K.expand(batch, 3, 3), R.expand(batch, 3, 3), t.expand(batch, 3)
    return K, R, t


def camera_origins(R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Camera centres ``-R^T t``: R [B,3,3], t [B,3] -> [B,3]."""
    return -torch.einsum("bji,bj->bi", R, t)


def pixel_directions(K: torch.Tensor, R: torch.Tensor, height: int, width: int,
                     rows: torch.Tensor | None = None, cols: torch.Tensor | None = None) -> torch.Tensor:
    """Unit world ray directions through pixel centres (pinhole, no distortion).

    K, R [B,3,3] -> [B, H*W, 3] in row-major pixel order (index = j*W + i).
    ``rows``/``cols`` (1-D, same length) select a subset of pixels instead.
    """
    device, dtype = K.device, K.dtype
    if rows is None:
        jj, ii = torch.meshgrid(torch.arange(height, device=device, dtype=dtype),
                                torch.arange(width, device=device, dtype=dtype), indexing="ij")
        rows, cols = jj.reshape(-1), ii.reshape(-1)
    rows = rows.to(dtype)[None]
    cols = cols.to(dtype)[None]
    fx, fy = K[:, 0, 0, None], K[:, 1, 1, None]
    cx, cy, skew = K[:, 0, 2, None], K[:, 1, 2, None], K[:, 0, 1, None]
    y = (rows - cy) / fy
    x = (cols - cx - skew * y) / fx
    d = torch.stack([x, y, torch.ones_like(x)], dim=-1)
    d = d / d.norm(dim=-1, keepdim=True)
    return torch.einsum("bpi,bij->bpj", d, R)  # row vector d_c^T R == (R^T d_c)^T


def camera_ray_directions(camera: Camera, device=None, dtype=torch.float32) -> torch.Tensor:
    """Unit world ray directions [H, W, 3] of one camera, undoing its lens distortion."""
    _, d = camera.pixel_rays(undistort=True)
    return torch.as_tensor(d, device=device, dtype=dtype)


def fit_camera(camera: Camera, height: int | None, width: int | None) -> Camera:
    """The camera rescaled to render at ``height`` x ``width`` (same aspect ratio required)."""
    if height is None and width is None:
        return camera
    height = camera.height if height is None else int(height)
    width = camera.width if width is None else int(width)
    if (height, width) == (camera.height, camera.width):
        return camera
    factor = width / camera.width
    scaled = camera.scaled(factor)
    if scaled.height != height:
        raise MarionetteError(f"camera {camera.name!r}: cannot render {camera.width}x{camera.height} at "
                              f"{width}x{height} (different aspect ratio); give a matching height/width")
    return scaled
