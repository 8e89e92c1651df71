"""The neural decoder: latent image -> straight sRGB RGB + alpha.

A small U-Net whose every block is FiLM-conditioned (feature-wise scale and shift)
on a per-actor code, so one network architecture serves any actor and the actor's
identity lives in a vector rather than in an image encoder.

Shapes: ``latent [B, C_in, H, W]`` + ``code [B, D]`` -> ``rgb [B, 3, sH, sW]``, ``alpha [B, 1, sH, sW]``
with ``s = config.upsample`` (1 or 2). The last input channel must be the renderer's alpha:
it is added to the alpha logit, so training starts from the renderer's silhouette. ``H`` and ``W`` need not be multiples of
``2**levels``: the input is padded and the output cropped.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from engine import MarionetteError


ALPHA_PRIOR_GAIN = 6.0  # logit span given to the renderer's alpha: 0 -> 0.05, 1 -> 0.95


@dataclass
class DecoderConfig:
    in_channels: int = 16 + 1  # latent channels + the renderer's alpha
    base_channels: int = 32
    levels: int = 3  # number of 2x downsamplings
    max_channels: int = 256
    code_dim: int = 32
    upsample: int = 1  # 1: output at the latent resolution; 2: twice that

    @classmethod
    def preset(cls, name: str, **overrides) -> "DecoderConfig":
        """``tiny``/``medium`` for quick CPU runs, ``small`` trains on a CPU; ``large`` is the seed paper's size
        (base 64, 4 levels). The CLI's ``--decoder`` choices list these names too (it must not import torch)."""
        presets = {"small": dict(base_channels=32, levels=3), "tiny": dict(base_channels=8, levels=2),
                   "medium": dict(base_channels=16, levels=3),
                   "large": dict(base_channels=64, levels=4)}
        if name not in presets:
            raise MarionetteError(f"unknown decoder preset {name!r}; expected one of {', '.join(presets)}")
        return cls(**{**presets[name], **overrides})

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str = "decoder config") -> "DecoderConfig":
        if not isinstance(d, dict):
            raise MarionetteError(f"{where}: expected an object, got {type(d).__name__}")
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise MarionetteError(f"{where}: unknown fields {sorted(unknown)}")
        try:
            cfg = cls(**{k: int(v) for k, v in d.items()})
        except (TypeError, ValueError) as exc:
            raise MarionetteError(f"{where}: fields must be integers ({exc})") from None
        cfg.validate(where)
        return cfg

    def validate(self, where: str = "decoder config") -> None:
        if self.upsample not in (1, 2):
            raise MarionetteError(f"{where}: 'upsample' must be 1 or 2, got {self.upsample}")
        for name in ("in_channels", "base_channels", "levels", "max_channels", "code_dim"):
            if getattr(self, name) < (0 if name == "levels" else 1):
                raise MarionetteError(f"{where}: {name!r} must be positive, got {getattr(self, name)}")

    def channels(self, level: int) -> int:
        return min(self.base_channels * 2 ** level, self.max_channels)


def _groups(c: int) -> int:
    for g in (8, 4, 2):
        if c % g == 0:
            return g
    return 1


