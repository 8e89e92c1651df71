"""The Actor: bone primitives + per-bone latent codes + background code + decoder.

``Actor.forward(joints, K, R, t, height, width)`` renders a batch of frames:
joints ``[B, J, 3]`` (metres, the actor's joint set), cameras ``K, R, t`` (OpenCV,
``[B, 3, 3]``, ``[B, 3, 3]``, ``[B, 3]``) at the *output* resolution ``height x width``
-> ``dict(rgb [B,3,H,W] straight sRGB 0..1, alpha [B,1,H,W], latent, latent_alpha, depth)``.

The renderer (``engine.neural.render``) turns the bone Gaussians into a latent image at
``1/upsample`` of the output resolution; the decoder reads that latent image plus
the renderer's alpha and returns RGB and alpha. Everything an actor learns lives in
its parameters: per-bone log-widths and log-densities (``primitives``), per-bone
latent vectors (``codes``), the background latent (``background``), the actor code
that conditions the decoder (``actor_code``) and the decoder weights.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn as nn

from engine import MarionetteError
from engine.neural.actor.decoder import Decoder, DecoderConfig
from engine.body.joint_sets import JointSet, get_joint_set
from engine.neural.render.texture import CHART_KINDS

RENDER_MODES = ("transmittance", "rochette")


@dataclass
class ActorConfig:
    joint_set: str = "BODY_25B"
    latent_dim: int = 16
    mode: str = "transmittance"
    density: float = 30.0
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    # Gaussians per bone: 1 = one Gaussian on the bone (the seed paper's actor, format v1);
    # k > 1 = k Gaussians in the bone's frame, each with its own latent vector
    # (engine.render.primitives.SurfacePrimitives)
    per_bone: int = 1
    # training cameras with a learned colour correction (gain, offset per RGB channel) that
    # absorbs exposure and white-balance differences between real cameras; render never applies it
    colour_cameras: int = 0
    # capture frames with a learned correction of the capture's skeleton (metres per joint), fitted
    # with the actor from the training cameras; training and evaluation on that capture only
    pose_frames: int = 0
    # learned feature maps wrapped around every bone (engine.neural.render.texture): channels added to
    # the latent image (0 = none, the format-v2 actor) and the map's size (along x around)
    texture_channels: int = 0
    texture_size: int = 16
    # "bones": a map per bone; "parts": the trunk's, the head's and each foot's bones share their part's map
    # (engine.neural.render.texture.texture_charts)
    texture_charts: str = "bones"
    # pose-dependent appearance: 1 = every primitive's latent vector also varies linearly with where its
    # bone points in the body's own frame (folds and shading that follow the limb), 0 = fixed codes
    pose_conditioning: int = 0
    # appearance that follows the capture's light: 1 = every primitive's latent vector also varies linearly with
    # how its bone's frame is turned in the world (the light is fixed in the room, so a surface's shading follows
    # its world orientation), 0 = none
    light_conditioning: int = 0

    def validate(self, where: str = "actor config") -> None:
        get_joint_set(self.joint_set)
        if self.mode not in RENDER_MODES:
            raise MarionetteError(f"{where}: 'mode' must be one of {RENDER_MODES}, got {self.mode!r}")
        if self.latent_dim < 1:
            raise MarionetteError(f"{where}: 'latent_dim' must be positive, got {self.latent_dim}")
        if not (0 <= int(self.texture_channels) <= 64 and 2 <= int(self.texture_size) <= 64):
            raise MarionetteError(f"{where}: 'texture_channels' must be 0-64 and 'texture_size' 2-64, got "
                                  f"{self.texture_channels} and {self.texture_size}")
        want = self.latent_dim + self.texture_channels + 1
        if self.decoder.in_channels != want:
            raise MarionetteError(f"{where}: decoder in_channels {self.decoder.in_channels} must be latent_dim + "
                                  f"texture_channels + 1 = {want}")
        if not (0 <= int(self.colour_cameras) <= 4096):
            raise MarionetteError(f"{where}: 'colour_cameras' must be between 0 and 4096, got {self.colour_cameras}")
        if not (0 <= int(self.pose_frames) <= 100000):
            raise MarionetteError(f"{where}: 'pose_frames' must be between 0 and 100000, got {self.pose_frames}")
        if self.texture_charts not in CHART_KINDS:
            raise MarionetteError(f"{where}: 'texture_charts' must be one of {CHART_KINDS}, got {self.texture_charts!r}")
        if self.texture_charts != "bones" and not self.texture_channels:
            raise MarionetteError(f"{where}: 'texture_charts' {self.texture_charts!r} needs bone textures "
                                  "('texture_channels' > 0)")
        if int(self.pose_conditioning) not in (0, 1):
            raise MarionetteError(f"{where}: 'pose_conditioning' must be 0 or 1, got {self.pose_conditioning}")
        if int(self.light_conditioning) not in (0, 1):
            raise MarionetteError(f"{where}: 'light_conditioning' must be 0 or 1, got {self.light_conditioning}")
        if not (1 <= int(self.per_bone) <= 64):
            raise MarionetteError(f"{where}: 'per_bone' must be between 1 and 64, got {self.per_bone}")
        if not (self.density > 0 and math.isfinite(self.density)):
            raise MarionetteError(f"{where}: 'density' must be positive, got {self.density}")
        self.decoder.validate(f"{where}: decoder")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["decoder"] = self.decoder.to_dict()
        return d


def make_config(joint_set: str, latent_dim: int = 16, mode: str = "transmittance", preset: str = "small",
                upsample: int = 1, code_dim: int = 32, density: float = 30.0, per_bone: int = 1,
                colour_cameras: int = 0, pose_frames: int = 0, texture_channels: int = 0,
                texture_size: int = 16, pose_conditioning: int = 0, texture_charts: str = "bones",
                light_conditioning: int = 0) -> ActorConfig:
    dec = DecoderConfig.preset(preset, in_channels=latent_dim + texture_channels + 1, upsample=upsample,
                               code_dim=code_dim)
    cfg = ActorConfig(joint_set=get_joint_set(joint_set).name, latent_dim=latent_dim, mode=mode,
                      density=density, decoder=dec, per_bone=int(per_bone), colour_cameras=int(colour_cameras),
                      pose_frames=int(pose_frames), texture_channels=int(texture_channels),
                      texture_size=int(texture_size), pose_conditioning=int(pose_conditioning),
                      texture_charts=str(texture_charts), light_conditioning=int(light_conditioning))
    cfg.validate()
    return cfg


def scale_intrinsics(K: torch.Tensor, sx, sy=None, ox=0.0, oy=0.0) -> torch.Tensor:
    """K [..., 3, 3] of the image resampled by ``sx`` (``sy``, default ``sx``) and shifted by
    ``ox``, ``oy`` pixels (integer pixel centres): x' = sx (x + 0.5) - 0.5 + ox. The factors and
    offsets may be numbers or tensors broadcasting over K's batch dimensions."""
    sy = sx if sy is None else sy
    K2 = K.clone()
    K2[..., 0, 0] = K[..., 0, 0] * sx
    K2[..., 0, 1] = K[..., 0, 1] * sx
    K2[..., 0, 2] = (K[..., 0, 2] + 0.5) * sx - 0.5 + ox
    K2[..., 1, 1] = K[..., 1, 1] * sy
    K2[..., 1, 2] = (K[..., 1, 2] + 0.5) * sy - 0.5 + oy
    return K2


