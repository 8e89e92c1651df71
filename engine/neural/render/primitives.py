"""Bone Gaussians: one anisotropic Gaussian per bone, from joint positions.

Contract (``/work/notes/renderer_spec.md``, layer 1): for the bone a->b with length
``L`` and width ``w`` (metres, 1 sigma across the bone) the Gaussian has mean
``(j_a + j_b)/2`` and covariance ``R diag(sigma_L^2, w^2, w^2) R^T`` with the long
axis along the bone and ``sigma_L = max(L/2, w)``.  Its precision in closed form is

    P = I / w^2 + (1/sigma_L^2 - 1/w^2) u u^T,        u = (j_b - j_a) / L

and since ``u u^T = v v^T / L^2`` with ``v = j_b - j_a`` we never divide by ``L``
itself: the coefficient of ``v v^T`` is ``(4/L^2 - 1/w^2)/L^2`` when ``L > 2w`` and
exactly zero otherwise, so a zero-length bone is an isotropic Gaussian of radius
``w`` with finite values *and* finite gradients.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from engine import MarionetteError

DEFAULT_DENSITY = 30.0  # per-metre peak density of a bone (spec default)


def bone_gaussians(joints: torch.Tensor, bones, widths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Means and precisions of the bone Gaussians.

    joints  [B, J, 3]   world positions (metres)
    bones   [N, 2]      (parent, child) joint indices (``JointSet.bones``); list or LongTensor
    widths  [N] or [B, N]  1-sigma widths across each bone, metres (> 0)
    returns means [B, N, 3], precisions [B, N, 3, 3] (symmetric positive definite)
    """
    if joints.dim() != 3 or joints.shape[-1] != 3:
        raise MarionetteError(f"bone_gaussians: joints must have shape [B, J, 3], got {tuple(joints.shape)}")
    bones = torch.as_tensor(bones, dtype=torch.long, device=joints.device).reshape(-1, 2)
    if bones.numel() and (int(bones.min()) < 0 or int(bones.max()) >= joints.shape[1]):
        raise MarionetteError(f"bone_gaussians: bone indices must lie in [0, {joints.shape[1]}), "
                              f"got range [{int(bones.min())}, {int(bones.max())}]")
    widths = widths.to(dtype=joints.dtype, device=joints.device)
    n = bones.shape[0]
    if widths.shape[-1] != n or widths.dim() not in (1, 2):
        raise MarionetteError(f"bone_gaussians: widths must have shape [{n}] or [B, {n}], got {tuple(widths.shape)}")
    ja = joints[:, bones[:, 0]]
    jb = joints[:, bones[:, 1]]
    means = 0.5 * (ja + jb)
    v = jb - ja                                             # [B, N, 3]
    inv_w2 = 1.0 / (widths * widths)                        # [N] or [B, N]
    inv_w2 = inv_w2.expand(joints.shape[0], n)
    L2 = (v * v).sum(-1)                                    # [B, N]
    long_bone = L2 > 4.0 / inv_w2                           # L > 2w  <=>  sigma_L = L/2 > w
    # double-where: the discarded branch must not produce inf/NaN gradients for short bones
    L2_safe = torch.where(long_bone, L2, torch.ones_like(L2))
    coef = torch.where(long_bone, (4.0 / L2_safe - inv_w2) / L2_safe, torch.zeros_like(L2))
    eye = torch.eye(3, dtype=joints.dtype, device=joints.device)
    precisions = inv_w2[..., None, None] * eye + coef[..., None, None] * (v[..., :, None] * v[..., None, :])
    return means, precisions


