"""The pure-PyTorch reference renderer (engine.neural.render) against the contract in renderer_spec.md."""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest
import torch
from scipy import integrate

from engine import MarionetteError
from engine.geometry.camera import Camera
from engine.neural.render import BonePrimitives, bone_gaussians, raycast, raycast_reference, render_latent
from engine.neural.render.rays import camera_origins, pixel_directions
from engine.body.joint_sets import BODY_25, BODY_25B, COCO_17, SMPL_24

# the package exports the function ``raycast``, which shadows the submodule of the same name
raycast_module = importlib.import_module("engine.neural.render.raycast")
MODES = ("transmittance", "rochette")


@pytest.fixture(autouse=True)
def _reference_backend(monkeypatch):
    """These tests are about the PyTorch reference, even where compiled kernels are installed."""
    monkeypatch.setenv("MARIONETTE_RENDER_BACKEND", "reference")


# ---------------------------------------------------------------------- helpers
def _cam_tensors(cam: Camera, dtype=torch.float64, batch: int = 1):
    K = torch.as_tensor(cam.K, dtype=dtype)[None].repeat(batch, 1, 1)
    R = torch.as_tensor(cam.R, dtype=dtype)[None].repeat(batch, 1, 1)
    t = torch.as_tensor(cam.t, dtype=dtype)[None].repeat(batch, 1)
    return K, R, t


def _small_scene(dtype=torch.float64, seed=0):
    """4 joints, 3 bones (two long, one shorter than twice its width), seen by a 6x5 camera."""
    g = torch.Generator().manual_seed(seed)
    joints = torch.tensor([[[0.0, 0.0, 0.0], [0.35, 0.1, 0.05], [0.5, -0.3, 0.1], [0.38, 0.14, 0.02]]], dtype=dtype)
    joints = joints + 0.01 * torch.randn(joints.shape, generator=g, dtype=dtype)
    bones = [(0, 1), (1, 2), (1, 3)]
    widths = torch.tensor([0.08, 0.06, 0.05], dtype=dtype)
    densities = torch.tensor([12.0, 20.0, 30.0], dtype=dtype)
    features = torch.randn(1, 3, 2, generator=g, dtype=dtype)
    background = torch.tensor([[0.3, -0.2]], dtype=dtype)
    cam = Camera.look_at("small", eye=(0.25, -1.6, 0.3), target=(0.25, 0.0, 0.0), width=6, height=5, f_px=7.0)
    return joints, bones, widths, densities, features, background, cam


def _posed_body25b() -> np.ndarray:
    pos = {
        "Nose": (0, -0.08, 1.60), "LEye": (0.03, -0.07, 1.63), "REye": (-0.03, -0.07, 1.63),
        "LEar": (0.07, 0, 1.62), "REar": (-0.07, 0, 1.62), "LShoulder": (0.18, 0, 1.45),
        "RShoulder": (-0.18, 0, 1.45), "LElbow": (0.30, 0, 1.20), "RElbow": (-0.25, -0.05, 1.18),
        "LWrist": (0.45, -0.05, 1.05), "RWrist": (-0.28, -0.2, 1.0), "LHip": (0.1, 0, 0.95),
        "RHip": (-0.1, 0, 0.95), "LKnee": (0.13, -0.05, 0.52), "RKnee": (-0.11, 0.02, 0.52),
        "LAnkle": (0.12, 0, 0.1), "RAnkle": (-0.12, 0.05, 0.1), "Neck": (0, 0, 1.5), "HeadTop": (0, 0, 1.78),
        "LBigToe": (0.13, -0.15, 0.02), "LSmallToe": (0.17, -0.13, 0.02), "LHeel": (0.12, 0.05, 0.03),
        "RBigToe": (-0.13, -0.1, 0.02), "RSmallToe": (-0.17, -0.08, 0.02), "RHeel": (-0.12, 0.08, 0.03),
    }
    return np.array([pos[n] for n in BODY_25B.names], dtype=np.float64)


