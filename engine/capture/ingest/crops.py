"""Square crops around the subject, undistorted in one resampling step.

A crop is a box ``(x0, y0, side)`` in the *undistorted* full-frame image of a camera
(continuous pixel coordinates, integer pixel centres). Its camera is the full-frame
pinhole camera with the principal point shifted by the box corner and everything scaled
to the crop's resolution, so projecting a world point with the crop camera lands where
the crop shows it. The image is made by one ``cv2.remap`` from the *distorted* video frame
(undistortion, crop and resize at once, supersampled then area-averaged when shrinking),
so nothing is resampled twice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from engine.geometry.camera import Camera


@dataclass(frozen=True)
class CropBox:
    x0: float  # left edge of the box (continuous coordinates of the undistorted full frame)
    y0: float  # top edge
    side: float  # box side in full-frame pixels

    def to_list(self) -> list[float]:
        return [round(self.x0, 3), round(self.y0, 3), round(self.side, 3)]


def square_box(points: np.ndarray, margin: float = 0.15, min_side: float = 32.0) -> CropBox:
    """The square box around 2D ``points`` [N, 2] (NaN ignored), grown by ``margin`` of its side
    on every edge."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    p = p[np.isfinite(p).all(1)]
    lo, hi = p.min(0), p.max(0)
    centre = 0.5 * (lo + hi)
    side = max(float((hi - lo).max()) * (1.0 + 2.0 * margin), min_side)
    return CropBox(float(centre[0] - side / 2), float(centre[1] - side / 2), side)


def crop_camera(full: Camera, box: CropBox, resolution: int, name: str | None = None) -> Camera:
    """The pinhole camera of ``box`` rendered at ``resolution``² (distortion-free).

    A full-frame pixel centre ``u`` maps to ``(u - x0 + 0.5) * f - 0.5`` in the crop, with
    ``f = resolution / side`` (the box's left edge ``x0`` is the crop's edge ``-0.5``).
    """
    f = resolution / box.side
    K = full.K.astype(np.float64).copy()
    # a full-frame coordinate u lands at c = (u - x0) * f - 0.5 in the crop, so u = fx X/Z + cx gives:
    K[0, 2] = (full.K[0, 2] - box.x0) * f - 0.5
    K[1, 2] = (full.K[1, 2] - box.y0) * f - 0.5
    K[0, 0] *= f
    K[1, 1] *= f
    K[0, 1] *= f
    return Camera(name=name or full.name, K=K, R=full.R.copy(), t=full.t.copy(), width=int(resolution),
                  height=int(resolution), dist=np.zeros(5))


def undistorted(cam: Camera) -> Camera:
    """The same camera without lens distortion (the camera of an undistorted image)."""
    return cam.copy(dist=np.zeros(5))


class CropSampler:
    """Makes crops of one video camera: distorted BGR frame -> undistorted crop at ``resolution``."""

    def __init__(self, video_cam: Camera, box: CropBox, resolution: int, max_supersample: int = 4):
        import cv2

        self.resolution = int(resolution)
        self.camera = crop_camera(undistorted(video_cam), box, self.resolution)
        # sample at about one full-frame pixel per sample, then area-average down to the crop
        self.ss = int(min(max_supersample, max(1, math.ceil(box.side / self.resolution))))
        hi = crop_camera(undistorted(video_cam), box, self.resolution * self.ss)
        dist = np.asarray(video_cam.dist, dtype=np.float64).reshape(-1)
        self.map1, self.map2 = cv2.initUndistortRectifyMap(
            video_cam.K.astype(np.float64), dist, None, hi.K, (hi.width, hi.height), cv2.CV_16SC2)

    def __call__(self, image: np.ndarray, interpolation=None) -> np.ndarray:
        import cv2

        interp = cv2.INTER_LINEAR if interpolation is None else interpolation
        out = cv2.remap(image, self.map1, self.map2, interp, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        if self.ss > 1:
            out = cv2.resize(out, (self.resolution, self.resolution), interpolation=cv2.INTER_AREA)
        return out
