"""One camera model for the whole project: OpenCV pinhole + distortion.

Conventions (used everywhere in Marionette):

* ``x_cam = R @ x_world + t``; the camera looks down +Z, image x right, image y down.
* Pixel centres sit at **integer** coordinates (OpenCV's convention): pixel (i, j)
  covers [i-0.5, i+0.5] x [j-0.5, j+0.5]; the image spans [-0.5, W-0.5]. Blender's
  normalised view coordinates (0 at the left edge, 1 at the right) therefore map to
  ``x = u * W - 0.5``.
* Distortion is OpenCV's ``(k1, k2, p1, p2[, k3[, k4, k5, k6]])``.
* Units are metres.

Functions take numpy arrays or torch tensors (``project_points_torch``,
``undistort_pixels_torch``) and broadcast over any leading batch shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine import MarionetteError
from engine.fileio import read_json, write_json_atomic
from engine.validate import MAX_IMAGE_SIDE, number, whole_number

CAMERA_JSON_FORMAT = "marionette.cameras"
CAMERA_JSON_VERSION = 1
MAX_FOCAL_RATIO = 1000.0   # focal length and principal point, in image sizes (1000: a 0.06 degree field of view)
MAX_DISTORTION = 1e6       # magnitude of a distortion coefficient
MAX_TRANSLATION = 1e6      # metres


def _as_matrix(value, shape, where: str) -> np.ndarray:
    if isinstance(value, (str, bytes, dict)):
        raise MarionetteError(f"{where}: expected numbers of shape {shape}, got {str(value)[:60]!r}")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise MarionetteError(f"{where}: expected numbers of shape {shape}, got {str(value)[:60]}") from None
    if arr.size != int(np.prod(shape)):
        raise MarionetteError(f"{where}: expected shape {shape}, got {arr.shape}")
    arr = arr.reshape(shape)
    if not np.all(np.isfinite(arr)):
        raise MarionetteError(f"{where}: contains NaN or infinite values")
    return arr


@dataclass
class Camera:
    """A calibrated camera. ``K`` 3x3, ``dist`` (0, 4, 5 or 8,), ``R`` 3x3 world-to-camera, ``t`` (3,)."""

    name: str
    K: np.ndarray
    R: np.ndarray
    t: np.ndarray
    width: int
    height: int
    dist: np.ndarray = field(default_factory=lambda: np.zeros(5))

    def __post_init__(self):
        where = f"camera {self.name!r}"
        self.K = _as_matrix(self.K, (3, 3), f"{where} field 'K'")
        self.R = _as_matrix(self.R, (3, 3), f"{where} field 'R'")
        self.t = _as_matrix(self.t, (3,), f"{where} field 't'")
        dist = self.dist if self.dist is not None else []
        if isinstance(dist, (str, bytes, dict)):
            raise MarionetteError(f"{where} field 'dist': expected a list of 0, 4, 5 or 8 coefficients, got {dist!r}")
        try:
            d = np.asarray(dist, dtype=np.float64).ravel()
        except (TypeError, ValueError, OverflowError):
            raise MarionetteError(f"{where} field 'dist': expected a list of 0, 4, 5 or 8 numbers, "
                                  f"got {str(dist)[:60]}") from None
        if d.size not in (0, 4, 5, 8, 12, 14):
            raise MarionetteError(f"{where} field 'dist': expected 0, 4, 5 or 8 coefficients, got {d.size}")
        if not np.all(np.isfinite(d)) or np.any(np.abs(d) > MAX_DISTORTION):
            raise MarionetteError(f"{where} field 'dist': coefficients must be finite numbers of magnitude at most "
                                  f"{MAX_DISTORTION:g}, got {d.tolist()}")
        self.dist = np.pad(d, (0, max(0, 5 - d.size)))
        self.width = whole_number(self.width, f"{where} image size: field 'width'", lo=1, hi=MAX_IMAGE_SIDE)
        self.height = whole_number(self.height, f"{where} image size: field 'height'", lo=1, hi=MAX_IMAGE_SIDE)
        side = max(self.width, self.height)
        if np.abs(self.K[:2]).max() > MAX_FOCAL_RATIO * side:
            # a focal length of 1e308 px (or a principal point as far) is a broken file, not a lens
            raise MarionetteError(f"{where} field 'K': focal lengths and principal point must be at most "
                                  f"{MAX_FOCAL_RATIO:g} x the image size ({side} px), got {self.K[:2].tolist()}")
        if abs(np.linalg.det(self.K)) < 1e-12 or self.K[0, 0] <= 0 or self.K[1, 1] <= 0:
            raise MarionetteError(f"{where} field 'K': singular or non-positive focal length {self.K.tolist()}")
        if not np.allclose(self.K[2], [0, 0, 1], atol=1e-9):
            raise MarionetteError(f"{where} field 'K': last row must be [0, 0, 1], got {self.K[2].tolist()}")
        if np.abs(self.t).max() > MAX_TRANSLATION:
            raise MarionetteError(f"{where} field 't': translation beyond {MAX_TRANSLATION:g} m, got {self.t.tolist()}")
        if abs(np.linalg.det(self.R) - 1.0) > 1e-3 or not np.allclose(self.R @ self.R.T, np.eye(3), atol=1e-3):
            raise MarionetteError(f"{where} field 'R': not a rotation matrix (det {np.linalg.det(self.R):.4f})")

    # ------------------------------------------------------------------ basics
    @property
    def fx(self) -> float:
        return float(self.K[0, 0])

    @property
    def fy(self) -> float:
        return float(self.K[1, 1])

    @property
    def cx(self) -> float:
        return float(self.K[0, 2])

    @property
    def cy(self) -> float:
        return float(self.K[1, 2])

    @property
    def center(self) -> np.ndarray:
        """Camera centre in world coordinates."""
        return -self.R.T @ self.t

    @property
    def P(self) -> np.ndarray:
        """3x4 projection matrix K [R | t] (ignores distortion)."""
        return self.K @ np.hstack([self.R, self.t[:, None]])

    @property
    def has_distortion(self) -> bool:
        return bool(np.any(self.dist != 0))

    def copy(self, **changes) -> "Camera":
        fields = dict(name=self.name, K=self.K.copy(), R=self.R.copy(), t=self.t.copy(),
                      width=self.width, height=self.height, dist=self.dist.copy())
        fields.update(changes)
        return Camera(**fields)

    def scaled(self, factor: float) -> "Camera":
        """The same camera at a resolution scaled by ``factor`` (integer-centred pixels)."""
        factor = number(factor, f"camera {self.name!r}: scale factor", lo=0, lo_open=True,
                        hi=MAX_IMAGE_SIDE / max(self.width, self.height))
        K = self.K.copy()
        K[0, 0] *= factor
        K[1, 1] *= factor
        K[0, 1] *= factor
        K[0, 2] = (K[0, 2] + 0.5) * factor - 0.5
        K[1, 2] = (K[1, 2] + 0.5) * factor - 0.5
        return self.copy(K=K, width=max(1, round(self.width * factor)), height=max(1, round(self.height * factor)))

    def in_world(self, rotation, scale: float = 1.0) -> "Camera":
        """The same camera in a world whose points are ``x' = scale * rotation @ x``.

        ``rotation`` (3, 3) is a proper rotation, e.g. ``engine.geometry.axes.up_axis_matrix("Y")``
        (a Y-up capture seen in Blender's Z-up world). Pixels do not change:
        ``cam.in_world(A, s).project(s * x @ A.T) == cam.project(x)``.

        >>> cam = Camera.look_at("c", (0.0, -3.0, 1.0), (0.0, 0.0, 1.0), 64, 48)
        >>> A = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
        >>> x = np.array([0.1, 0.2, 1.3])
        >>> bool(np.allclose(cam.in_world(A, 2.0).project(2.0 * A @ x), cam.project(x)))
        True
        """
        where = f"camera {self.name!r}: world change"
        A = _as_matrix(rotation, (3, 3), f"{where} rotation")
        if abs(np.linalg.det(A) - 1.0) > 1e-6 or not np.allclose(A @ A.T, np.eye(3), atol=1e-6):
            raise MarionetteError(f"{where}: rotation is not a proper rotation matrix {A.tolist()}")
        if isinstance(scale, bool) or not np.isfinite(scale) or scale <= 0:
            raise MarionetteError(f"{where}: scale must be a positive number, got {scale!r}")
        return self.copy(R=self.R @ A.T, t=float(scale) * self.t)

    # ------------------------------------------------------------------ projection
    def world_to_camera(self, points: np.ndarray) -> np.ndarray:
        points = np.asarray(points, dtype=np.float64)
        return points @ self.R.T + self.t

    def project(self, points: np.ndarray, distort: bool = True) -> np.ndarray:
        """World points [..., 3] to pixels [..., 2]. Points behind the camera give NaN."""
        cam = self.world_to_camera(points)
        z = cam[..., 2:3]
        with np.errstate(divide="ignore", invalid="ignore"):
            xy = cam[..., :2] / z
        xy = np.where(z > 1e-9, xy, np.nan)
        if distort and self.has_distortion:
            xy = distort_normalized(xy, self.dist)
        u = self.K[0, 0] * xy[..., 0] + self.K[0, 1] * xy[..., 1] + self.K[0, 2]
        v = self.K[1, 1] * xy[..., 1] + self.K[1, 2]
        return np.stack([u, v], axis=-1)

    def undistort_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Distorted pixels [..., 2] to the pixels an ideal pinhole camera with the same K sees."""
        pixels = np.asarray(pixels, dtype=np.float64)
        if not self.has_distortion:
            return pixels.copy()
        xy = self.pixels_to_normalized(pixels)
        u = self.K[0, 0] * xy[..., 0] + self.K[0, 1] * xy[..., 1] + self.K[0, 2]
        v = self.K[1, 1] * xy[..., 1] + self.K[1, 2]
        return np.stack([u, v], axis=-1)

    def pixels_to_normalized(self, pixels: np.ndarray, undistort: bool = True) -> np.ndarray:
        """Pixels [..., 2] to normalised image coordinates (x/z, y/z), undoing distortion."""
        pixels = np.asarray(pixels, dtype=np.float64)
        y = (pixels[..., 1] - self.K[1, 2]) / self.K[1, 1]
        x = (pixels[..., 0] - self.K[0, 2] - self.K[0, 1] * y) / self.K[0, 0]
        xy = np.stack([x, y], axis=-1)
        if undistort and self.has_distortion:
            xy = undistort_normalized(xy, self.dist)
        return xy

    def pixel_rays(self, undistort: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Ray origin (3,) and unit directions [H, W, 3] in world coordinates through pixel centres."""
        jj, ii = np.meshgrid(np.arange(self.height, dtype=np.float64),
                             np.arange(self.width, dtype=np.float64), indexing="ij")
        xy = self.pixels_to_normalized(np.stack([ii, jj], axis=-1), undistort=undistort)
        d = np.concatenate([xy, np.ones_like(xy[..., :1])], axis=-1)
        d /= np.linalg.norm(d, axis=-1, keepdims=True)
        return self.center, d @ self.R  # (R^T d^T)^T

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "width": self.width,
            "height": self.height,
            "K": self.K.tolist(),
            "dist": self.dist.tolist(),
            "R": self.R.tolist(),
            "t": self.t.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict, where: str = "camera") -> "Camera":
        if not isinstance(d, dict):
            raise MarionetteError(f"{where}: expected an object with K, R, t, width, height")
        for key in ("K", "R", "t", "width", "height"):
            if key not in d:
                raise MarionetteError(f"{where}: missing field {key!r}")
        name = str(d.get("name", where))
        try:
            return cls(name=name, K=d["K"], R=d["R"], t=d["t"], width=d["width"], height=d["height"],
                       dist=d.get("dist", []))
        except MarionetteError as exc:
            raise MarionetteError(f"{where}: {exc}") from None

    @classmethod
    def look_at(cls, name: str, eye, target, width: int, height: int, f_px: float | None = None,
                fov_deg: float | None = None, up=(0.0, 0.0, 1.0)) -> "Camera":
        """A distortion-free camera at ``eye`` looking at ``target`` with world ``up`` (Z-up by default)."""
        eye, target, up = (np.asarray(v, dtype=np.float64) for v in (eye, target, up))
        if f_px is None:
            fov = math.radians(fov_deg if fov_deg is not None else 40.0)
            f_px = 0.5 * max(width, height) / math.tan(fov / 2)
        z = target - eye
        if np.linalg.norm(z) < 1e-9:
            raise MarionetteError(f"camera {name!r}: eye and target coincide")
        z /= np.linalg.norm(z)
        x = np.cross(z, up)
        if np.linalg.norm(x) < 1e-9:  # looking straight along up: pick any perpendicular
            x = np.cross(z, [1.0, 0.0, 0.0] if abs(z[0]) < 0.9 else [0.0, 1.0, 0.0])
        x /= np.linalg.norm(x)
        y = np.cross(z, x)
        R = np.stack([x, y, z])
        K = np.array([[f_px, 0, (width - 1) / 2], [0, f_px, (height - 1) / 2], [0, 0, 1]])
        return cls(name=name, K=K, R=R, t=-R @ eye, width=width, height=height)


# ---------------------------------------------------------------------- distortion
def distort_normalized(xy: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """OpenCV distortion of normalised coordinates [..., 2]."""
    d = np.zeros(8)
    d[: min(8, len(dist))] = dist[:8]
    k1, k2, p1, p2, k3, k4, k5, k6 = d
    x, y = xy[..., 0], xy[..., 1]
    r2 = x * x + y * y
    radial = (1 + r2 * (k1 + r2 * (k2 + r2 * k3))) / (1 + r2 * (k4 + r2 * (k5 + r2 * k6)))
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return np.stack([xd, yd], axis=-1)


def undistort_normalized(xy_d: np.ndarray, dist: np.ndarray, iterations: int = 20,
                         tol: float | None = None) -> np.ndarray:
    """Invert ``distort_normalized`` by fixed-point iteration (as cv2.undistortPoints does).

    ``tol`` (normalised units) stops early once the error bound of the iteration
    (contraction estimate times the last step) is below it; None always runs
    ``iterations`` steps.
    """
    d = np.zeros(8)
    d[: min(8, len(dist))] = dist[:8]
    k1, k2, p1, p2, k3, k4, k5, k6 = d
    rational = bool(k4 or k5 or k6)
    x0, y0 = xy_d[..., 0], xy_d[..., 1]
    x, y = x0, y0
    lipschitz = None
    if tol is not None and not rational and x0.size:
        # a bound on the map's contraction over the points' radius (a-posteriori stopping)
        r2m = float(np.nanmax(x0 * x0 + y0 * y0, initial=0.0)) * 1.5
        lipschitz = (3 * abs(k1) * r2m + 5 * abs(k2) * r2m ** 2 + 7 * abs(k3) * r2m ** 3
                     + 6 * (abs(p1) + abs(p2)) * r2m ** 0.5)
        if lipschitz >= 0.5:
            lipschitz = None
    for _ in range(iterations):
        r2 = x * x + y * y
        if rational:
            icdist = (1 + r2 * (k4 + r2 * (k5 + r2 * k6))) / (1 + r2 * (k1 + r2 * (k2 + r2 * k3)))
        else:
            icdist = 1 / (1 + r2 * (k1 + r2 * (k2 + r2 * k3)))
        xy2 = 2 * x * y
        xn = (x0 - (p1 * xy2 + p2 * (r2 + 2 * x * x))) * icdist
        yn = (y0 - (p1 * (r2 + 2 * y * y) + p2 * xy2)) * icdist
        if tol is not None:
            moved = np.abs(xn - x)
            moved += np.abs(yn - y)
            x, y = xn, yn
            step = moved.max(initial=0.0)  # NaN never compares true: those run all iterations
            if (lipschitz is not None and lipschitz / (1 - lipschitz) * step <= tol) or step <= tol:
                break
        else:
            x, y = xn, yn
    return np.stack([x, y], axis=-1)


def project_points_torch(points, K, R, t, dist=None):
    """Batched differentiable projection in torch.

    points [..., N, 3], K [..., 3, 3], R [..., 3, 3], t [..., 3], dist [..., 5|8] or None
    -> pixels [..., N, 2] and depth [..., N].
    """
    import torch

    cam = torch.einsum("...ij,...nj->...ni", R, points) + t.unsqueeze(-2)
    z = cam[..., 2]
    xy = cam[..., :2] / z.clamp_min(1e-9).unsqueeze(-1)
    if dist is not None:
        d = torch.nn.functional.pad(dist, (0, 8 - dist.shape[-1]))
        k1, k2, p1, p2, k3, k4, k5, k6 = (d[..., i : i + 1] for i in range(8))
        x, y = xy[..., 0], xy[..., 1]
        r2 = x * x + y * y
        radial = (1 + r2 * (k1 + r2 * (k2 + r2 * k3))) / (1 + r2 * (k4 + r2 * (k5 + r2 * k6)))
        xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
        yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
        xy = torch.stack([xd, yd], dim=-1)
    u = K[..., 0:1, 0] * xy[..., 0] + K[..., 0:1, 1] * xy[..., 1] + K[..., 0:1, 2]
    v = K[..., 1:2, 1] * xy[..., 1] + K[..., 1:2, 2]
    return torch.stack([u, v], dim=-1), z


def undistort_pixels_torch(pixels, K, dist, iterations: int = 20):
    """Batched torch undistortion: distorted pixels [..., N, 2] -> normalised coordinates
    [..., N, 2] (x/z, y/z), inverting OpenCV's model by fixed-point iteration (as
    ``undistort_normalized``). K [..., 3, 3], dist [..., 4|5|8]. Differentiable.
    """
    import torch

    fx, fy = K[..., 0:1, 0], K[..., 1:2, 1]
    cx, cy, skew = K[..., 0:1, 2], K[..., 1:2, 2], K[..., 0:1, 1]
    y0 = (pixels[..., 1] - cy) / fy
    x0 = (pixels[..., 0] - cx - skew * y0) / fx
    d = torch.nn.functional.pad(dist, (0, 8 - dist.shape[-1]))
    k1, k2, p1, p2, k3, k4, k5, k6 = (d[..., i: i + 1] for i in range(8))
    x, y = x0, y0
    for _ in range(iterations):
        r2 = x * x + y * y
        icdist = (1 + r2 * (k4 + r2 * (k5 + r2 * k6))) / (1 + r2 * (k1 + r2 * (k2 + r2 * k3)))
        dx = 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
        dy = p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
        x, y = (x0 - dx) * icdist, (y0 - dy) * icdist
    return torch.stack([x, y], dim=-1)


# ---------------------------------------------------------------------- Blender conversion
# Blender camera axes: looks down -Z, +Y up. OpenCV: looks down +Z, +Y down.
_BLENDER_TO_CV = np.diag([1.0, -1.0, -1.0])


def from_blender(matrix_world, lens: float, sensor_width: float, sensor_height: float,
                 sensor_fit: str, shift_x: float, shift_y: float, resolution_x: int,
                 resolution_y: int, pixel_aspect_x: float = 1.0, pixel_aspect_y: float = 1.0,
                 name: str = "blender_camera") -> Camera:
    """Build a Camera from Blender camera parameters (plain numbers; no bpy needed).

    ``resolution_*`` are the final pixel counts (resolution times percentage).
    ``matrix_world`` must be rigid (no scale); scale is removed if present.
    """
    M = np.asarray(matrix_world, dtype=np.float64).reshape(4, 4)
    rot = M[:3, :3]
    rot = rot / np.linalg.norm(rot, axis=0, keepdims=True)
    W, H = int(resolution_x), int(resolution_y)
    if W <= 0 or H <= 0:
        raise MarionetteError(f"Blender camera {name!r}: resolution must be positive, got {W}x{H}")
    R = _BLENDER_TO_CV @ rot.T
    t = -R @ M[:3, 3]
    fx, fy, cx, cy = _blender_intrinsics(lens, sensor_width, sensor_height, sensor_fit, shift_x,
                                         shift_y, W, H, pixel_aspect_x, pixel_aspect_y)
    K = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]])
    return Camera(name=name, K=K, R=R, t=t, width=W, height=H)


def _sensor_fit(sensor_fit: str, W: float, H: float) -> str:
    fit = sensor_fit.upper()
    if fit == "AUTO":
        return "HORIZONTAL" if W >= H else "VERTICAL"
    if fit not in ("HORIZONTAL", "VERTICAL"):
        raise MarionetteError(f"Blender camera sensor_fit: expected AUTO, HORIZONTAL or VERTICAL, got {sensor_fit!r}")
    return fit


def _blender_intrinsics(lens, sensor_width, sensor_height, sensor_fit, shift_x, shift_y, W, H,
                        pixel_aspect_x=1.0, pixel_aspect_y=1.0):
    # Blender works on the image in "aspect-corrected" units: width W*pax, height H*pay.
    Wa, Ha = W * pixel_aspect_x, H * pixel_aspect_y
    fit = _sensor_fit(sensor_fit, Wa, Ha)
    if fit == "HORIZONTAL":
        sensor, view = (sensor_width if sensor_fit.upper() != "AUTO" else sensor_width), Wa
    else:
        sensor, view = (sensor_height if sensor_fit.upper() != "AUTO" else sensor_width), Ha
    f_view = lens / sensor * view  # focal length in aspect-corrected pixel units
    fx, fy = f_view / pixel_aspect_x, f_view / pixel_aspect_y
    cx = W / 2 - shift_x * view / pixel_aspect_x - 0.5
    cy = H / 2 + shift_y * view / pixel_aspect_y - 0.5
    return fx, fy, cx, cy


def to_blender(camera: Camera, sensor_width: float = 36.0) -> dict:
    """Blender camera parameters reproducing ``camera`` (distortion is dropped).

    Returns matrix_world (4x4 list), lens, sensor_width, sensor_height, sensor_fit ('AUTO'),
    shift_x, shift_y, resolution_x, resolution_y, pixel_aspect_x, pixel_aspect_y.
    Non-square pixels (fx != fy) become a pixel aspect ratio.
    """
    W, H = camera.width, camera.height
    fx, fy = camera.fx, camera.fy
    # Blender's pixel aspect: pax/pay = fy/fx
    if fx >= fy:
        pax, pay = 1.0, fx / fy
    else:
        pax, pay = fy / fx, 1.0
    Wa, Ha = W * pax, H * pay
    view = max(Wa, Ha)
    f_view = fx * pax
    lens = f_view * sensor_width / view
    shift_x = (W / 2 - 0.5 - camera.cx) * pax / view
    shift_y = (camera.cy - H / 2 + 0.5) * pay / view
    M = np.eye(4)
    M[:3, :3] = (_BLENDER_TO_CV @ camera.R).T
    M[:3, 3] = camera.center
    return dict(matrix_world=M.tolist(), lens=float(lens), sensor_width=float(sensor_width),
                sensor_height=float(sensor_width * min(Wa, Ha) / view), sensor_fit="AUTO",
                shift_x=float(shift_x), shift_y=float(shift_y), resolution_x=W, resolution_y=H,
                pixel_aspect_x=float(pax), pixel_aspect_y=float(pay))


# ---------------------------------------------------------------------- viewport (view + projection matrices)
def from_view_projection(view_matrix, projection_matrix, width: int, height: int,
                         name: str = "viewport") -> Camera:
    """The pinhole ``Camera`` seeing what an OpenGL-style view and projection pair draws into a
    ``width x height`` image: a Blender 3D viewport's ``region_data.view_matrix`` and
    ``window_matrix`` (plain 4x4 arrays, row-major as ``numpy.array(matrix)`` gives them).

    Blender's view space looks down -Z with +Y up; clip coordinates ``P @ V @ (x, 1)`` map to the
    region as ``bpy_extras.view3d_utils.location_3d_to_region_2d`` does: ``u = W/2 (1 + x_ndc)``,
    ``v = H/2 (1 + y_ndc)`` with v upwards and the region's edges at 0 and W (H). With integer pixel
    centres (this module's convention) that is pixel ``(u - 0.5, H - v - 0.5)``, so

        fx = W/2 P00,  skew = -W/2 P01,  cx = W/2 (1 - P02) - 0.5
        fy = H/2 P11,                    cy = H/2 (1 + P12) - 0.5

    for the projection scaled so that its last row is (0, 0, -1, 0). The view matrix may carry a
    uniform scale (it cancels in the perspective division); an orthographic projection (last row
    (0, 0, 0, 1)) has no pinhole camera and raises a MarionetteError, as do shears no pinhole has.
    Rendering at a fraction of the region's size: pass the smaller ``width``/``height``.

    >>> cam = Camera.look_at("c", (0.0, -3.0, 1.0), (0.0, 0.0, 1.0), 64, 48)
    >>> V, P = to_view_projection(cam)
    >>> back = from_view_projection(V, P, 64, 48)
    >>> bool(np.allclose(back.K, cam.K) and np.allclose(back.R, cam.R) and np.allclose(back.t, cam.t))
    True
    """
    where = f"view {name!r}"
    V = _as_matrix(view_matrix, (4, 4), f"{where}: view matrix")
    P = _as_matrix(projection_matrix, (4, 4), f"{where}: projection matrix")
    W = whole_number(width, f"{where}: width", lo=1, hi=MAX_IMAGE_SIDE)
    H = whole_number(height, f"{where}: height", lo=1, hi=MAX_IMAGE_SIDE)
    if not np.allclose(V[3], [0.0, 0.0, 0.0, 1.0], atol=1e-9):
        raise MarionetteError(f"{where}: the view matrix's last row must be (0, 0, 0, 1), got {V[3].tolist()}")
    scale = np.linalg.norm(V[:3, :3], axis=1)
    if not (scale.min() > 1e-12 and np.allclose(scale, scale.mean(), rtol=1e-5)):
        raise MarionetteError(f"{where}: the view matrix must be a rotation and translation (a uniform scale at "
                              f"most), got row norms {scale.tolist()}")
    rot, trans = V[:3, :3] / scale.mean(), V[:3, 3] / scale.mean()
    if np.linalg.det(rot) < 0 or not np.allclose(rot @ rot.T, np.eye(3), atol=1e-5):
        raise MarionetteError(f"{where}: the view matrix's 3x3 part is not a rotation")
    d = -P[3, 2]
    tol = 1e-9 * max(1.0, float(np.abs(P).max()))
    if abs(d) <= tol or abs(P[3, 3]) > 1e-6 * abs(d):
        kind = "orthographic" if abs(P[3, 3]) > tol and abs(P[3, 2]) <= tol else "not a perspective projection"
        raise MarionetteError(f"{where}: the projection is {kind} (last row {P[3].tolist()}); the neural renderer "
                              "draws perspective views only (View > Perspective/Orthographic, or numpad 5)")
    P = P / d
    if abs(P[3, 0]) > 1e-9 or abs(P[3, 1]) > 1e-9 or abs(P[0, 3]) > 1e-9 or abs(P[1, 3]) > 1e-9 or abs(P[1, 0]) > 1e-9:
        raise MarionetteError(f"{where}: the projection matrix has terms no pinhole camera has "
                              f"(rows {P[:2].tolist()}, last row {P[3].tolist()})")
    if P[0, 0] <= 0 or P[1, 1] <= 0:
        raise MarionetteError(f"{where}: the projection flips the image (P00 = {P[0, 0]:g}, P11 = {P[1, 1]:g})")
    K = np.array([[W / 2 * P[0, 0], -W / 2 * P[0, 1], W / 2 * (1.0 - P[0, 2]) - 0.5],
                  [0.0, H / 2 * P[1, 1], H / 2 * (1.0 + P[1, 2]) - 0.5],
                  [0.0, 0.0, 1.0]])
    return Camera(name=name, K=K, R=_BLENDER_TO_CV @ rot, t=_BLENDER_TO_CV @ trans, width=W, height=H)


def to_view_projection(camera: Camera, near: float = 0.01, far: float = 1000.0) -> tuple[np.ndarray, np.ndarray]:
    """The inverse of ``from_view_projection``: (view matrix, projection matrix), 4x4 each, that
    make a viewport of ``camera.width x camera.height`` draw what ``camera`` sees (distortion
    dropped), with OpenGL clipping planes ``near`` and ``far`` (metres)."""
    near = number(near, "near clip", lo=0, lo_open=True)
    far = number(far, "far clip", lo=near, lo_open=True)
    W, H = camera.width, camera.height
    V = np.eye(4)
    V[:3, :3] = _BLENDER_TO_CV @ camera.R
    V[:3, 3] = _BLENDER_TO_CV @ camera.t
    K = camera.K
    P = np.zeros((4, 4))
    P[0, 0], P[0, 1], P[0, 2] = 2 * K[0, 0] / W, -2 * K[0, 1] / W, 1.0 - 2 * (K[0, 2] + 0.5) / W
    P[1, 1], P[1, 2] = 2 * K[1, 1] / H, 2 * (K[1, 2] + 0.5) / H - 1.0
    P[2, 2], P[2, 3] = -(far + near) / (far - near), -2 * far * near / (far - near)
    P[3, 2] = -1.0
    return V, P


# ---------------------------------------------------------------------- project JSON
def save_cameras(path, cameras: list[Camera], up_axis: str = "Z") -> None:
    """Write the project's camera JSON atomically."""
    path = Path(path)
    doc = {"format": CAMERA_JSON_FORMAT, "version": CAMERA_JSON_VERSION, "units": "metres",
           "convention": "opencv: x_cam = R x_world + t, pixel centres at integers",
           "up_axis": up_axis, "cameras": [c.to_dict() for c in cameras]}
    write_json_atomic(path, doc)


def load_cameras_json(path) -> list[Camera]:
    """Read the project's own camera JSON (see ``save_cameras``)."""
    path = Path(path)
    doc = read_json(path, "camera file", expect_object=False)
    if isinstance(doc, dict) and doc.get("format") not in (None, CAMERA_JSON_FORMAT):
        raise MarionetteError(f"{path}: field 'format' is {doc.get('format')!r}, expected {CAMERA_JSON_FORMAT!r}")
    version = doc.get("version", 1) if isinstance(doc, dict) else 1
    version = number(version, f"{path}: field 'version'", lo=1, integer=True)
    if version > CAMERA_JSON_VERSION:
        raise MarionetteError(f"{path}: camera file version {doc.get('version')} is newer than this Marionette "
                              f"understands ({CAMERA_JSON_VERSION})")
    entries = doc.get("cameras") if isinstance(doc, dict) else doc
    if isinstance(doc, dict) and "cameras" not in doc and "K" in doc:
        entries = [doc]  # a single camera object
    if not isinstance(entries, list) or not entries:
        raise MarionetteError(f"{path}: field 'cameras' must be a non-empty list")
    cams = [Camera.from_dict(e, where=f"{path}: cameras[{i}]") for i, e in enumerate(entries)]
    names = [c.name for c in cams]
    if len(set(names)) != len(names):
        raise MarionetteError(f"{path}: duplicate camera names {sorted(n for n in names if names.count(n) > 1)}")
    return cams
