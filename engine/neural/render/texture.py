"""Bone textures: learned feature maps wrapped around every bone (a neural texture).

The Gaussians give each bone a handful of latent vectors; a face, a tattoo or the seam of
a pair of shorts needs far more. So each bone also carries a small feature map in its own
cylindrical coordinates — along the bone (its length, from a quarter bone beyond the
parent joint to a quarter beyond the child) x around it (the angle in the bone's frame,
``primitives.bone_frames``: 0 at the body's side axis, wrapping round) — and the renderer's
latent image gets, per pixel, the features of the surface point the pixel sees:

    x      = camera centre + depth * ray direction  (the renderer's expected depth)
    f(px)  = sum over bones b of  w_b(px) * T_b(along_b(x), around_b(x))

with ``w_b`` the renderer's compositing weight of bone ``b``'s Gaussians at the pixel (they
sum to the pixel's alpha, so ``f`` is premultiplied like the latent image) and ``T_b`` read
bilinearly, wrapping round the bone. Features live on the body, so what the front of a
thigh looks like is learned once and seen from every camera in every pose.

With ``charts="parts"`` the bones of one rigid body part share one map in the part's own
cylinder (``texture_charts``): the trunk's bones (for BODY_25B six: the collars, the neck-to-hip
sides, across the hips and the shoulders) read one map round the axis from the hips' centre to the
shoulders' centre, the head's bones one round the neck-to-head-top axis, each foot's bones one along the
foot; limbs keep their own. Where several bones of the trunk overlap, their weights then add up on
one consistent picture (a stripe across the chest is one row of one map) instead of blending maps
laid out along differently slanted bones.

Texture coordinates are taken from the rendered depth without gradient (the texture
learns what is where; the Gaussians learn where the surface is, through ``w_b``). The
lookup reads only the (bone, pixel) pairs with weight: on the compiled kernels
(``marionette::bone_texture_fwd``, CPU and CUDA, chosen like the raycast's backend) or in
PyTorch by indexing (``BoneTexture.forward_reference``); ``BoneTexture.forward_dense``, the
same with ``grid_sample`` for every pair, is the reference both are tested against.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine import MarionetteError
from engine.neural.render.primitives import body_axes, bone_frames, bone_geometry, lateral_bones
from engine.neural.render.rays import camera_origins, pixel_directions

ALONG_EXTENT = 0.75  # the map spans +-0.75 bone lengths from the midpoint: a quarter bone past each joint
MIN_WEIGHT = 1e-4    # (bone, pixel) pairs with less compositing weight are not looked up
CHART_KINDS = ("bones", "parts")

# body-part charts: which bones share a part's map (a test on the canonical names of the bone's two joints) and
# the map's axis, each end the mean of the first alternative (a tuple of canonical joint names) the joint set has
_NECK = {"neck", "upper_neck", "neck_base", "thorax"}


def _torso(n: str) -> bool:
    return (n in _NECK or n == "pelvis" or n.startswith("spine")
            or any(n.endswith(k) for k in ("_hip", "_shoulder", "_collar")))


def _head(n: str) -> bool:
    return n in ("nose", "head", "head_top") or "_eye" in n or n.endswith("_ear") or n.startswith("mouth")


def _foot(side: str):
    return lambda n: n.startswith(side + "_") and any(k in n for k in ("ankle", "toe", "heel", "foot"))


def _both(joint_test):
    return lambda a, b: joint_test(a) and joint_test(b)


_PART_CHARTS = (
    ("trunk", _both(_torso),
     ((("left_hip", "right_hip"), ("smpl_left_hip", "smpl_right_hip")), (("left_shoulder", "right_shoulder"),))),
    ("head", lambda a, b: (_head(a) or a in _NECK) and _head(b),
     ((("upper_neck",), ("neck_base",), ("neck",)), (("head_top",), ("head",)))),
    ("left_foot", _both(_foot("left")),
     ((("left_ankle",),), (("left_big_toe",), ("left_foot_index",), ("left_foot",)))),
    ("right_foot", _both(_foot("right")),
     ((("right_ankle",),), (("right_big_toe",), ("right_foot_index",), ("right_foot",)))),
)


def texture_charts(joint_set, kind: str = "bones") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                                            list[str]]:
    """How a joint set's bones map onto texture charts.

    Returns (chart of each bone [N] int64, the chart axis' start and end joints [M, 2] int64 — each end
    the mean of two joint indices, repeated for a single joint —, lateral flags [M] bool (charts whose
    frame takes the body's forward axis as reference, ``lateral_bones``), chart names [M]).
    ``kind="bones"``: one chart per bone, the bone itself (M = N). ``kind="parts"``: the bones between torso
    joints (hips, shoulders, collars, pelvis, spine, neck), between head joints (or from the neck to one), and
    between one foot's joints share their part's chart, when the joint set has the joints of the part's axis
    and the part has two bones or more; every other bone keeps its own.
    """
    if kind not in CHART_KINDS:
        raise MarionetteError(f"texture charts must be one of {CHART_KINDS}, got {kind!r}")
    canon = list(joint_set.canonical)
    bones = [tuple(b) for b in joint_set.bones]
    lateral = lateral_bones(joint_set)
    chart_of = np.full(len(bones), -1, dtype=np.int64)
    starts, ends, flags, names = [], [], [], []
    if kind == "parts":
        for name, member, axis in _PART_CHARTS:
            ends_idx = []
            for alternatives in axis:
                found = next((alt for alt in alternatives if all(j in canon for j in alt)), None)
                if found is None:
                    break
                idx = [canon.index(j) for j in found]
                ends_idx.append((idx * 2)[:2])
            members = [i for i, (a, b) in enumerate(bones) if chart_of[i] < 0 and member(canon[a], canon[b])]
            if len(ends_idx) < 2 or len(members) < 2:
                continue  # the joint set lacks this part's axis, or the part is a single bone anyway
            chart_of[members] = len(names)
            starts.append(ends_idx[0])
            ends.append(ends_idx[1])
            flags.append(False)
            names.append(name)
    for i, (a, b) in enumerate(bones):
        if chart_of[i] < 0:
            chart_of[i] = len(names)
            starts.append([a, a])
            ends.append([b, b])
            flags.append(bool(lateral[i]))
            names.append(joint_set.bone_names[i])
    return (chart_of, np.asarray(starts, dtype=np.int64).reshape(-1, 2), np.asarray(ends, dtype=np.int64).reshape(-1, 2),
            np.asarray(flags, dtype=bool), names)


def surface_points(depth: torch.Tensor, K: torch.Tensor, R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """World points [B, 3, H, W] at the rendered depth [B, 1, H, W] (metres along unit rays)."""
    B, _, H, W = depth.shape
    dirs = pixel_directions(K.to(depth.dtype), R.to(depth.dtype), H, W)          # [B, HW, 3]
    origins = camera_origins(R, t).to(depth.dtype)                              # [B, 3]
    pts = origins[:, None] + dirs * depth.reshape(B, H * W, 1)
    return pts.transpose(1, 2).reshape(B, 3, H, W)


def texture_coordinates(points: torch.Tensor, frames: torch.Tensor, mid: torch.Tensor, length: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per bone and pixel: (along in [-1, 1] of the map's span, around in [-1, 1) = angle / pi).

    points [B, 3, H, W]; frames [B, N, 3, 3] (columns along, side, front); mid [B, N, 3]; length [B, N]
    -> two tensors [B, N, H, W].
    """
    rel = points[:, None] - mid[..., None, None]                                 # [B, N, 3, H, W]
    local = torch.einsum("bnji,bnjhw->bnihw", frames, rel)                        # frame^T rel
    along = (local[:, :, 0] / (ALONG_EXTENT * length[..., None, None])).clamp(-1.0, 1.0)
    around = torch.atan2(local[:, :, 2], local[:, :, 1]) / math.pi
    return along, around


def pair_coordinates(points: torch.Tensor, frames: torch.Tensor, mid: torch.Tensor, length: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """``texture_coordinates`` for M (bone, point) pairs: points [M, 3], the bones' frames [M, 3, 3],
    midpoints [M, 3] and lengths [M] -> (along, around), [M] each."""
    local = torch.einsum("mji,mj->mi", frames, points - mid)                      # frame^T (p - mid)
    along = (local[:, 0] / (ALONG_EXTENT * length)).clamp(-1.0, 1.0)
    return along, torch.atan2(local[:, 2], local[:, 1]) / math.pi


def _use_kernel(device: torch.device, backend: str | None) -> bool:
    from engine.neural.render import kernels
    from engine.neural.render.raycast import resolve_backend

    name = resolve_backend(backend)
    if name == "reference":
        return False
    if name == "kernel" and not kernels.texture_available(device):
        raise MarionetteError(f"renderer backend 'kernel' requested but the installed marionette_kernels has no "
                              f"bone-texture kernel for {device}; rebuild it: pip install --no-build-isolation ./cuda_ext")
    return kernels.texture_available(device)


class BoneTexture(nn.Module):
    """``channels`` features on a ``size`` (along) x ``size`` (around) map per bone of a joint set.

    forward(joints [B,J,3], depth [B,1,H,W], bone_weights [B,N,H,W], K, R, t) -> features [B,C,H,W].
    """

    def __init__(self, joint_set, channels: int = 8, size: int = 16, seed: int = 0, charts: str = "bones"):
        super().__init__()
        if channels < 1 or not (2 <= size <= 256):
            raise MarionetteError(f"BoneTexture({joint_set.name}): channels must be >= 1 and size 2-256, "
                                  f"got {channels}, {size}")
        self.joint_set = joint_set
        self.charts = charts
        self.register_buffer("bones", torch.as_tensor(np.asarray(joint_set.bones, dtype=np.int64).reshape(-1, 2)),
                             persistent=False)
        self.register_buffer("use_forward", torch.as_tensor(lateral_bones(joint_set)), persistent=False)
        chart_of, starts, ends, flags, self.chart_names = texture_charts(joint_set, charts)
        self.register_buffer("chart_of_bone", torch.as_tensor(chart_of), persistent=False)
        self.register_buffer("chart_starts", torch.as_tensor(starts), persistent=False)
        self.register_buffer("chart_ends", torch.as_tensor(ends), persistent=False)
        self.register_buffer("chart_use_forward", torch.as_tensor(flags), persistent=False)
        gen = torch.Generator().manual_seed(int(seed) + 1)
        # [charts, C, along, around]; small random values so bones and sides start distinguishable
        self.maps = nn.Parameter(torch.randn(len(self.chart_names), channels, size, size, generator=gen) * 0.1)

    def geometry(self, joints: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per bone: the frame [B, N, 3, 3], midpoint [B, N, 3] and length [B, N] of its chart's axis
        (``bone_geometry`` of the bone itself with one chart per bone)."""
        if self.charts == "bones":
            return bone_geometry(joints, self.joint_set, self.bones, self.use_forward)
        lateral, forward = body_axes(joints, self.joint_set)
        start = joints[:, self.chart_starts].mean(dim=2)                              # [B, M, 3]
        end = joints[:, self.chart_ends].mean(dim=2)
        M = start.shape[1]
        axis = torch.arange(M, device=joints.device)
        frames = bone_frames(torch.cat([start, end], dim=1), torch.stack([axis, axis + M], dim=1), lateral, forward,
                             self.chart_use_forward)
        mid, length = 0.5 * (start + end), (end - start).norm(dim=-1).clamp_min(1e-4)
        c = self.chart_of_bone
        return frames[:, c], mid[:, c], length[:, c]

    def bone_maps(self) -> torch.Tensor:
        """[N, C, along, around]: each bone's map (its chart's; shared maps get every bone's gradient)."""
        return self.maps if self.charts == "bones" else self.maps[self.chart_of_bone]

    @property
    def channels(self) -> int:
        return int(self.maps.shape[1])

    def _check(self, bone_weights: torch.Tensor) -> tuple[int, int, int, int]:
        B, N, H, W = bone_weights.shape
        if N != self.bones.shape[0]:
            raise MarionetteError(f"BoneTexture: {N} bone weight maps for {self.bones.shape[0]} bones")
        return B, N, H, W

    def forward(self, joints: torch.Tensor, depth: torch.Tensor, bone_weights: torch.Tensor,
                K: torch.Tensor, R: torch.Tensor, t: torch.Tensor, backend: str | None = None) -> torch.Tensor:
        """Features [B, C, H, W]: per pixel the bones' maps read where the pixel's surface point lies,
        weighted by the bones' compositing weights.

        backend: as the renderer's (``engine.neural.render.raycast.raycast``): "auto" takes the compiled
        kernels when the installed build has them for this device, else ``forward_reference``.
        """
        self._check(bone_weights)
        if not _use_kernel(bone_weights.device, backend):
            return self.forward_reference(joints, depth, bone_weights, K, R, t)
        from engine.neural.render import kernels

        with torch.no_grad():
            frames, mid, length = self.geometry(joints.detach())
        return kernels.bone_texture_kernel(self.bone_maps(), bone_weights, depth.detach(), K, R, t, frames, mid, length,
                                           MIN_WEIGHT, ALONG_EXTENT)

    def forward_reference(self, joints: torch.Tensor, depth: torch.Tensor, bone_weights: torch.Tensor,
                          K: torch.Tensor, R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``forward`` in PyTorch (any device).

        Only (bone, pixel) pairs with a weight above ``MIN_WEIGHT`` are looked up: a pixel sees two or
        three bones and most pixels none, so this reads a few per cent of what a dense lookup of every
        bone at every pixel would (``forward_dense``, the reference it is tested against) and its backward
        pass scatters as little. Pairs below the threshold would add at most ``MIN_WEIGHT`` times a
        feature each.
        """
        B, N, H, W = self._check(bone_weights)
        C, A, S = self.maps.shape[1:]
        with torch.no_grad():
            b, n, y, x = (bone_weights.detach() > MIN_WEIGHT).nonzero(as_tuple=True)
            frames, mid, length = self.geometry(joints.detach())
            pts = surface_points(depth.detach(), K, R, t)[b, :, y, x]                 # [M, 3]
            along, around = pair_coordinates(pts, frames[b, n], mid[b, n], length[b, n])
            # texel coordinates as grid_sample(align_corners=False) reads them: border rows along the
            # bone, columns wrapping round it
            row = (((along + 1.0) * A - 1.0) / 2.0).clamp(0.0, A - 1.0)
            col = ((around + 1.0) * S - 1.0) / 2.0
            r0, c0 = row.floor(), col.floor()
            fr, fc = (row - r0).to(bone_weights.dtype), (col - c0).to(bone_weights.dtype)
            r0 = r0.long()
            r1 = (r0 + 1).clamp_max(A - 1)
            c0 = c0.long()
            c1, c0 = (c0 + 1) % S, c0 % S
        texels = self.bone_maps().to(bone_weights.dtype).permute(0, 2, 3, 1)         # [N, A, S, C]
        feats = ((texels[n, r0, c0] * ((1 - fr) * (1 - fc))[:, None] + texels[n, r0, c1] * ((1 - fr) * fc)[:, None])
                 + (texels[n, r1, c0] * (fr * (1 - fc))[:, None] + texels[n, r1, c1] * (fr * fc)[:, None]))
        weighted = feats * bone_weights[b, n, y, x][:, None]                         # [M, C]
        out = bone_weights.new_zeros(B * H * W, C).index_add(0, (b * H + y) * W + x, weighted)
        return out.reshape(B, H, W, C).permute(0, 3, 1, 2)

    def forward_dense(self, joints: torch.Tensor, depth: torch.Tensor, bone_weights: torch.Tensor,
                      K: torch.Tensor, R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``forward`` computed for every bone at every pixel with ``grid_sample``: the reference."""
        B, N, H, W = self._check(bone_weights)
        with torch.no_grad():
            frames, mid, length = self.geometry(joints.detach())
            pts = surface_points(depth.detach(), K, R, t)
            along, around = texture_coordinates(pts, frames, mid, length)
            # wrap round the bone: pad one column each side and move the x coordinate to match
            # (align_corners=False: x in [-1, 1] covers columns -0.5 .. S-0.5)
            S = self.maps.shape[-1]
            col = ((around + 1.0) * S - 1.0) / 2.0 + 1.0
            gx = (2.0 * col + 1.0) / (S + 2) - 1.0
            grid = torch.stack([gx, along], dim=-1).reshape(B * N, H, W, 2)
        bone_maps = self.bone_maps()
        maps = torch.cat([bone_maps[..., -1:], bone_maps, bone_maps[..., :1]], dim=-1).to(bone_weights.dtype)
        maps = maps[None].expand(B, -1, -1, -1, -1).reshape(B * N, self.channels, maps.shape[-2], S + 2)
        feats = F.grid_sample(maps, grid.to(maps.dtype), mode="bilinear", padding_mode="border",
                              align_corners=False)                                # [B*N, C, H, W]
        feats = feats.reshape(B, N, self.channels, H, W)
        return torch.einsum("bnchw,bnhw->bchw", feats, bone_weights)

    def extra_repr(self) -> str:
        return (f"joint_set={self.joint_set.name}, channels={self.channels}, size={self.maps.shape[-1]}, "
                f"charts={self.charts} ({self.maps.shape[0]})")
