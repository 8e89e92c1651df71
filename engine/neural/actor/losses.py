"""Training losses and image metrics.

All images are float tensors in 0..1, ``[B, C, H, W]``. ``rgb`` is straight
(non-premultiplied) sRGB; the person is compared *masked*, i.e. premultiplied by
the target mask, so background pixels never pull the colours.

A perceptual (VGG-16 feature) loss and LPIPS are available only when their weights
exist on disk (``MARIONETTE_VGG_WEIGHTS`` / ``--perceptual-weights``, a safetensors
file with torchvision's VGG-16 ``features.N.weight``/``bias`` keys and, for LPIPS,
its ``lin0..lin4`` layer weights). Nothing is ever downloaded.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from engine import MarionetteError


def _gaussian_window(size: int, sigma: float, channels: int, device, dtype) -> torch.Tensor:
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def ssim_map(x: torch.Tensor, y: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Per-pixel SSIM (Wang et al. 2004, Gaussian window, data range 1) -> [B, C, H, W]."""
    C = x.shape[1]
    w = _gaussian_window(window, sigma, C, x.device, x.dtype)
    pad = window // 2
    # reflect padding keeps the map the size of the image and unbiased at borders
    xp = F.pad(x, (pad,) * 4, mode="reflect")
    yp = F.pad(y, (pad,) * 4, mode="reflect")
    mu_x = F.conv2d(xp, w, groups=C)
    mu_y = F.conv2d(yp, w, groups=C)
    sxx = F.conv2d(xp * xp, w, groups=C) - mu_x ** 2
    syy = F.conv2d(yp * yp, w, groups=C) - mu_y ** 2
    sxy = F.conv2d(xp * yp, w, groups=C) - mu_x * mu_y
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    return ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (sxx + syy + c2))


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean SSIM per image -> [B]."""
    return ssim_map(x, y).flatten(1).mean(1)


def psnr(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """PSNR in dB per image -> [B]; with ``mask [B,1,H,W]`` only over masked pixels."""
    err = (x - y) ** 2
    if mask is None:
        mse = err.flatten(1).mean(1)
    else:
        m = mask.expand_as(err)
        mse = (err * m).flatten(1).sum(1) / m.flatten(1).sum(1).clamp_min(1.0)
    return -10.0 * torch.log10(mse.clamp_min(1e-10))


def mask_iou(alpha: torch.Tensor, mask: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Intersection over union of ``alpha > t`` and ``mask > t`` per image -> [B] (1 when both empty)."""
    a = (alpha > threshold).flatten(1)
    m = (mask > threshold).flatten(1)
    inter = (a & m).sum(1).float()
    union = (a | m).sum(1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def premultiplied(rgb: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    return rgb * alpha


# ---------------------------------------------------------------------------- perceptual
# torchvision VGG-16 "features": conv widths, "M" = max-pool. Written out here so no torchvision is needed.
_VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
_LPIPS_TAPS = (3, 8, 15, 22, 29)  # indices of the relu outputs LPIPS reads (relu1_2 ... relu5_3)
_LPIPS_CHANNELS = (64, 128, 256, 512, 512)


def find_perceptual_weights(path: str | os.PathLike | None = None) -> Path | None:
    """The VGG weights file to use, or None: an explicit path, else ``$MARIONETTE_VGG_WEIGHTS``."""
    candidate = path or os.environ.get("MARIONETTE_VGG_WEIGHTS")
    if not candidate:
        return None
    p = Path(candidate).expanduser()
    if not p.is_file():
        if path:  # the user asked for it explicitly: say so
            raise MarionetteError(f"{p}: perceptual-loss weights not found (expected a VGG-16 safetensors file)")
        return None
    return p


class VGGPerceptual(nn.Module):
    """VGG-16 feature distance; with LPIPS ``lin`` weights present it is LPIPS (VGG variant)."""

    def __init__(self, weights_path: str | os.PathLike):
        super().__init__()
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            sd = load_file(str(weights_path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise MarionetteError(f"{weights_path}: not a readable safetensors file ({exc})") from None
        layers, cin = [], 3
        for v in _VGG16:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=False)]
                cin = v
        self.features = nn.Sequential(*layers)
        feat = {k[len("features."):]: v for k, v in sd.items() if k.startswith("features.")}
        try:
            self.features.load_state_dict(feat, strict=True)
        except RuntimeError as exc:
            raise MarionetteError(f"{weights_path}: VGG-16 'features.*' tensors missing or misshapen ({exc})") from None
        self.lins = None
        if all(f"lin{i}.model.1.weight" in sd for i in range(5)):
            self.lins = nn.ParameterList(
                [nn.Parameter(sd[f"lin{i}.model.1.weight"].reshape(1, c, 1, 1), requires_grad=False)
                 for i, c in enumerate(_LPIPS_CHANNELS)])
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    @property
    def is_lpips(self) -> bool:
        return self.lins is not None

    def _taps(self, x):
        x = ((x * 2 - 1) - self.shift) / self.scale
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in _LPIPS_TAPS:
                out.append(x)
                if len(out) == len(_LPIPS_TAPS):
                    break
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Distance per image -> [B]."""
        total = 0.0
        for i, (fx, fy) in enumerate(zip(self._taps(x), self._taps(y))):
            fx = fx / (fx.norm(dim=1, keepdim=True) + 1e-10)
            fy = fy / (fy.norm(dim=1, keepdim=True) + 1e-10)
            d = (fx - fy) ** 2
            d = (d * self.lins[i]).sum(1) if self.lins is not None else d.sum(1)
            total = total + d.flatten(1).mean(1)
        return total


# ---------------------------------------------------------------------------- training loss
class ActorLoss(nn.Module):
    """L1 + (1 - SSIM) on the masked person, L1 of alpha vs the mask, optional perceptual term."""

    def __init__(self, w_l1: float = 1.0, w_ssim: float = 0.2, w_alpha: float = 1.0,
                 w_perceptual: float = 0.1, perceptual: VGGPerceptual | None = None):
        super().__init__()
        self.w_l1, self.w_ssim, self.w_alpha, self.w_perceptual = w_l1, w_ssim, w_alpha, w_perceptual
        self.perceptual = perceptual

    def forward(self, rgb, alpha, target_rgb, target_mask, valid=None) -> dict[str, torch.Tensor]:
        """``valid`` [B,1,H,W] (optional): 0 where a view augmentation brought in pixels from outside the
        captured image; the alpha term ignores them (the person may continue there, the mask cannot say)."""
        rgb, alpha = rgb.float(), alpha.float()
        pred = rgb * target_mask
        truth = target_rgb * target_mask
        parts = {
            "l1": (pred - truth).abs().mean(),
            "ssim": 1.0 - ssim(pred, truth).mean(),
            "alpha": _valid_mean((alpha - target_mask).abs(), valid),
        }
        loss = self.w_l1 * parts["l1"] + self.w_ssim * parts["ssim"] + self.w_alpha * parts["alpha"]
        if self.perceptual is not None and self.w_perceptual > 0:
            parts["perceptual"] = self.perceptual(pred, truth).mean()
            loss = loss + self.w_perceptual * parts["perceptual"]
        parts["loss"] = loss
        with torch.no_grad():
            parts["psnr"] = psnr(rgb * alpha, target_rgb * target_mask).mean()
        return parts


def _at_size(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``x`` [B,C,h,w] resampled (area average when shrinking) to ``like``'s height and width."""
    if x.shape[-2:] == like.shape[-2:]:
        return x
    if x.shape[-1] > like.shape[-1]:
        return F.interpolate(x, size=like.shape[-2:], mode="area")
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


def _valid_mean(err: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """Mean of a per-pixel error with pixels from outside the captured image (``valid`` 0) counted as
    zero error; the divisor stays the pixel count, so a fully valid batch gives the plain mean."""
    return err.mean() if valid is None else (err * valid.to(err.dtype)).mean()


def silhouette_loss(latent_alpha: torch.Tensor, target_mask: torch.Tensor,
                    valid: torch.Tensor | None = None) -> torch.Tensor:
    """L1 between the renderer's alpha (the Gaussians alone, before the decoder) and the person mask,
    over the pixels that came from the captured image (``valid``, see ``ActorLoss``)."""
    return _valid_mean((_at_size(latent_alpha, target_mask) - target_mask).abs(), valid)


def latent_colour_loss(latent: torch.Tensor, target_rgb: torch.Tensor, target_mask: torch.Tensor) -> torch.Tensor:
    """L1 between the latent image's first three channels and the person's colours premultiplied by the
    mask, at the latent image's resolution (which may be 1/upsample of the target's).

    In the transmittance renderer a latent pixel is the alpha-weighted sum of the primitives' vectors
    (plus what shows of the background vector), so this asks every primitive to carry the person's
    colour where it sits: colour that lives in 3D and looks the same from a camera never trained on.
    """
    if latent.shape[1] < 3:
        raise MarionetteError(f"latent colour loss needs at least 3 latent channels, got {latent.shape[1]}")
    truth = _at_size(target_rgb * target_mask, latent)
    return (latent[:, :3].float() - truth).abs().mean()


def is_finite(t: torch.Tensor) -> bool:
    return bool(torch.isfinite(t).all())


__all__ = ["ssim", "ssim_map", "psnr", "mask_iou", "ActorLoss", "VGGPerceptual", "find_perceptual_weights",
           "is_finite", "silhouette_loss", "latent_colour_loss"]