class BonePrimitives(nn.Module):
    """Learnable per-bone widths and densities for one joint set (the actor owns it).

    Parameters are stored in log space so they stay positive: ``log_widths`` starts
    from ``joint_set.default_widths`` (metres) and ``log_densities`` from
    ``DEFAULT_DENSITY`` per metre.  ``forward(joints)`` gives the Gaussians.
    """

    def __init__(self, joint_set, density: float = DEFAULT_DENSITY, widths=None):
        super().__init__()
        self.joint_set = joint_set
        self.register_buffer("bones", torch.as_tensor(np.asarray(joint_set.bones, dtype=np.int64).reshape(-1, 2)),
                             persistent=False)
        w = np.asarray(joint_set.default_widths if widths is None else widths, dtype=np.float64).reshape(-1)
        if w.shape[0] != self.bones.shape[0] or not np.all(np.isfinite(w)) or np.any(w <= 0):
            raise MarionetteError(f"BonePrimitives({joint_set.name}): widths must be {self.bones.shape[0]} positive "
                                  f"numbers, got {w.tolist()}")
        if not (density > 0 and math.isfinite(density)):
            raise MarionetteError(f"BonePrimitives({joint_set.name}): density must be positive, got {density}")
        self.log_widths = nn.Parameter(torch.tensor(np.log(w), dtype=torch.float32))
        self.log_densities = nn.Parameter(torch.full((w.shape[0],), math.log(density), dtype=torch.float32))

    @property
    def num_bones(self) -> int:
        return int(self.bones.shape[0])

    def widths(self) -> torch.Tensor:
        """[N] widths in metres."""
        return self.log_widths.exp()

    def densities(self) -> torch.Tensor:
        """[N] peak densities per metre."""
        return self.log_densities.exp()

    def forward(self, joints: torch.Tensor) -> dict:
        """joints [B, J, 3] -> dict(means [B,N,3], precisions [B,N,3,3], widths [N], densities [N])."""
        widths = self.widths().to(joints.dtype)
        means, precisions = bone_gaussians(joints, self.bones, widths)
        return dict(means=means, precisions=precisions, widths=widths, densities=self.densities().to(joints.dtype))

    def extra_repr(self) -> str:
        return f"joint_set={self.joint_set.name}, bones={self.num_bones}"


