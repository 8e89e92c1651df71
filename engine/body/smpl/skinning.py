"""Batched SMPL linear-blend skinning in torch: shape blend, joint regression, pose blend, FK, skinning."""

from __future__ import annotations

import numpy as np

from engine.body.smpl.model import NUM_JOINTS, SMPLModelData
from engine.geometry.rotations import axis_angle_to_matrix_torch


# ------------------------------------------------------------------------------------------
# batched LBS in torch (same math as SMPL: shape blend, joint regression, pose blend, FK, skinning)


class SMPLTorch:
    """Batched SMPL forward on plain tensors.

    ``joints(betas, pose, trans)`` returns the 24 posed joints (cheap: joints depend on shape only
    through ``J_regressor @ shapedirs``, precomputed) and, when ``vertex_ids`` are given, the posed
    positions of those vertices (skinned individually, with pose blend shapes). ``vertices`` gives
    the whole mesh. pose: [B, 24, 3] axis-angle (joint 0 = global orientation); betas [B, K] or [K].
    """

    def __init__(self, data: SMPLModelData, device="cpu", dtype=None, num_betas: int | None = None):
        import torch

        self.dtype = dtype or torch.float32
        self.device = torch.device(device)
        nb = min(num_betas or 10, data.num_betas)
        self.num_betas = nb
        t = lambda a: torch.as_tensor(np.asarray(a), dtype=self.dtype, device=self.device)  # noqa: E731
        self.v_template = t(data.v_template)
        self.shapedirs = t(data.shapedirs[:, :, :nb])
        self.posedirs = t(data.posedirs)
        self.J_regressor = t(data.J_regressor)
        self.weights = t(data.weights)
        self.parents = data.parents.tolist()
        self.J_template = t(data.J_regressor @ data.v_template)
        self.J_shapedirs = t(np.einsum("jv,vck->jck", data.J_regressor, data.shapedirs[:, :, :nb]))
        self.faces = torch.as_tensor(data.f, dtype=torch.long, device=self.device)
        # joints grouped by tree depth so forward kinematics runs one batched step per level
        depth = [0] * NUM_JOINTS
        for j in range(1, NUM_JOINTS):
            depth[j] = depth[self.parents[j]] + 1
        self.levels = [[j for j in range(NUM_JOINTS) if depth[j] == d] for d in range(1, max(depth) + 1)]
        self.level_idx = [torch.tensor(lv, device=self.device) for lv in self.levels]
        self.level_par = [torch.tensor([self.parents[j] for j in lv], device=self.device) for lv in self.levels]

    def rest_joints(self, betas):
        """[..., K] -> [..., 24, 3]"""
        import torch

        return self.J_template + torch.einsum("jck,...k->...jc", self.J_shapedirs, betas)

    def _transforms(self, rot, rest):
        """World rotation and translation of every joint: rot [B,24,3,3], rest [B,24,3] ->
        (R [B,24,3,3], posed joints [B,24,3])."""
        import torch

        B = rot.shape[0]
        par = torch.tensor([0] + self.parents[1:], device=self.device)
        rel = rest - rest[:, par]  # bone vectors; row 0 is zero
        rel = torch.cat([rest[:, :1], rel[:, 1:]], dim=1)
        R_all = rot.new_zeros(B, NUM_JOINTS, 3, 3)
        P_all = rest.new_zeros(B, NUM_JOINTS, 3)
        R_all = R_all.index_copy(1, torch.tensor([0], device=self.device), rot[:, :1])
        P_all = P_all.index_copy(1, torch.tensor([0], device=self.device), rest[:, :1])
        for idx, pidx in zip(self.level_idx, self.level_par):
            Rp = R_all[:, pidx]
            Pj = P_all[:, pidx] + (Rp @ rel[:, idx, :, None])[..., 0]
            Rj = Rp @ rot[:, idx]
            R_all = R_all.index_copy(1, idx, Rj)
            P_all = P_all.index_copy(1, idx, Pj)
        return R_all, P_all

    def forward(self, betas, pose, trans=None, vertex_ids=None, full_mesh=False):
        """-> dict(joints [B,24,3], vertices [B,V',3] or None, rot [B,24,3,3])."""
        import torch

        B = pose.shape[0]
        pose = pose.reshape(B, NUM_JOINTS, 3)
        if betas.dim() == 1:
            betas = betas.expand(B, -1)
        rot = axis_angle_to_matrix_torch(pose)
        rest = self.rest_joints(betas)
        R, posed = self._transforms(rot, rest)
        out = {"joints": posed, "rot": R, "vertices": None}
        if full_mesh or vertex_ids is not None:
            if full_mesh:
                vt, sd, pd, w = self.v_template, self.shapedirs, self.posedirs, self.weights
            else:
                ids = torch.as_tensor(vertex_ids, dtype=torch.long, device=self.device)
                vt, sd, pd, w = self.v_template[ids], self.shapedirs[ids], self.posedirs[ids], self.weights[ids]
            eye = torch.eye(3, dtype=rot.dtype, device=rot.device)
            feat = (rot[:, 1:] - eye).reshape(B, -1)  # [B, 207]
            v = vt + torch.einsum("vck,bk->bvc", sd, betas) + torch.einsum("vcp,bp->bvc", pd, feat)
            # skinning: x' = sum_j w_j (R_j (x - rest_j) + posed_j)
            A_t = posed - (R @ rest[..., None])[..., 0]  # [B,24,3]
            Rw = torch.einsum("vj,bjcd->bvcd", w, R)
            tw = torch.einsum("vj,bjc->bvc", w, A_t)
            out["vertices"] = (Rw @ v[..., None])[..., 0] + tw
        if trans is not None:
            out["joints"] = out["joints"] + trans[:, None]
            if out["vertices"] is not None:
                out["vertices"] = out["vertices"] + trans[:, None]
        return out

    __call__ = forward