# ---------------------------------------------------------------------- primitives
def test_precision_is_inverse_covariance():
    joints = torch.tensor([[[0.0, 0.0, 0.0], [0.3, 0.4, 0.0], [0.31, 0.41, 0.02], [0.3, 0.4, 0.0]]], dtype=torch.float64)
    bones = [(0, 1), (1, 2), (1, 3)]  # long, short (L < 2w), zero length
    widths = torch.tensor([0.05, 0.04, 0.03], dtype=torch.float64)
    means, P = bone_gaussians(joints, bones, widths)
    for k, (a, b) in enumerate(bones):
        v = (joints[0, b] - joints[0, a]).numpy()
        L, w = np.linalg.norm(v), float(widths[k])
        u = v / L if L > 0 else np.array([1.0, 0, 0])
        basis = np.linalg.qr(np.stack([u, np.random.default_rng(k).normal(size=3),
                                       np.random.default_rng(k + 9).normal(size=3)], 1))[0]
        sigma_l = max(L / 2, w)
        cov = basis @ np.diag([sigma_l ** 2, w ** 2, w ** 2]) @ basis.T
        np.testing.assert_allclose(P[0, k].numpy(), np.linalg.inv(cov), rtol=1e-9, atol=1e-6)
        np.testing.assert_allclose(means[0, k].numpy(), (joints[0, a] + joints[0, b]).numpy() / 2)


def test_zero_length_bone_gradients_finite():
    joints = torch.tensor([[[0.1, 0.2, 0.3], [0.1, 0.2, 0.3]]], dtype=torch.float64, requires_grad=True)
    widths = torch.tensor([0.05], dtype=torch.float64, requires_grad=True)
    means, P = bone_gaussians(joints, [(0, 1)], widths)
    np.testing.assert_allclose(P[0, 0].detach().numpy(), np.eye(3) / 0.05 ** 2)
    (P.sum() + means.sum()).backward()
    assert torch.isfinite(joints.grad).all() and torch.isfinite(widths.grad).all()


@pytest.mark.parametrize("joint_set", [BODY_25, BODY_25B, COCO_17, SMPL_24])
def test_bone_primitives_module(joint_set):
    prims = BonePrimitives(joint_set)
    n = len(joint_set.bones)
    np.testing.assert_allclose(prims.widths().detach().numpy(), joint_set.default_widths, rtol=1e-6)
    np.testing.assert_allclose(prims.densities().detach().numpy(), 30.0, rtol=1e-6)
    joints = torch.randn(2, joint_set.num_joints, 3)
    out = prims(joints)
    assert out["means"].shape == (2, n, 3) and out["precisions"].shape == (2, n, 3, 3)
    assert torch.allclose(out["precisions"], out["precisions"].transpose(-1, -2))
    assert {name for name, _ in prims.named_parameters()} == {"log_widths", "log_densities"}


# ---------------------------------------------------------------------- gradients
@pytest.mark.parametrize("mode", MODES)
def test_gradcheck_float64(mode):
    joints, bones, widths, densities, features, background, cam = _small_scene()
    K, R, t = _cam_tensors(cam)
    inputs = [x.clone().requires_grad_(True) for x in (joints, widths, densities, features, background)]

    def fn(j, w, rho, f, bg):
        means, P = bone_gaussians(j, bones, w)
        # chunk_rays=16 (two chunks) exercises chunking and per-chunk checkpointing in the backward pass
        return raycast_reference(means, P, rho[None], f, bg, K, R, t, 5, 6, mode=mode, chunk_rays=16)

    with torch.no_grad():
        latent, alpha, _ = fn(*inputs)
    # the scene must actually be visible, or the check would be vacuous
    assert float(alpha.max()) > 0.2 and float(alpha.min()) < float(alpha.max()) - 0.1
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------------- analytic checks
def _single_primitive(mean, P, rho, cam, mode="transmittance"):
    K, R, t = _cam_tensors(cam)
    means = torch.as_tensor(mean, dtype=torch.float64).reshape(1, 1, 3)
    prec = torch.as_tensor(P, dtype=torch.float64).reshape(1, 1, 3, 3)
    dens = torch.tensor([[rho]], dtype=torch.float64)
    feats = torch.ones(1, 1, 1, dtype=torch.float64)
    bg = torch.zeros(1, 1, dtype=torch.float64)
    return raycast_reference(means, prec, dens, feats, bg, K, R, t, cam.height, cam.width, mode=mode)