# ---------------------------------------------------------------------- several Gaussians per bone
def _normalize(v: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    return v / (v * v).sum(-1, keepdim=True).clamp_min(eps).sqrt()


def lateral_bones(joint_set) -> np.ndarray:
    """[N] bool: bones that run across the body (hips, shoulders, collars), whose frame is taken
    from the body's forward axis instead of its left-right axis (to which they are parallel)."""
    out = []
    for a, b in joint_set.bones:
        ca, cb = joint_set.canonical[a], joint_set.canonical[b]
        sides = {ca.split("_")[0], cb.split("_")[0]}
        across = {"left", "right"} <= sides
        names = {ca, cb}
        centre = {"neck", "upper_neck", "thorax", "spine", "spine1", "spine2", "spine3", "neck_base", "pelvis"}
        collar = any(n.endswith("shoulder") or n.endswith("collar") for n in names) and bool(names & centre)
        pelvis = any(n.endswith("hip") for n in names) and "pelvis" in names
        out.append(across or collar or pelvis)
    return np.asarray(out, dtype=bool)


def body_axes(joints: torch.Tensor, joint_set) -> tuple[torch.Tensor, torch.Tensor]:
    """Per frame the body's left->right axis and its forward axis, [B, 3] each (unit).

    From the hips and shoulders (mean of both pairs): lateral = right - left; up = shoulders'
    centre - hips' centre; forward = up x lateral... made orthogonal. Works for every joint set
    with left/right hips (or SMPL hips) and shoulders.
    """
    def idx(*names):
        for n in names:
            if n in joint_set.canonical:
                return joint_set.canonical.index(n)
        raise MarionetteError(f"joint set {joint_set.name} has none of {names}: surface primitives need hips "
                              "and shoulders")

    lh, rh = idx("left_hip", "smpl_left_hip"), idx("right_hip", "smpl_right_hip")
    ls, rs = idx("left_shoulder"), idx("right_shoulder")
    lateral = (joints[:, rh] - joints[:, lh]) + (joints[:, rs] - joints[:, ls])
    up = 0.5 * (joints[:, ls] + joints[:, rs]) - 0.5 * (joints[:, lh] + joints[:, rh])
    # tiny nudges give a valid frame (x lateral, z up) for a body collapsed to a point
    lateral = _normalize(lateral + 1e-6 * joints.new_tensor([1.0, 0.0, 0.0]))
    up = up + 1e-6 * joints.new_tensor([0.0, 0.0, 1.0])
    up = _normalize(up - (up * lateral).sum(-1, keepdim=True) * lateral)
    # subject's right x up = backward for a right-handed frame; the sign only has to be consistent
    forward = torch.linalg.cross(up, lateral, dim=-1)
    return lateral, forward


def bone_frames(joints: torch.Tensor, bones: torch.Tensor, lateral: torch.Tensor, forward: torch.Tensor,
                use_forward: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Orthonormal frame per bone, [B, N, 3, 3] with columns (along, side, front).

    ``along`` points from parent to child; ``side`` is the body's lateral axis (or its
    forward axis for ``use_forward`` bones) made orthogonal to it; ``front = along x side``.
    Degenerate bones (zero length, or parallel to the reference) get a valid frame: the
    reference is nudged by the other body axis before normalising, so values and gradients
    stay finite.
    """
    v = joints[:, bones[:, 1]] - joints[:, bones[:, 0]]                      # [B, N, 3]
    ref = torch.where(use_forward[None, :, None], forward[:, None], lateral[:, None])
    other = torch.where(use_forward[None, :, None], lateral[:, None], forward[:, None])
    up = torch.linalg.cross(lateral, forward, dim=-1)[:, None].expand_as(v)
    # a zero-length bone points "up" the body
    along = _normalize(v + eps * up)
    side = ref - (ref * along).sum(-1, keepdim=True) * along
    side = side + 1e-3 * (other - (other * along).sum(-1, keepdim=True) * along)
    side = _normalize(side)
    front = torch.linalg.cross(along, side, dim=-1)
    return torch.stack([along, side, front], dim=-1)


def bone_geometry(joints: torch.Tensor, joint_set, bones: torch.Tensor, use_forward: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per bone: its frame [B, N, 3, 3] (``bone_frames``), midpoint [B, N, 3] and length [B, N]
    (at least 0.1 mm, so coordinates along a collapsed bone stay finite)."""
    lateral, forward = body_axes(joints, joint_set)
    frames = bone_frames(joints, bones, lateral, forward, use_forward)
    ja, jb = joints[:, bones[:, 0]], joints[:, bones[:, 1]]
    return frames, 0.5 * (ja + jb), (jb - ja).norm(dim=-1).clamp_min(1e-4)


def surface_layout(k: int) -> tuple[np.ndarray, np.ndarray]:
    """Initial local offsets [k, 3] (along in bone lengths from the midpoint; side, front in
    widths) and log-scales [k, 3] (along in bone lengths; across in widths) of ``k`` Gaussians
    around a bone: rings of 4 (front, side, back, other side), stacked along the bone."""
    around = 4 if k % 4 == 0 else (2 if k % 2 == 0 else 1)
    rings = k // around
    offs, scales = [], []
    for r in range(rings):
        a = 0.0 if rings == 1 else -0.25 + 0.5 * r / (rings - 1)
        for q in range(around):
            ang = 2 * math.pi * q / around + math.pi / 2  # q = 0 faces the front
            rad = 0.5 if around > 1 else 0.0
            offs.append([a, rad * math.cos(ang), rad * math.sin(ang)])
            scales.append([math.log(0.5 / rings), math.log(0.75), math.log(0.75)])
    return np.asarray(offs, np.float32), np.asarray(scales, np.float32)


class SurfacePrimitives(nn.Module):
    """``k`` learnable anisotropic Gaussians per bone, placed in the bone's own frame.

    Each bone keeps its learnable width ``w`` (``log_widths``, metres) and density; each of its
    Gaussians learns an offset from the bone's midpoint (along the bone in units of its length
    ``L``, across in units of ``w``) and three scales (along in units of ``L``, across in units
    of ``w``), so an actor keeps its shape on a body with other proportions. The frame
    (``bone_frames``) follows the body's left-right axis, so the Gaussians in front of a limb
    stay in front: the features they carry can tell chest from back.

    forward(joints [B,J,3]) -> dict(means [B,N*k,3], precisions [B,N*k,3,3], densities [N*k], widths [N]).
    Primitive ``n*k + i`` is Gaussian ``i`` of bone ``n``.
    """

    def __init__(self, joint_set, per_bone: int = 4, density: float = DEFAULT_DENSITY, widths=None):
        super().__init__()
        if per_bone < 1:
            raise MarionetteError(f"SurfacePrimitives({joint_set.name}): per_bone must be at least 1, got {per_bone}")
        self.joint_set = joint_set
        self.per_bone = int(per_bone)
        self.register_buffer("bones", torch.as_tensor(np.asarray(joint_set.bones, dtype=np.int64).reshape(-1, 2)),
                             persistent=False)
        self.register_buffer("use_forward", torch.as_tensor(lateral_bones(joint_set)), persistent=False)
        n = int(self.bones.shape[0])
        w = np.asarray(joint_set.default_widths if widths is None else widths, dtype=np.float64).reshape(-1)
        if w.shape[0] != n or not np.all(np.isfinite(w)) or np.any(w <= 0):
            raise MarionetteError(f"SurfacePrimitives({joint_set.name}): widths must be {n} positive numbers")
        offs, scales = surface_layout(self.per_bone)
        self.log_widths = nn.Parameter(torch.tensor(np.log(w), dtype=torch.float32))
        # smaller Gaussians are thinner along a ray: raise the density so a limb stays opaque
        self.log_densities = nn.Parameter(torch.full((n,), math.log(density * 1.5), dtype=torch.float32))
        self.offsets = nn.Parameter(torch.from_numpy(np.tile(offs[None], (n, 1, 1))))      # [N, k, 3]
        self.log_scales = nn.Parameter(torch.from_numpy(np.tile(scales[None], (n, 1, 1))))  # [N, k, 3]

    @property
    def num_bones(self) -> int:
        return int(self.bones.shape[0])

    @property
    def num_primitives(self) -> int:
        return self.num_bones * self.per_bone

    def widths(self) -> torch.Tensor:
        return self.log_widths.exp()

    def densities(self) -> torch.Tensor:
        """[N*k] peak densities per metre."""
        return self.log_densities.exp().repeat_interleave(self.per_bone)

    def forward(self, joints: torch.Tensor) -> dict:
        B = joints.shape[0]
        dt = joints.dtype
        w = self.widths().to(dt)                                                # [N]
        frames, mid, L = bone_geometry(joints, self.joint_set, self.bones, self.use_forward)
        unit = torch.stack([L, w.expand_as(L), w.expand_as(L)], dim=-1)          # [B, N, 3] metres per local unit
        local = self.offsets.to(dt)[None] * unit[:, :, None]                    # [B, N, k, 3]
        means = mid[:, :, None] + torch.einsum("bnij,bnkj->bnki", frames, local)
        sig = self.log_scales.to(dt).exp()[None] * unit[:, :, None]             # [B, N, k, 3]
        sig = torch.maximum(sig, 0.25 * w[None, :, None, None])  # never thinner than a quarter width
        inv = 1.0 / (sig * sig)
        # P = F diag(inv) F^T for each Gaussian of the bone (F = the bone's frame)
        prec = torch.einsum("bnij,bnkj,bnlj->bnkil", frames, inv, frames)
        return dict(means=means.reshape(B, -1, 3), precisions=prec.reshape(B, -1, 3, 3), widths=w,
                    densities=self.densities().to(dt))

    def extra_repr(self) -> str:
        return f"joint_set={self.joint_set.name}, bones={self.num_bones}, per_bone={self.per_bone}"
