"""Writes a tiny version-1 actor and what it rendered, with the first wave's code (commit 92c4806) on the path:
    git archive 92c4806 engine | tar -x -C OLD && cd OLD && \
        MARIONETTE_RENDER_BACKEND=reference PYTHONPATH=. python3 REPO/tests/data/actor_v1_tiny/make_v1_actor.py OUT
(run from OLD: it reads OLD's engine/data/demo_actor/reference_skeleton.npz; the reference renderer, because
today's installed kernels have another op signature than that code calls)
The test loads it with today's code and renders the same frame."""
import sys
from pathlib import Path

import numpy as np
import torch

from engine.actor.decoder import DecoderConfig
from engine.actor.model import Actor, ActorConfig
from engine.actor.model_file import save_actor
from engine.camera import Camera

out = Path(sys.argv[1])
torch.manual_seed(0)
actor = Actor(ActorConfig(latent_dim=4, decoder=DecoderConfig.preset("tiny", in_channels=5, code_dim=8)))
with torch.no_grad():
    for p in actor.parameters():  # not the initial values: a loader that dropped or mixed tensors must show
        p.add_(0.05 * torch.randn_like(p))
save_actor(out, actor, {"command": "tests/data/actor_v1_tiny/make_v1_actor.py (commit 92c4806)", "steps": 0})
joints = np.load("engine/data/demo_actor/reference_skeleton.npz")["joints"][:1].astype(np.float32)
centre = joints[0].mean(0)
cam = Camera.look_at("probe", eye=centre + np.array([0.4, -2.6, 0.1]), target=centre, width=24, height=32, fov_deg=45.0)
actor.eval()
rgb, alpha = actor.render_frames(joints, cam)
np.savez_compressed(out / "render_92c4806.npz", joints=joints, K=cam.K, R=cam.R, t=cam.t, rgb=rgb, alpha=alpha)
print(rgb.shape, alpha.shape, float(alpha.max()), float(alpha.mean()), float(rgb.std()))