@pytest.mark.parametrize("eye", [(0.0, -3.0, 0.0), (0.0, -0.03, 0.0)])  # far away; inside the Gaussian
def test_line_integral_matches_quadrature(eye):
    cam = Camera.look_at("c", eye=eye, target=(0.0, 1.0, 0.0), width=7, height=5, f_px=6.0)
    mean = np.array([0.05, 0.0, -0.03])
    u = np.array([1.0, 0.3, 0.2]) / np.linalg.norm([1.0, 0.3, 0.2])
    P = np.eye(3) / 0.1 ** 2 + (1 / 0.3 ** 2 - 1 / 0.1 ** 2) * np.outer(u, u)
    rho = 4.0
    _, alpha, depth = _single_primitive(mean, P, rho, cam)
    o = camera_origins(*[x for x in _cam_tensors(cam)[1:]])[0].numpy()
    dirs = pixel_directions(*[x for x in _cam_tensors(cam)[:2]], cam.height, cam.width)[0].numpy()
    checked = 0
    for p in range(cam.height * cam.width):
        d = dirs[p]
        dens = lambda s: rho * math.exp(-0.5 * (o + s * d - mean) @ P @ (o + s * d - mean))  # noqa: E731
        tau_num = integrate.quad(dens, 0.0, 50.0, points=[max(0.0, float(d @ (mean - o)))], limit=200,
                                 epsabs=0.0, epsrel=1e-11)[0]
        j, i = divmod(p, cam.width)
        tau = -math.log1p(-float(alpha[0, 0, j, i]))
        np.testing.assert_allclose(tau, tau_num, rtol=1e-6, atol=1e-10)
        # s* is where the density along the (whole) line peaks
        s_star = float(d @ P @ (mean - o)) / float(d @ P @ d)
        s_grid = np.linspace(s_star - 0.05, s_star + 0.05, 2001)
        vals = [dens(s) for s in s_grid]
        assert abs(s_grid[int(np.argmax(vals))] - s_star) < 1e-4
        a_k = float(alpha[0, 0, j, i])
        np.testing.assert_allclose(float(depth[0, 0, j, i]), a_k * s_star / (a_k + 1e-6), rtol=1e-9, atol=1e-12)
        checked += tau_num > 1e-3
    assert checked >= 3


def test_rochette_single_primitive_formula():
    cam = Camera.look_at("c", eye=(0.0, -2.0, 0.0), target=(0.0, 0.0, 0.0), width=5, height=5, f_px=5.0)
    P = np.eye(3) / 0.2 ** 2
    latent, alpha, depth = _single_primitive([0.0, 0.0, 0.0], P, 3.0, cam, mode="rochette")
    # centre ray passes through the mean: s* = 2, h = 0, tau = rho sqrt(2 pi / a) * erfc(-2 sqrt(a/2))/2
    a = 1 / 0.2 ** 2
    tau = 3.0 * math.sqrt(2 * math.pi / a) * 0.5 * math.erfc(-2.0 * math.sqrt(a / 2))
    w = tau / (1 + 2.0 ** 4)
    np.testing.assert_allclose(float(alpha[0, 0, 2, 2]), w / (w + 1e-3), rtol=1e-9)
    np.testing.assert_allclose(float(latent[0, 0, 2, 2]), w / (w + 1e-3), rtol=1e-9)  # feature 1, background 0
    np.testing.assert_allclose(float(depth[0, 0, 2, 2]), w * 2.0 / (w + 1e-6), rtol=1e-9)