class FiLMBlock(nn.Module):
    """(conv3x3 -> GroupNorm -> FiLM(scale, shift from the actor code) -> LeakyReLU) x 2, plus a skip.

    The normalisation keeps activations at unit scale through the depth of the U-Net, so
    Adam can use a useful learning rate without the sigmoids at the head saturating (a
    saturated alpha head has zero gradient and never recovers).
    """

    def __init__(self, cin: int, cout: int, code_dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.norm1 = nn.GroupNorm(_groups(cout), cout, affine=False)
        self.norm2 = nn.GroupNorm(_groups(cout), cout, affine=False)
        self.film = nn.Linear(code_dim, 4 * cout)
        # start as identity modulation: scale 1 (stored as 1 + delta), shift 0
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        g1, b1, g2, b2 = self.film(code).chunk(4, dim=1)  # [1 or B, C] each
        h = F.leaky_relu(_film_norm(self.conv1(x), self.norm1, g1, b1), 0.2)
        h = F.leaky_relu(_film_norm(self.conv2(h), self.norm2, g2, b2), 0.2)
        return h + self.skip(x)


def _film_norm(y: torch.Tensor, norm: nn.GroupNorm, gain: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """GroupNorm then FiLM: ``norm(y) * (1 + gain) + shift``.

    With one code for the whole batch (the usual case: one actor) the FiLM scale and shift
    are GroupNorm's own affine parameters, so the whole thing is one pass over the image
    instead of three (the decoder is memory-bound on CPU)."""
    if gain.shape[0] == 1:
        return F.group_norm(y, norm.num_groups, 1 + gain[0], shift[0], norm.eps)
    return norm(y) * (1 + gain[:, :, None, None]) + shift[:, :, None, None]


class Decoder(nn.Module):
    def __init__(self, config: DecoderConfig | None = None):
        super().__init__()
        cfg = config or DecoderConfig()
        cfg.validate()
        self.config = cfg
        self.stem = nn.Conv2d(cfg.in_channels, cfg.channels(0), 3, padding=1)
        self.down = nn.ModuleList()
        for lvl in range(cfg.levels):
            self.down.append(FiLMBlock(cfg.channels(lvl), cfg.channels(lvl + 1), cfg.code_dim))
        self.mid = FiLMBlock(cfg.channels(cfg.levels), cfg.channels(cfg.levels), cfg.code_dim)
        self.up = nn.ModuleList()
        for lvl in reversed(range(cfg.levels)):
            self.up.append(FiLMBlock(cfg.channels(lvl + 1) + cfg.channels(lvl), cfg.channels(lvl), cfg.code_dim))
        self.enc0 = FiLMBlock(cfg.channels(0), cfg.channels(0), cfg.code_dim)
        c0 = cfg.channels(0)
        if cfg.upsample == 2:
            # sub-pixel convolution: learned 2x detail without checkerboard artefacts of transposed convs
            self.upsampler = nn.Sequential(nn.Conv2d(c0, 4 * c0, 3, padding=1), nn.PixelShuffle(2),
                                           nn.LeakyReLU(0.2))
        else:
            self.upsampler = nn.Identity()
        self.head = nn.Conv2d(c0, 4, 3, padding=1)
        # start from grey RGB and the renderer's own silhouette (see forward); the network learns residuals
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, latent: torch.Tensor, code: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        if latent.dim() != 4 or latent.shape[1] != cfg.in_channels:
            raise MarionetteError(f"decoder input: expected [B, {cfg.in_channels}, H, W], got {list(latent.shape)}")
        B, _, H, W = latent.shape
        if code.dim() == 1:
            code = code[None]  # one code for the batch (broadcast by FiLM)
        elif code.shape[0] not in (1, B):
            raise MarionetteError(f"decoder code: expected [D], [1, D] or [{B}, D], got {list(code.shape)}")
        m = 2 ** cfg.levels
        ph, pw = (-H) % m, (-W) % m
        x = F.pad(latent, (0, pw, 0, ph), mode="replicate") if (ph or pw) else latent
        x = x.contiguous(memory_format=torch.channels_last)
        x = self.enc0(F.leaky_relu(self.stem(x), 0.2), code)
        skips = [x]
        for blk in self.down:
            x = blk(F.avg_pool2d(x, 2), code)
            skips.append(x)
        x = self.mid(skips.pop(), code)
        for blk in self.up:
            s = skips.pop()
            x = F.interpolate(x, size=s.shape[-2:], mode="bilinear", align_corners=False)
            x = blk(torch.cat([x, s], dim=1), code)
        x = self.upsampler(x)
        out = self.head(x)[:, :, : H * cfg.upsample, : W * cfg.upsample].float()
        # alpha skip: the last input channel is the renderer's alpha; adding it (as a logit offset) to the
        # alpha head gives a sensible silhouette from step 0 and keeps the sigmoid out of saturation
        prior = latent[:, -1:].float()
        if cfg.upsample != 1:
            prior = F.interpolate(prior, scale_factor=cfg.upsample, mode="bilinear", align_corners=False)
        rgb = torch.sigmoid(out[:, :3])
        alpha = torch.sigmoid(out[:, 3:4] + ALPHA_PRIOR_GAIN * (prior - 0.5))
        return rgb, alpha


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