def latent_intrinsics(K: torch.Tensor, factor: int) -> torch.Tensor:
    """K for an image ``factor`` times smaller (integer pixel centres): x' = (x + 0.5)/f - 0.5."""
    return K if factor == 1 else scale_intrinsics(K, 1.0 / factor)


class Actor(nn.Module):
    def __init__(self, config: ActorConfig, seed: int | None = 0):
        super().__init__()
        from engine.neural.render.primitives import BonePrimitives, SurfacePrimitives

        config.validate()
        self.config = config
        self.joint_set: JointSet = get_joint_set(config.joint_set)
        n = len(self.joint_set.bones) * int(config.per_bone)  # one latent vector per primitive
        gen = torch.Generator().manual_seed(int(seed or 0))
        if config.per_bone == 1:
            self.primitives = BonePrimitives(self.joint_set, density=config.density)
        else:
            self.primitives = SurfacePrimitives(self.joint_set, per_bone=config.per_bone, density=config.density)
        # small random codes break the symmetry between bones; the decoder learns their meaning
        self.codes = nn.Parameter(torch.randn(n, config.latent_dim, generator=gen) * 0.5)
        self.background = nn.Parameter(torch.zeros(config.latent_dim))
        # non-zero so the FiLM layers receive gradient from the first step
        self.actor_code = nn.Parameter(torch.randn(config.decoder.code_dim, generator=gen))
        self.decoder = Decoder(config.decoder)
        if config.colour_cameras:
            # [cameras, 2, 3]: log-gain and offset per RGB channel; zeros = identity
            self.camera_colour = nn.Parameter(torch.zeros(int(config.colour_cameras), 2, 3))
        if config.texture_channels:
            from engine.neural.render.texture import BoneTexture

            self.texture = BoneTexture(self.joint_set, config.texture_channels, config.texture_size, seed=seed or 0,
                                       charts=config.texture_charts)
            # primitive -> its bone: the raycast gives each bone's weight per pixel
            bone_of = torch.arange(len(self.joint_set.bones)).repeat_interleave(int(config.per_bone))
            self.register_buffer("bone_of_primitive", bone_of, persistent=False)
        if config.pose_conditioning:
            # [primitives, latent, 3]: d code / d (bone direction in the body frame); zeros = fixed codes, so
            # training starts from the pose-independent actor and learns only what the poses explain
            self.pose_code_weights = nn.Parameter(torch.zeros(n, config.latent_dim, 3))
        if config.light_conditioning:
            from engine.neural.render.primitives import lateral_bones

            # [primitives, latent, 9]: d code / d (the bone frame's axes in world coordinates); zeros = unlit codes
            self.light_code_weights = nn.Parameter(torch.zeros(n, config.latent_dim, 9))
            self.register_buffer("lateral_bone", torch.as_tensor(lateral_bones(self.joint_set)), persistent=False)
        if config.pose_frames:
            # [capture rows, joints, 3] metres added to the capture's skeleton (refine_joints); zeros = as captured
            self.pose_offsets = nn.Parameter(torch.zeros(int(config.pose_frames), self.joint_set.num_joints, 3))
        self.decoder.to(memory_format=torch.channels_last)
        self.backend: str | None = None  # renderer backend; None = engine default / env var

    @property
    def bones(self) -> list[tuple[int, int]]:
        return self.joint_set.bones

    @property
    def upsample(self) -> int:
        return self.config.decoder.upsample

    def needed_joints(self) -> list[int]:
        return sorted({j for bone in self.bones for j in bone})

    def render_latent(self, joints: torch.Tensor, K: torch.Tensor, R: torch.Tensor, t: torch.Tensor,
                      height: int, width: int, light_mirror: torch.Tensor | None = None):
        from engine.neural.render.raycast import raycast

        B = joints.shape[0]
        g = self.primitives(joints)
        extra = {}
        if self.config.texture_channels:
            extra = dict(groups=self.bone_of_primitive, num_groups=len(self.bones))
        codes = self.codes[None]
        if self.config.pose_conditioning:
            codes = codes + self.pose_codes(joints)
        if self.config.light_conditioning:
            codes = codes + self.light_codes(joints, light_mirror)
        out = raycast(g["means"], g["precisions"], g["densities"].expand(B, -1), codes,
                      self.background[None].expand(B, -1), K, R, t, height, width,
                      mode=self.config.mode, backend=self.backend, **extra)
        latent, alpha, depth = out[:3]
        if self.config.texture_channels:
            tex = self.texture(joints, depth, out[3], K, R, t, backend=self.backend)
            latent = torch.cat([latent, tex], dim=1)
        return latent, alpha, depth

    def pose_codes(self, joints: torch.Tensor) -> torch.Tensor:
        """[B, primitives, latent]: the pose-dependent part of the primitives' latent vectors, linear in the
        unit direction of each primitive's bone in the body's frame (right, forward, up; from hips and
        shoulders, ``primitives.body_axes``) — how the limb is posed relative to the trunk, whatever the
        body's place and heading in the world."""
        from engine.neural.render.primitives import body_axes

        lateral, forward = body_axes(joints, self.joint_set)
        up = torch.linalg.cross(lateral, forward, dim=-1)
        body = torch.stack([lateral, forward, up], dim=1)                          # [B, 3 axes, 3]
        bones = self.primitives.bones
        d = joints[:, bones[:, 1]] - joints[:, bones[:, 0]]                       # [B, nb, 3]
        d = d / d.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        local = torch.einsum("bnj,baj->bna", d, body)                             # [B, nb, 3]
        local = local.repeat_interleave(int(self.config.per_bone), dim=1)        # [B, N, 3]
        return torch.einsum("nca,bna->bnc", self.pose_code_weights.to(local.dtype), local)

    def light_codes(self, joints: torch.Tensor, light_mirror: torch.Tensor | None = None) -> torch.Tensor:
        """[B, primitives, latent]: the light-dependent part of the primitives' latent vectors, linear in the
        world coordinates of their bone's frame (along, side, front; ``primitives.bone_frames``). A light fixed
        in the room lights a surface by its world normal, which for each Gaussian (at a fixed place in its
        bone's frame) is linear in those nine numbers — so a side of a limb can darken as the body turns away
        from the light, which codes in the body's own frame cannot express.

        ``light_mirror`` [B, 3, 3] (training only): the reflection a mirrored view's skeleton went through
        (``augment.mirror_joints``). A mirrored image shows the light mirrored too, so the frames are reflected
        back before the codes read them: the codes see the world orientation the surface had under the real
        light."""
        from engine.neural.render.primitives import bone_geometry

        frames = bone_geometry(joints, self.joint_set, self.primitives.bones, self.lateral_bone)[0]  # [B, nb, 3, 3]
        if light_mirror is not None:
            frames = light_mirror.to(frames.dtype)[:, None] @ frames
        axes = frames.transpose(-1, -2).reshape(*frames.shape[:2], 9)               # along, side, front (world)
        axes = axes.repeat_interleave(int(self.config.per_bone), dim=1)            # [B, N, 9]
        return torch.einsum("nca,bna->bnc", self.light_code_weights.to(axes.dtype), axes)

    def forward(self, joints: torch.Tensor, K: torch.Tensor, R: torch.Tensor, t: torch.Tensor,
                height: int, width: int, light_mirror: torch.Tensor | None = None) -> dict:
        if joints.dim() != 3 or joints.shape[1:] != (self.joint_set.num_joints, 3):
            raise MarionetteError(f"actor ({self.joint_set.name}): joints must be [B, {self.joint_set.num_joints}, 3], "
                                  f"got {list(joints.shape)}")
        s = self.upsample
        lh, lw = -(-int(height) // s), -(-int(width) // s)  # ceil: crop the decoder output afterwards
        latent, lat_alpha, depth = self.render_latent(joints, latent_intrinsics(K, s), R, t, lh, lw, light_mirror)
        x = torch.cat([latent, lat_alpha], dim=1)
        amp = (torch.autocast(device_type="cuda", dtype=torch.bfloat16) if x.device.type == "cuda"
               else nullcontext())
        with amp:
            rgb, alpha = self.decoder(x, self.actor_code)
        rgb = rgb[:, :, :height, :width].float()
        alpha = alpha[:, :, :height, :width].float()
        return dict(rgb=rgb, alpha=alpha, latent=latent, latent_alpha=lat_alpha, depth=depth)

    def colour_correct(self, rgb: torch.Tensor, camera_index: torch.Tensor) -> torch.Tensor:
        """Training only: the rendered rgb [B,3,H,W] as training camera ``camera_index`` [B] saw it."""
        if not self.config.colour_cameras:
            return rgb
        cc = self.camera_colour[camera_index]                      # [B, 2, 3]
        return rgb * cc[:, 0, :, None, None].exp() + cc[:, 1, :, None, None]

    def refine_joints(self, joints: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """joints [B, J, 3] of capture rows ``rows`` [B] with the learned skeleton corrections added
        (unchanged for an actor trained without them). Only meaningful for the capture it was trained on."""
        if not self.config.pose_frames:
            return joints
        return joints + self.pose_offsets[rows].to(joints.dtype)

    def person_height_px(self, joints: torch.Tensor, K: torch.Tensor, R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """[B] height in pixels of the projected skeleton's bounding box (the person's on-screen size)."""
        return person_height_px(joints[:, self.needed_joints()], K, R, t)

    def forward_scaled(self, joints: torch.Tensor, K: torch.Tensor, R: torch.Tensor, t: torch.Tensor,
                       height: int, width: int, max_upscale: float = 8.0) -> dict:
        """``forward`` at the pixel scale the actor was trained at, upsampled to ``height x width``.

        The decoder learned appearance at one on-screen size of the person (``native_person_px``,
        recorded by training); asked for a person several times larger it sees blobs bigger than
        any it was trained on. So the frame is rendered where the person is about that size and
        upsampled (bilinear; depth nearest). Also much cheaper for large frames. Actors without
        the record (older ones) render directly.
        """
        native = getattr(self, "native_person_px", None)
        if not native:
            return self(joints, K, R, t, height, width)
        h = float(self.person_height_px(joints, K, R, t).max())
        f = min(1.0, max(1.0 / max_upscale, 1.15 * float(native) / max(h, 1.0)))
        if f > 0.9:
            return self.forward_supersampled(joints, K, R, t, height, width)
        lh, lw = max(8, int(round(height * f))), max(8, int(round(width * f)))
        fy, fx = lh / height, lw / width
        out = self(joints, scale_intrinsics(K, fx, fy), R, t, lh, lw)
        up = lambda x: torch.nn.functional.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)
        near = lambda x: torch.nn.functional.interpolate(x, size=(height, width), mode="nearest")
        return dict(rgb=up(out["rgb"]).clamp(0, 1), alpha=up(out["alpha"]).clamp(0, 1), latent=out["latent"],
                    latent_alpha=near(out["latent_alpha"]), depth=near(out["depth"]), scale=f)

    def forward_supersampled(self, joints: torch.Tensor, K: torch.Tensor, R: torch.Tensor, t: torch.Tensor,
                             height: int, width: int, max_factor: int = 4) -> dict:
        """``forward``, rendered ``f`` times larger and area-averaged back where the person is smaller on
        screen than any size the actor learned from: below 0.8 x the 5th percentile of the person's
        heights in its training views (``person_range_px``, recorded by training), f = ceil(that / on-screen
        height), at most ``max_factor``.

        An actor trained on crops of views at a finer scale (``marionette train --crop``) learned the
        person at that scale; rendered at a coarser one directly, its decoder would see shapes smaller
        than any it was trained on. Colours are averaged premultiplied (edges blend with what is behind
        them, as a camera's pixels do). Otherwise (and for actors without the record) this is ``forward``:
        an actor trained on whole views has seen the person as small as its farthest camera shows them.
        """
        spread = getattr(self, "person_range_px", None)
        if not spread:
            return self(joints, K, R, t, height, width)
        smallest = float(spread[0])
        h = self.person_height_px(joints, K, R, t).clamp_min(1.0)                  # [B], per view
        factors = [1 if float(x) >= 0.8 * smallest else int(min(max_factor, math.ceil(smallest / float(x))))
                   for x in h]
        if max(factors) == 1:
            return self(joints, K, R, t, height, width)
        parts = {}
        for f in sorted(set(factors)):  # views that need the same factor render together
            idx = [i for i, g in enumerate(factors) if g == f]
            sel = lambda x: x[idx]
            if f == 1:
                parts[f] = (idx, self(sel(joints), sel(K), sel(R), sel(t), height, width))
                continue
            out = self(sel(joints), scale_intrinsics(sel(K), f), sel(R), sel(t), height * f, width * f)
            pool = lambda x: torch.nn.functional.avg_pool2d(x, f)
            alpha = pool(out["alpha"])
            rgb = torch.where(alpha > 1e-4, pool(out["rgb"] * out["alpha"]) / alpha.clamp_min(1e-4), pool(out["rgb"]))
            parts[f] = (idx, dict(rgb=rgb.clamp(0, 1), alpha=alpha.clamp(0, 1), latent=pool(out["latent"]),
                                  latent_alpha=pool(out["latent_alpha"]), depth=out["depth"][..., f // 2::f, f // 2::f]))
        order = torch.as_tensor([i for idx, _ in parts.values() for i in idx]).argsort()
        res = {k: torch.cat([o[k] for _, o in parts.values()])[order] for k in ("rgb", "alpha", "latent",
                                                                                 "latent_alpha", "depth")}
        res["scale"] = [float(f) for f in factors]
        return res

    # ------------------------------------------------------------------ convenience
    @torch.no_grad()
    def render_frames(self, joints: np.ndarray, cameras, height: int | None = None, width: int | None = None,
                      batch: int = 4, device=None, progress=None) -> tuple[np.ndarray, np.ndarray]:
        """Render numpy joints [T, J, 3] from one ``Camera`` or a list (one per frame).

        Returns rgb [T, H, W, 3] and alpha [T, H, W] float32. Raises MarionetteError for
        NaN joints the actor needs.
        """
        from engine.geometry.camera import Camera

        joints = np.asarray(joints, dtype=np.float32)
        check_joints(joints, self.joint_set, self.needed_joints())
        cams = [cameras] * len(joints) if isinstance(cameras, Camera) else list(cameras)
        if len(cams) != len(joints):
            raise MarionetteError(f"render: {len(cams)} cameras for {len(joints)} frames")
        device = device or next(self.parameters()).device
        out_rgb, out_alpha = [], []
        for start in range(0, len(joints), batch):
            cs = cams[start:start + batch]
            H = height or cs[0].height
            W = width or cs[0].width
            cs = [c if (c.width, c.height) == (W, H) else c.scaled(W / c.width) for c in cs]
            K = torch.as_tensor(np.stack([c.K for c in cs]), dtype=torch.float32, device=device)
            R = torch.as_tensor(np.stack([c.R for c in cs]), dtype=torch.float32, device=device)
            t = torch.as_tensor(np.stack([c.t for c in cs]), dtype=torch.float32, device=device)
            J = torch.as_tensor(np.nan_to_num(joints[start:start + batch]), device=device)
            out = self.forward_scaled(J, K, R, t, H, W)
            out_rgb.append(out["rgb"].permute(0, 2, 3, 1).cpu().numpy())
            out_alpha.append(out["alpha"][:, 0].cpu().numpy())
            if progress is not None:
                progress(len(cs))
        return np.concatenate(out_rgb), np.concatenate(out_alpha)


def person_height_px(joints: torch.Tensor, K: torch.Tensor, R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """[B] pixel height of the bounding box of joints [B, J, 3] projected by K, R, t (points behind
    the camera ignored; 0 when none is in front)."""
    Xc = joints @ R.transpose(1, 2) + t[:, None]
    z = Xc[..., 2]
    front = z > 1e-3
    v = K[:, None, 1, 1] * Xc[..., 1] / z.clamp_min(1e-3) + K[:, None, 1, 2]
    big = torch.finfo(v.dtype).max
    hi = torch.where(front, v, torch.full_like(v, -big)).max(1).values
    lo = torch.where(front, v, torch.full_like(v, big)).min(1).values
    return torch.where(front.any(1), hi - lo, torch.zeros_like(hi))


def check_joints(joints: np.ndarray, joint_set: JointSet, needed: list[int], where: str = "skeleton") -> None:
    """Raise a clear error when a joint the actor's bones use is NaN/inf in some frame."""
    bad = ~np.isfinite(joints[:, needed]).all(-1)  # [T, len(needed)]
    if bad.any():
        t, k = np.argwhere(bad)[0]
        names = sorted({joint_set.names[needed[j]] for j in np.nonzero(bad.any(0))[0]})
        raise MarionetteError(
            f"{where}: joint {joint_set.names[needed[k]]!r} is missing (NaN) in frame {int(t)} "
            f"({int(bad.any(1).sum())} frame(s) affected; joints: {', '.join(names)}); every bone the actor "
            "renders needs both its joints — fill gaps (e.g. interpolate) or choose frames without them")