# ---------------------------------------------------------------------- compositing
@pytest.mark.parametrize("near_index", [0, 1])
def test_near_primitive_occludes_far(near_index):
    cam = Camera.look_at("c", eye=(0.0, -3.0, 0.0), target=(0.0, 0.0, 0.0), width=9, height=9, f_px=10.0)
    K, R, t = _cam_tensors(cam)
    centres = [[0.0, -1.0, 0.0], [0.0, 1.0, 0.0]]  # 2 m and 4 m from the camera
    if near_index == 1:
        centres = centres[::-1]
    means = torch.tensor([centres], dtype=torch.float64)
    P = (torch.eye(3, dtype=torch.float64) / 0.15 ** 2).expand(1, 2, 3, 3)
    feats = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]], dtype=torch.float64)
    if near_index == 1:
        feats = feats.flip(1)  # the near primitive always carries (1, 0)
    bg = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    dens = torch.tensor([[200.0, 200.0]], dtype=torch.float64)
    latent, alpha, depth = raycast_reference(means, P, dens, feats, bg, K, R, t, 9, 9)
    c = latent[0, :, 4, 4]
    assert c[0] > 0.99 and c[1] < 0.01, c  # the far primitive is hidden
    assert abs(float(depth[0, 0, 4, 4]) - 2.0) < 0.05
    assert float(alpha.min()) >= 0.0 and float(alpha.max()) <= 1.0
    # background gets exactly the remaining transmittance: with zero features latent = (1 - alpha) * bg
    latent0, alpha0, _ = raycast_reference(means, P, dens * 0.01, torch.zeros_like(feats), bg, K, R, t, 9, 9)
    torch.testing.assert_close(latent0, ((1 - alpha0) * 0.5).expand_as(latent0))
    assert 0.05 < float(alpha0[0, 0, 4, 4]) < 0.95
    # and the weights of a partially transparent pixel sum to alpha: latent(f=1, bg=0) == alpha
    ones = torch.ones_like(feats)
    latent1, alpha1, _ = raycast_reference(means, P, dens * 0.01, ones, torch.zeros_like(bg), K, R, t, 9, 9)
    torch.testing.assert_close(latent1[:, :1], alpha1)


@pytest.mark.parametrize("mode", MODES)
def test_degenerate_primitives_stay_finite(mode):
    # camera at the origin looking down +y: one bone behind it, one zero-length bone, one around the camera
    cam = Camera.look_at("c", eye=(0.0, 0.0, 0.0), target=(0.0, 1.0, 0.0), width=8, height=6, f_px=6.0)
    K, R, t = _cam_tensors(cam)
    joints = torch.tensor([[[0.0, -2.0, 0.0], [0.1, -2.5, 0.1], [0.2, 1.0, 0.0], [0.2, 1.0, 0.0],
                            [-0.01, 0.0, 0.0], [0.01, 0.0, 0.01]]], dtype=torch.float64, requires_grad=True)
    widths = torch.tensor([0.05, 0.04, 0.03], dtype=torch.float64, requires_grad=True)
    feats = torch.randn(1, 3, 4, dtype=torch.float64, requires_grad=True)
    means, P = bone_gaussians(joints, [(0, 1), (2, 3), (4, 5)], widths)
    dens = torch.full((1, 3), 30.0, dtype=torch.float64)
    latent, alpha, depth = raycast_reference(means, P, dens, feats, torch.zeros(1, 4, dtype=torch.float64),
                                             K, R, t, 6, 8, mode=mode)
    for x in (latent, alpha, depth):
        assert torch.isfinite(x).all()
    assert float(alpha.detach().min()) >= 0.0 and float(alpha.detach().max()) <= 1.0
    (latent.sum() + alpha.sum() + depth.sum()).backward()
    for x in (joints, widths, feats):
        assert torch.isfinite(x.grad).all()
    # a primitive entirely behind the camera is invisible
    behind = raycast_reference(means[:, :1], P[:, :1], dens[:, :1], feats[:, :1].detach(),
                               torch.zeros(1, 4, dtype=torch.float64), K, R, t, 6, 8, mode=mode)[1]
    assert float(behind.detach().max()) < 1e-6


