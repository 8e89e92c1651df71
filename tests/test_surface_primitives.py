"""Several Gaussians per bone (SurfacePrimitives): frames, gradients, kernels, actor files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from engine import MarionetteError
from engine.neural.actor.model import Actor, make_config
from engine.neural.actor.model_file import JSON_FILE, load_actor, save_actor
from engine.neural.render import kernels, raycast, raycast_reference
from engine.neural.render.primitives import SurfacePrimitives, body_axes, bone_frames, lateral_bones, surface_layout
from engine.body.joint_sets import BLAZEPOSE_33, BODY_25B, SMPL_24
from tests.test_kernels import _cam

needs_ext = pytest.mark.skipif(not kernels.available("cpu"), reason=kernels.unavailable_reason() or "no CPU kernels")


def _standing(dtype=torch.float64, batch=2, seed=0):
    """A BODY_25B person standing at the origin (Z up, facing -Y), with a little noise per frame."""
    base = {
        "Nose": (0, -0.08, 1.62), "LEye": (0.03, -0.07, 1.65), "REye": (-0.03, -0.07, 1.65),
        "LEar": (0.07, 0.0, 1.63), "REar": (-0.07, 0.0, 1.63), "LShoulder": (0.18, 0, 1.42),
        "RShoulder": (-0.18, 0, 1.42), "LElbow": (0.22, 0, 1.14), "RElbow": (-0.22, 0, 1.14),
        "LWrist": (0.24, -0.05, 0.88), "RWrist": (-0.24, -0.05, 0.88), "LHip": (0.1, 0, 0.92),
        "RHip": (-0.1, 0, 0.92), "LKnee": (0.1, -0.02, 0.5), "RKnee": (-0.1, -0.02, 0.5),
        "LAnkle": (0.1, 0.02, 0.08), "RAnkle": (-0.1, 0.02, 0.08), "Neck": (0, 0, 1.5), "HeadTop": (0, 0, 1.78),
        "LBigToe": (0.12, -0.14, 0.02), "LSmallToe": (0.16, -0.12, 0.02), "LHeel": (0.1, 0.06, 0.02),
        "RBigToe": (-0.12, -0.14, 0.02), "RSmallToe": (-0.16, -0.12, 0.02), "RHeel": (-0.1, 0.06, 0.02),
    }
    j = torch.tensor([base[n] for n in BODY_25B.names], dtype=dtype)
    g = torch.Generator().manual_seed(seed)
    return j[None].repeat(batch, 1, 1) + 0.01 * torch.randn(batch, *j.shape, generator=g, dtype=dtype)


def test_layout_rings_face_front_side_back():
    offs, scales = surface_layout(4)
    assert offs.shape == (4, 3) and scales.shape == (4, 3)
    # q = 0 faces the front (+front axis), q = 2 the back
    assert offs[0, 2] > 0.4 and abs(offs[0, 1]) < 1e-6
    assert offs[2, 2] < -0.4
    offs8, _ = surface_layout(8)
    assert sorted(set(np.round(offs8[:, 0], 3))) == [-0.25, 0.25]


def test_bone_frames_are_orthonormal_and_follow_the_body():
    j = _standing()
    lat, fwd = body_axes(j, BODY_25B)
    assert torch.allclose((lat * fwd).sum(-1), torch.zeros(2, dtype=j.dtype), atol=1e-9)
    bones = torch.as_tensor(BODY_25B.bones)
    F = bone_frames(j, bones, lat, fwd, torch.as_tensor(lateral_bones(BODY_25B)))
    eye = torch.eye(3, dtype=j.dtype).expand_as(F)
    assert torch.allclose(F.transpose(-1, -2) @ F, eye, atol=1e-6)
    assert torch.allclose(torch.linalg.det(F), torch.ones(F.shape[:2], dtype=j.dtype), atol=1e-6)
    # the shin's front axis is the body's front (same for both legs: front/back do not swap sides)
    k_l = BODY_25B.bones.index((BODY_25B.index("LKnee"), BODY_25B.index("LAnkle")))
    k_r = BODY_25B.bones.index((BODY_25B.index("RKnee"), BODY_25B.index("RAnkle")))
    assert float((F[:, k_l, :, 2] * F[:, k_r, :, 2]).sum(-1).min()) > 0.95
    # rotating the whole body rotates every frame with it
    a = 0.7
    Rz = torch.tensor([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]], dtype=j.dtype)
    j2 = j @ Rz.T
    lat2, fwd2 = body_axes(j2, BODY_25B)
    F2 = bone_frames(j2, bones, lat2, fwd2, torch.as_tensor(lateral_bones(BODY_25B)))
    assert torch.allclose(F2, Rz @ F, atol=1e-4)  # up to the 1e-6 nudges that keep degenerate frames valid


def test_lateral_bones_are_the_ones_across_the_body():
    lat = lateral_bones(BODY_25B)
    names = [BODY_25B.bone_names[i] for i in np.flatnonzero(lat)]
    assert "LHip-RHip" in names and "LShoulder-RShoulder" in names and "Neck-LShoulder" in names
    assert "LKnee-LAnkle" not in names
    for js in (SMPL_24, BLAZEPOSE_33):
        SurfacePrimitives(js, 4)(torch.zeros(1, js.num_joints, 3) + torch.randn(1, js.num_joints, 3) * 0.3)


@pytest.mark.parametrize("degenerate", [None, "zero_length", "all_at_one_point"])
def test_primitives_are_finite_with_finite_gradients(degenerate):
    j = _standing(batch=1)
    if degenerate == "zero_length":
        j[:, BODY_25B.index("LElbow")] = j[:, BODY_25B.index("LShoulder")]
    if degenerate == "all_at_one_point":
        j[:] = 0.0
    sp = SurfacePrimitives(BODY_25B, 4).double()
    j.requires_grad_(True)
    g = sp(j)
    assert all(torch.isfinite(v).all() for v in g.values())
    ev = torch.linalg.eigvalsh(g["precisions"])
    assert float(ev.min().detach()) > 0
    (g["means"].sum() + g["precisions"].sum() * 1e-3).backward()
    assert torch.isfinite(j.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in sp.parameters() if p.grad is not None)


@pytest.mark.parametrize("learned", ["offsets", "log_scales", "log_widths", "log_densities", "joints"])
def test_gradcheck_through_the_reference_renderer(learned):
    """float64 gradcheck of pixels with respect to every learnable part of the primitives' geometry
    (where each Gaussian sits, its shape, its bone's width, its density) and to the joints."""
    j = _standing(batch=1)
    sp = SurfacePrimitives(BODY_25B, 2).double()
    K, R, t = _cam(10, 12)
    feats = torch.randn(1, sp.num_primitives, 3, dtype=torch.float64)
    bg = torch.zeros(1, 3, dtype=torch.float64)
    params = {k: v.detach() for k, v in sp.named_parameters()}
    assert learned == "joints" or learned in params

    def f(x):
        values = params if learned == "joints" else {**params, learned: x}
        g = torch.func.functional_call(sp, values, (x if learned == "joints" else j,))
        lat, alpha, depth = raycast_reference(g["means"], g["precisions"], g["densities"][None], feats, bg, K, R, t,
                                              12, 10)
        return lat.sum() + alpha.sum()

    x = (j if learned == "joints" else params[learned]).clone().requires_grad_(True)
    assert torch.autograd.gradcheck(f, (x,), eps=1e-6, atol=1e-5, rtol=1e-3)


@needs_ext
@pytest.mark.parametrize("mode", ["transmittance", "rochette"])
def test_kernel_matches_reference_with_many_primitives(mode):
    j = _standing(dtype=torch.float64, batch=2)
    sp = SurfacePrimitives(BODY_25B, 8).double()  # 208 primitives
    g = sp(j)
    K, R, t = _cam(24, 32, batch=2)
    feats = torch.randn(2, sp.num_primitives, 4, dtype=torch.float64, requires_grad=True)
    bg = torch.randn(2, 4, dtype=torch.float64)
    dens = g["densities"][None].expand(2, -1).contiguous()
    outs = {}
    for backend in ("reference", "kernel"):
        f = feats.detach().clone().requires_grad_(True)
        lat, alpha, depth = raycast(g["means"].detach(), g["precisions"].detach(), dens.detach(), f, bg, K, R, t,
                                    32, 24, mode=mode, backend=backend)
        (lat.sum() + alpha.sum()).backward()
        outs[backend] = (lat.detach(), alpha.detach(), f.grad)
    for a, b in zip(outs["reference"], outs["kernel"]):
        assert torch.allclose(a, b, atol=1e-8, rtol=1e-6)


def test_actor_with_surface_primitives_saves_and_loads(tmp_path):
    cfg = make_config("BODY_25B", latent_dim=4, preset="tiny", per_bone=4, colour_cameras=3)
    actor = Actor(cfg)
    assert actor.codes.shape == (len(BODY_25B.bones) * 4, 4)
    j = _standing(dtype=torch.float32, batch=1)
    K, R, t = (x.float() for x in _cam(16, 16))
    out = actor(j, K, R, t, 16, 16)
    assert out["rgb"].shape == (1, 3, 16, 16)
    save_actor(tmp_path / "a", actor)
    doc = json.loads((tmp_path / "a" / JSON_FILE).read_text())
    assert doc["version"] == 2 and doc["per_bone"] == 4 and doc["colour_cameras"] == 3
    back, _ = load_actor(tmp_path / "a")
    out2 = back(j, K, R, t, 16, 16)
    assert torch.allclose(out["rgb"], out2["rgb"], atol=1e-6)
    # colour correction is a training-time term only: the identity at initialisation
    assert torch.equal(actor.colour_correct(out["rgb"], torch.tensor([2])), out["rgb"])


def test_one_per_bone_actor_stays_version_1_and_v1_cannot_claim_surface(tmp_path):
    actor = Actor(make_config("BODY_25B", latent_dim=4, preset="tiny"))
    save_actor(tmp_path / "a", actor)
    p = tmp_path / "a" / JSON_FILE
    doc = json.loads(p.read_text())
    assert doc["version"] == 1 and doc["per_bone"] == 1
    doc["per_bone"] = 4
    p.write_text(json.dumps(doc))
    with pytest.raises(MarionetteError, match="needs actor file version 2"):
        load_actor(tmp_path / "a")


FROZEN_V1 = Path(__file__).parent / "data" / "actor_v1_tiny"


def test_an_actor_the_first_wave_wrote_loads_and_renders_as_it_did():
    """A version-1 actor written by the first wave's own code (commit 92c4806, its make_v1_actor.py),
    not by today's writer: today's loader and renderer give the frame that code rendered."""
    from engine.geometry.camera import Camera

    actor, doc = load_actor(FROZEN_V1)
    assert doc["version"] == 1 and "per_bone" not in doc
    ref = np.load(FROZEN_V1 / "render_92c4806.npz")
    cam = Camera("probe", K=ref["K"], R=ref["R"], t=ref["t"], width=24, height=32)
    rgb, alpha = actor.render_frames(ref["joints"], cam)
    assert ref["alpha"].max() > 0.5 and ref["alpha"].min() < 0.05  # the person and background both in frame
    np.testing.assert_allclose(alpha, ref["alpha"], atol=1e-3)
    np.testing.assert_allclose(rgb, ref["rgb"], atol=1e-3)


def test_learned_camera_colours_never_reach_a_render():
    """Per-camera colour correction explains the training cameras' exposure; a render (any camera,
    Blender's included) must not carry any of it."""
    from engine.geometry.camera import Camera

    actor = Actor(make_config("BODY_25B", latent_dim=4, preset="tiny", per_bone=2, colour_cameras=3)).eval()
    j = _standing(dtype=torch.float32, batch=1)
    K, R, t = (x.float() for x in _cam(16, 16))
    cam = Camera("c", K=K[0].double().numpy(), R=R[0].double().numpy(), t=t[0].double().numpy(), width=16, height=16)
    with torch.no_grad():
        before = actor(j, K, R, t, 16, 16)["rgb"]
        frames_before = actor.render_frames(j.numpy(), cam)[0]
        actor.camera_colour.copy_(torch.tensor([0.3, -0.2, 0.1, 0.05, -0.1, 0.2]).reshape(2, 3).expand(3, 2, 3))
        after = actor(j, K, R, t, 16, 16)["rgb"]
        # training does apply it: the same render as camera 1 saw it differs
        assert not torch.allclose(actor.colour_correct(after, torch.tensor([1])), after, atol=1e-3)
    assert torch.equal(before, after)
    np.testing.assert_array_equal(actor.render_frames(j.numpy(), cam)[0], frames_before)


def test_forward_scaled_renders_at_the_trained_person_size():
    actor = Actor(make_config("BODY_25B", latent_dim=4, preset="tiny", per_bone=2)).eval()
    j = _standing(dtype=torch.float32, batch=1)
    K, R, t = (x.float() for x in _cam(96, 96))
    h = float(actor.person_height_px(j, K, R, t)[0])
    assert 20 < h < 96
    with torch.no_grad():
        direct = actor(j, K, R, t, 96, 96)
        same = actor.forward_scaled(j, K, R, t, 96, 96)  # no record: renders directly
        assert torch.equal(direct["rgb"], same["rgb"])
        actor.native_person_px = h / 4  # trained on a person a quarter this size
        small = actor.forward_scaled(j, K, R, t, 96, 96)
    assert small["rgb"].shape == (1, 3, 96, 96) and small["depth"].shape == (1, 1, 96, 96)
    assert 0.25 < small["scale"] < 0.35
    # the silhouette lands in the same place
    iou = ((small["alpha"] > 0.5) & (direct["alpha"] > 0.5)).sum() / ((small["alpha"] > 0.5) | (direct["alpha"] > 0.5)).sum()
    assert float(iou) > 0.6
