"""Optional silhouette term for SMPL fitting: a soft rasteriser in plain PyTorch.

The posed mesh's vertices are projected into each camera and splatted as isotropic Gaussians
(``sigma_px`` pixels) on a low-resolution grid; the soft silhouette is
``S = 1 - exp(-k * sum_v G_v)``, a differentiable stand-in for the mesh's coverage (SMPL's
vertices are ~1-2 cm apart, dense enough at the low resolutions used here). The term is the mean
squared difference between ``S`` and the capture's masks, on a subset of frames and cameras.
It refines a joint-based fit; it is off by default (``marionette fit-smpl --silhouettes``).
"""

from __future__ import annotations

import numpy as np

from engine import MarionetteError
from engine.geometry.camera import Camera, project_points_torch


def soft_silhouette(pixels, height: int, width: int, sigma_px: float = 1.0, gain: float = 2.0, valid=None):
    """Soft silhouette [..., H, W] of projected points ``pixels`` [..., N, 2] (integer pixel centres)."""
    import torch

    ys = torch.arange(height, dtype=pixels.dtype, device=pixels.device)
    xs = torch.arange(width, dtype=pixels.dtype, device=pixels.device)
    # separable Gaussians: exp(-(dx^2+dy^2)/2s^2) = gx * gy
    gx = torch.exp(-((xs - pixels[..., 0:1]) ** 2) / (2 * sigma_px ** 2))  # [..., N, W]
    gy = torch.exp(-((ys - pixels[..., 1:2]) ** 2) / (2 * sigma_px ** 2))  # [..., N, H]
    if valid is not None:
        gy = gy * valid[..., None].to(gy.dtype)
    density = torch.einsum("...nh,...nw->...hw", gy, gx)
    return 1 - torch.exp(-gain * density)


class SilhouetteTerm:
    """Callable for ``FitOptions.extra_terms``: ``term(state) -> scalar``.

    cameras: list of Camera (full resolution); masks: float array [T_sel, C, H, W] at the
    working resolution (see ``from_capture``); frame_rows: the sequence rows the masks belong to.
    """

    name = "silhouette"

    def __init__(self, cameras: list[Camera], masks: np.ndarray, frame_rows, weight: float = 10.0,
                 sigma_px: float = 1.0, vertex_stride: int = 2, device="cpu"):
        import torch

        masks = np.asarray(masks, dtype=np.float32)
        if masks.ndim != 4 or masks.shape[1] != len(cameras):
            raise MarionetteError(f"silhouettes: masks must be [frames, {len(cameras)} cameras, H, W], "
                                  f"got {list(masks.shape)}")
        self.h, self.w = masks.shape[2:]
        self.cams = []
        for cam in cameras:
            c = cam.scaled(self.w / cam.width)
            self.cams.append((torch.tensor(c.K, dtype=torch.float32, device=device),
                              torch.tensor(c.R, dtype=torch.float32, device=device),
                              torch.tensor(np.asarray(c.t).reshape(3), dtype=torch.float32, device=device),
                              torch.tensor(np.asarray(c.dist), dtype=torch.float32, device=device)
                              if c.has_distortion else None))
        self.masks = torch.tensor(masks, device=device)
        self.rows = torch.as_tensor(np.asarray(frame_rows, dtype=np.int64), device=device)
        self.weight = weight
        self.sigma = sigma_px
        self.stride = max(1, int(vertex_stride))

    @classmethod
    def from_capture(cls, capture, num_frames: int, max_frames: int = 8, max_cameras: int = 4,
                     resolution: int = 64, **kwargs) -> "SilhouetteTerm":
        """Masks of up to ``max_frames`` evenly spread frames and ``max_cameras`` cameras of a
        ``engine.io.capture_folder.Capture`` whose frames are the rows of the skeleton being fitted."""
        if len(capture.frames) != num_frames:
            raise MarionetteError(f"{capture.root}: capture has {len(capture.frames)} frames but the skeleton has "
                                  f"{num_frames}; silhouettes need the capture the skeleton came from")
        if not capture.has_masks:
            raise MarionetteError(f"{capture.root}: capture has no masks/ folder")
        rows = np.unique(np.linspace(0, num_frames - 1, min(max_frames, num_frames)).round().astype(int))
        cams = capture.cameras[:max_cameras]
        from PIL import Image

        masks = []
        for r in rows:
            per_cam = []
            for cam in cams:
                m = capture.load_mask(cam.name, capture.frames[r])
                h = max(1, round(resolution * cam.height / cam.width))
                im = Image.fromarray((m * 255).astype(np.uint8)).resize((resolution, h), Image.BILINEAR)
                per_cam.append(np.asarray(im, dtype=np.float32) / 255.0)
            masks.append(per_cam)
        return cls(cams, np.asarray(masks), rows, **kwargs)

    def render(self, vertices):
        """vertices [F, V, 3] (world) -> soft silhouettes [F, C, h, w]."""
        import torch

        v = vertices[:, :: self.stride].float()
        out = []
        for K, R, t, dist in self.cams:
            pix, z = project_points_torch(v, K, R, t, dist)
            out.append(soft_silhouette(pix, self.h, self.w, self.sigma, valid=z > 1e-3))
        return torch.stack(out, 1)

    def __call__(self, state):
        smpl, pose, trans, betas = state["smpl"], state["pose"], state["trans"], state["betas"]
        rows = self.rows
        out = smpl(betas, pose[rows], trans[rows], full_mesh=True)
        sil = self.render(out["vertices"])
        # per-frame scale like the other terms (their sum over frames is divided by T)
        return self.weight * ((sil - self.masks) ** 2).mean((2, 3)).sum().to(pose.dtype) * 100 / state["T"]