@pytest.mark.parametrize("mode", MODES)
def test_chunked_equals_unchunked(mode):
    torch.manual_seed(1)
    B, N, C, H, W = 2, 5, 3, 7, 9
    means = (torch.randn(B, N, 3) * 0.3).double().requires_grad_(True)
    A = torch.randn(B, N, 3, 3).double() * 3
    P = (A @ A.transpose(-1, -2) + 20 * torch.eye(3)).requires_grad_(True)
    dens = (torch.rand(B, N) * 20 + 5).double()
    feats = torch.randn(1, N, C).double().requires_grad_(True)
    bg = torch.randn(B, C).double()
    cams = [Camera.look_at(f"c{i}", eye=(0.3 * i, -2.5, 0.4), target=(0, 0, 0), width=W, height=H, f_px=8.0)
            for i in range(B)]
    K = torch.as_tensor(np.stack([c.K for c in cams]))
    R = torch.as_tensor(np.stack([c.R for c in cams]))
    t = torch.as_tensor(np.stack([c.t for c in cams]))
    outs, grads = [], []
    for chunk in (5, 10 ** 6):
        out = raycast_reference(means, P, dens, feats, bg, K, R, t, H, W, mode=mode, chunk_rays=chunk)
        g = torch.autograd.grad(sum((o * torch.linspace(-1, 1, o.numel(), dtype=o.dtype).reshape(o.shape)).sum()
                                    for o in out), (means, P, feats))
        outs.append(out)
        grads.append(g)
    for a, b in zip(outs[0] + grads[0], outs[1] + grads[1]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    # batching is per frame: frame 1 alone renders the same as in the batch
    alone = raycast_reference(means[1:], P[1:], dens[1:], feats, bg[1:], K[1:], R[1:], t[1:], H, W, mode=mode)
    torch.testing.assert_close(alone[0], outs[1][0][1:], rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------- whole-skeleton integration
def test_posed_skeleton_alpha_where_joints_project():
    joints = _posed_body25b()
    cams = [Camera.look_at("front", eye=(0.3, -3.5, 1.1), target=(0.0, 0.0, 0.9), width=96, height=128, fov_deg=45),
            Camera.look_at("side", eye=(3.0, 0.5, 1.3), target=(0.0, 0.0, 0.9), width=96, height=128, fov_deg=45)]
    prims = BonePrimitives(BODY_25B)
    n = len(BODY_25B.bones)
    feats = torch.randn(1, n, 16)
    jt = torch.as_tensor(joints, dtype=torch.float32)[None].repeat(2, 1, 1)
    out = render_latent(jt, BODY_25B, cams, feats, primitives=prims, background=torch.zeros(16))
    assert out["latent"].shape == (2, 16, 128, 96) and out["alpha"].shape == (2, 1, 128, 96)
    inner = ["LShoulder", "RShoulder", "LElbow", "LKnee", "RKnee", "LHip", "RHip", "Neck"]
    for b, cam in enumerate(cams):
        alpha = out["alpha"][b, 0].detach().numpy()
        depth = out["depth"][b, 0].detach().numpy()
        for name in inner:
            u, v = np.round(cam.project(joints[BODY_25B.index(name)])).astype(int)
            assert alpha[v, u] > 0.5, (cam.name, name, alpha[v, u])
            cam_depth = np.linalg.norm(joints[BODY_25B.index(name)] - cam.center)
            # the visible surface is at or in front of the joint (a joint may be hidden behind the torso)
            assert cam_depth - 0.5 < depth[v, u] < cam_depth + 0.1, (cam.name, name, depth[v, u], cam_depth)
        # the person covers a modest part of the image; corners are empty
        assert 0.03 < (alpha > 0.5).mean() < 0.5
        assert max(alpha[0, 0], alpha[0, -1], alpha[-1, 0], alpha[-1, -1]) < 1e-3
    # both modes produce a sane silhouette at a rescaled (half) resolution
    roch = render_latent(jt[:1], BODY_25B, cams[0], feats, primitives=prims, mode="rochette", height=64, width=48)
    assert roch["alpha"].shape == (1, 1, 64, 48)
    u, v = np.round(cams[0].scaled(0.5).project(joints[BODY_25B.index("LHip")])).astype(int)
    assert float(roch["alpha"].detach()[0, 0, v, u]) > 0.5
    # gradients reach the learnable widths and densities
    out["latent"].square().mean().backward()
    assert torch.isfinite(prims.log_widths.grad).all() and prims.log_widths.grad.abs().sum() > 0
    assert prims.log_densities.grad.abs().sum() > 0


def test_distorted_camera_uses_undistorted_rays():
    joints = _posed_body25b()
    base = Camera.look_at("front", eye=(0.0, -3.0, 0.9), target=(0.0, 0.0, 0.9), width=64, height=80, fov_deg=60)
    dist = base.copy(dist=np.array([-0.25, 0.05, 0.0, 0.0, 0.0]))
    feats = torch.ones(1, len(BODY_25B.bones), 2)
    jt = torch.as_tensor(joints)[None]
    plain = render_latent(jt, BODY_25B, base, feats)["alpha"][0, 0].numpy()
    warped = render_latent(jt, BODY_25B, dist, feats)["alpha"][0, 0].numpy()
    # the same joint lands where the *distorted* projection says, not where the pinhole one does
    j = joints[BODY_25B.index("LWrist")]
    u, v = np.round(dist.project(j)).astype(int)
    assert warped[v, u] > 0.3
    assert not np.allclose(plain, warped, atol=1e-3)
    with pytest.raises(MarionetteError, match="ray directions"):
        render_latent(jt, BODY_25B, dist, feats, backend="kernel")


# ---------------------------------------------------------------------- errors and dispatch
def test_nan_joint_is_a_clear_error():
    joints = torch.as_tensor(_posed_body25b())[None].repeat(3, 1, 1)
    joints[2, BODY_25B.index("LKnee"), 1] = float("nan")
    cam = Camera.look_at("c", eye=(0, -3, 1), target=(0, 0, 1), width=8, height=8)
    with pytest.raises(MarionetteError, match=r"'LKnee'.*frame 2"):
        render_latent(joints, BODY_25B, cam, torch.zeros(1, len(BODY_25B.bones), 2))


def test_bad_inputs_are_clear_errors(monkeypatch):
    joints = torch.as_tensor(_posed_body25b())[None]
    cam = Camera.look_at("c", eye=(0, -3, 1), target=(0, 0, 1), width=8, height=8)
    n = len(BODY_25B.bones)
    with pytest.raises(MarionetteError, match="features"):
        render_latent(joints, BODY_25B, cam, torch.zeros(1, n + 1, 2))
    with pytest.raises(MarionetteError, match="joints must be"):
        render_latent(joints[:, :5], BODY_25B, cam, torch.zeros(1, n, 2))
    with pytest.raises(MarionetteError, match="mode"):
        render_latent(joints, BODY_25B, cam, torch.zeros(1, n, 2), mode="paper")
    with pytest.raises(MarionetteError, match="aspect"):
        render_latent(joints, BODY_25B, cam, torch.zeros(1, n, 2), height=8, width=4)
    with pytest.raises(MarionetteError, match="2 cameras for 1 frames"):
        render_latent(joints, BODY_25B, [cam, cam], torch.zeros(1, n, 2))
    monkeypatch.setenv("MARIONETTE_RENDER_BACKEND", "cuda-magic")
    with pytest.raises(MarionetteError, match="MARIONETTE_RENDER_BACKEND"):
        render_latent(joints, BODY_25B, cam, torch.zeros(1, n, 2))


def test_backend_dispatch(monkeypatch):
    joints = torch.as_tensor(_posed_body25b())[None]
    cam = Camera.look_at("c", eye=(0, -3, 1), target=(0, 0, 1), width=12, height=10)
    feats = torch.randn(1, len(BODY_25B.bones), 3, dtype=torch.float64)
    reference = render_latent(joints, BODY_25B, cam, feats, backend="reference")
    calls = []

    class FakeKernels:
        @staticmethod
        def available(device):
            return True

        @staticmethod
        def raycast_kernel(*args):
            calls.append(args)
            return raycast_reference(*args[:10], mode=args[10])

    monkeypatch.delenv("MARIONETTE_RENDER_BACKEND")
    # no kernels installed (or broken): auto falls back silently, "kernel" is a clear error
    monkeypatch.setattr(raycast_module, "_kernels", lambda: None)
    torch.testing.assert_close(render_latent(joints, BODY_25B, cam, feats)["latent"], reference["latent"])
    with pytest.raises(MarionetteError, match="not available"):
        render_latent(joints, BODY_25B, cam, feats, backend="kernel")
    # kernels present: auto and kernel use them, reference (argument or env var) does not
    monkeypatch.setattr(raycast_module, "_kernels", lambda: FakeKernels)
    out = render_latent(joints, BODY_25B, cam, feats)
    assert len(calls) == 1 and calls[0][8:] == (10, 12, "transmittance")
    torch.testing.assert_close(out["latent"], reference["latent"])
    render_latent(joints, BODY_25B, cam, feats, backend="kernel", mode="rochette")
    assert len(calls) == 2 and calls[1][10] == "rochette"
    monkeypatch.setenv("MARIONETTE_RENDER_BACKEND", "reference")
    render_latent(joints, BODY_25B, cam, feats)
    assert len(calls) == 2
    K, R, t = _cam_tensors(cam)
    means, P = bone_gaussians(joints, BODY_25B.bones, torch.as_tensor(BODY_25B.default_widths, dtype=torch.float64))
    dens = torch.full((1, len(BODY_25B.bones)), 30.0, dtype=torch.float64)
    lat = raycast(means, P, dens, feats, torch.zeros(1, 3, dtype=torch.float64), K, R, t, 10, 12, backend="auto")[0]
    assert len(calls) == 3
    torch.testing.assert_close(lat, reference["latent"])


def test_autocast_does_not_lower_precision():
    joints, bones, widths, densities, features, background, cam = _small_scene(dtype=torch.float32)
    K, R, t = _cam_tensors(cam, dtype=torch.float32)
    means, P = bone_gaussians(joints, bones, widths)
    plain = raycast_reference(means, P, densities[None], features, background, K, R, t, 5, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = raycast_reference(means, P, densities[None], features, background, K, R, t, 5, 6)
    for a, b in zip(plain, mixed):
        assert b.dtype == torch.float32
        torch.testing.assert_close(a, b)


def test_pixel_directions_match_camera_rays():
    cam = Camera(name="skew", K=[[40.0, 1.5, 9.3], [0, 38.0, 6.1], [0, 0, 1]],
                 R=Camera.look_at("x", eye=(1, -2, 1), target=(0, 0, 0.5), width=4, height=4).R,
                 t=[0.1, -0.2, 2.5], width=17, height=11)
    origin, rays = cam.pixel_rays(undistort=False)
    K, R, t = _cam_tensors(cam)
    d = pixel_directions(K, R, cam.height, cam.width)[0].reshape(cam.height, cam.width, 3)
    np.testing.assert_allclose(d.numpy(), rays, atol=1e-12)
    np.testing.assert_allclose(camera_origins(R, t)[0].numpy(), origin, atol=1e-12)
