"""Camera rigs for synthetic captures: a ring of cameras around a look-at target plus named
held-out cameras placed between them (other azimuths and heights), OpenCV convention."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from engine import MarionetteError
from engine.geometry.camera import Camera

SENSOR_WIDTH_MM = 36.0  # focal lengths are 35 mm-equivalent: f_px = f_mm / 36 * max(W, H)


@dataclass
class RigSpec:
    count: int = 8
    radius: float = 3.5
    heights: tuple = (1.0, 1.6)  # cycled over the ring's cameras
    focal_mm: tuple = (35.0,)  # cycled over the ring's cameras
    width: int = 256
    height: int = 256
    target: tuple = (0.0, 0.0, 0.9)
    heldout: int = 0
    heldout_heights: tuple = (1.3, 2.2)
    heldout_focal_mm: tuple = (40.0,)
    start_deg: float = -90.0  # cam00 sits in front of the actor's rest facing (-Y)

    def validate(self) -> None:
        def positive(name, value):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise MarionetteError(f"camera rig: {name} must be a positive number, got {value!r}")

        if not isinstance(self.count, int) or self.count < 1:
            raise MarionetteError(f"camera rig: --cameras must be at least 1, got {self.count!r}")
        if not isinstance(self.heldout, int) or self.heldout < 0:
            raise MarionetteError(f"camera rig: --heldout-cameras must be 0 or more, got {self.heldout!r}")
        for name in ("width", "height"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 8 or v > 8192:
                raise MarionetteError(f"camera rig: resolution {name} must be an integer in 8..8192, got {v!r}")
        positive("--radius", self.radius)
        for name in ("heights", "heldout_heights", "focal_mm", "heldout_focal_mm"):
            values = getattr(self, name)
            if not values:
                raise MarionetteError(f"camera rig: {name} needs at least one value")
            for v in values:
                if name.endswith("focal_mm"):
                    positive(name, v)
                elif not math.isfinite(v):
                    raise MarionetteError(f"camera rig: {name} must be finite numbers, got {v!r}")
        if len(self.target) != 3 or not all(math.isfinite(v) for v in self.target):
            raise MarionetteError(f"camera rig: --look-at must be three numbers, got {self.target!r}")
        for h in tuple(self.heights) + tuple(self.heldout_heights):
            if math.hypot(self.radius, h - self.target[2]) < 0.5:
                raise MarionetteError(f"camera rig: a camera at height {h} m is within 0.5 m of the look-at target")


def _camera(name, azimuth, radius, height, focal_mm, spec: RigSpec) -> Camera:
    eye = (spec.target[0] + radius * math.cos(azimuth), spec.target[1] + radius * math.sin(azimuth), height)
    f_px = focal_mm / SENSOR_WIDTH_MM * max(spec.width, spec.height)
    return Camera.look_at(name, eye=eye, target=spec.target, width=spec.width, height=spec.height, f_px=f_px)


def build_rig(spec: RigSpec) -> tuple[list[Camera], list[str], list[str]]:
    """(cameras, train camera names, held-out camera names). Ring cameras are ``cam00..``,
    held-out cameras ``heldout00..``, at azimuths half-way between ring cameras."""
    spec.validate()
    cams, train, held = [], [], []
    step = 2 * math.pi / spec.count
    start = math.radians(spec.start_deg)
    for i in range(spec.count):
        name = f"cam{i:02d}"
        cams.append(_camera(name, start + i * step, spec.radius, spec.heights[i % len(spec.heights)],
                            spec.focal_mm[i % len(spec.focal_mm)], spec))
        train.append(name)
    hstep = 2 * math.pi / max(spec.heldout, 1)
    for k in range(spec.heldout):
        name = f"heldout{k:02d}"
        # half a ring step off the ring cameras, spread evenly around
        az = start + 0.5 * step + k * hstep + (0.25 * step if spec.heldout > spec.count else 0.0)
        cams.append(_camera(name, az, spec.radius * 0.95, spec.heldout_heights[k % len(spec.heldout_heights)],
                            spec.heldout_focal_mm[k % len(spec.heldout_focal_mm)], spec))
        held.append(name)
    return cams, train, held



def orbit_path(centre, radius: float, height: float, frames: int, start_deg: float = -90.0,
               sweep_deg: float = 90.0) -> np.ndarray:
    """Eye positions [frames, 3] of a camera circling ``centre`` (Z up) at ``height``,
    sweeping ``sweep_deg`` degrees from ``start_deg`` over the clip."""
    cx, cy = float(centre[0]), float(centre[1])
    t = np.linspace(0.0, 1.0, frames) if frames > 1 else np.zeros(1)
    a = np.radians(start_deg + sweep_deg * t)
    return np.stack([cx + radius * np.cos(a), cy + radius * np.sin(a), np.full_like(a, height)], axis=-1)
