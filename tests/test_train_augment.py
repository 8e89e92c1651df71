"""Training-time view augmentation keeps images and cameras consistent."""

from __future__ import annotations

import torch

from engine.neural.actor.train import augment_views


def test_augmented_camera_projects_onto_the_moved_content():
    H = W = 48
    yy, xx = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
    u0, v0 = 27.0, 18.0
    blob = torch.exp(-((xx - u0) ** 2 + (yy - v0) ** 2) / (2 * 2.0 ** 2))
    img = blob.expand(2, 3, H, W).clone()
    K = torch.tensor([[40.0, 0.0, 23.5], [0.0, 40.0, 23.5], [0.0, 0.0, 1.0]]).expand(2, 3, 3).clone()
    b = {"rgb": img, "mask": img[:, :1].clone(), "K": K, "joints": torch.zeros(2, 3, 3)}
    out = augment_views(b, torch.Generator().manual_seed(5))
    ray = torch.linalg.inv(K[0]) @ torch.tensor([u0, v0, 1.0])
    for i in range(2):
        p = out["K"][i] @ ray
        p = p[:2] / p[2]
        w = out["rgb"][i, 0]
        c = torch.stack([(xx * w).sum() / w.sum(), (yy * w).sum() / w.sum()])
        assert torch.allclose(c, p, atol=0.15), (c, p)
    assert torch.equal(out["joints"], b["joints"])  # everything else passes through
    assert not torch.equal(out["K"][0], out["K"][1])  # each view draws its own zoom and shift
