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
