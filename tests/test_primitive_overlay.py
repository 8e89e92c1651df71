"""Geometry of the primitive overlay (engine.scene.overlay): wireframe ellipsoids of Gaussians."""

from __future__ import annotations

import numpy as np
import pytest

from engine import MarionetteError
from engine.body.joint_sets import BODY_25, BODY_25B, get_joint_set, map_joints
from engine.scene.overlay import bone_sides, ellipsoid_wireframe, primitive_bones


def _random_gaussians(n=7, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(n, 3, 3))
    cov = A @ np.swapaxes(A, 1, 2) * 0.01 + np.eye(3) * 1e-4
    return rng.normal(size=(n, 3)), np.linalg.inv(cov), cov


@pytest.mark.parametrize("sigma", [1.0, 2.0])
def test_every_point_lies_at_sigma_mahalanobis_distance(sigma):
    means, prec, _ = _random_gaussians()
    seg = ellipsoid_wireframe(means, prec, sigma=sigma, segments=16)
    assert seg.shape == (7, 3 * 16, 2, 3)
    d = seg - means[:, None, None, :]
    m2 = np.einsum("nsei,nij,nsej->nse", d, prec, d)
    np.testing.assert_allclose(np.sqrt(m2), sigma, rtol=1e-9)
    # consecutive segments join up: each ellipse is a closed loop
    rings = seg.reshape(7, 3, 16, 2, 3)
    np.testing.assert_allclose(rings[:, :, 1:, 0], rings[:, :, :-1, 1])
    np.testing.assert_allclose(rings[:, :, 0, 0], rings[:, :, -1, 1], atol=1e-12)


def test_rings_are_the_principal_ellipses():
    means, prec, cov = _random_gaussians(seed=1)
    seg = ellipsoid_wireframe(means, prec, sigma=1.0, segments=64)
    rings = seg.reshape(len(means), 3, 64, 2, 3)[:, :, :, 0]        # [N, 3 ellipses, 64 points, 3]
    lam, vec = np.linalg.eigh(cov)                                   # ascending: vec[:, :, 2] the longest axis
    axes = vec[:, :, ::-1]                                           # longest first, as the rings are built
    for e, (a, b) in enumerate(((0, 1), (1, 2), (0, 2))):
        normal = axes[:, :, 3 - a - b]
        off = rings[:, e] - means[:, None]
        np.testing.assert_allclose(np.einsum("npi,ni->np", off, normal), 0.0, atol=1e-9)   # in the plane
        reach = np.abs(np.einsum("npi,ni->np", off, axes[:, :, a])).max(1)
        np.testing.assert_allclose(reach, np.sqrt(lam[:, ::-1][:, a]), rtol=1e-9)          # semi-axis length


def test_bone_gaussian_of_the_seed_paper():
    """One Gaussian per bone: sigma along the bone max(L/2, w), across it w (engine.neural.render.primitives)."""
    torch = pytest.importorskip("torch")
    from engine.neural.render.primitives import bone_gaussians

    joints = torch.tensor([[[0.0, 0.0, 1.0], [0.0, 0.0, 1.4], [0.3, 0.0, 1.0]]], dtype=torch.float64)
    means, prec = bone_gaussians(joints, [(0, 1), (0, 2)], torch.tensor([0.05, 0.2], dtype=torch.float64))
    seg = ellipsoid_wireframe(means[0].numpy(), prec[0].numpy(), sigma=2.0)
    pts = seg.reshape(2, -1, 3)
    ext = pts.max(1) - pts.min(1)
    np.testing.assert_allclose(ext[0], [0.2, 0.2, 0.8], rtol=1e-6)   # 2 sigma both ways: 4 * (w, w, L/2)
    np.testing.assert_allclose(ext[1], [0.8, 0.8, 0.8], rtol=1e-6)   # short bone (L/2 < w): a sphere of w


def test_refuses_bad_input():
    means, prec, _ = _random_gaussians(2)
    with pytest.raises(MarionetteError, match="positive definite"):
        ellipsoid_wireframe(means, -prec)
    with pytest.raises(MarionetteError, match="precisions"):
        ellipsoid_wireframe(means, prec[:1])
    with pytest.raises(MarionetteError, match="sigma"):
        ellipsoid_wireframe(means, prec, sigma=0)
    with pytest.raises(MarionetteError, match="finite"):
        ellipsoid_wireframe(means * np.nan, prec)
    assert ellipsoid_wireframe(np.zeros((0, 3)), np.zeros((0, 3, 3))).shape == (0, 3 * 24, 2, 3)
    with pytest.raises(MarionetteError, match="evenly"):
        primitive_bones(10, 3)


def test_bone_sides():
    sides = bone_sides(BODY_25B)
    names = [(BODY_25B.canonical[a], BODY_25B.canonical[b]) for a, b in BODY_25B.bones]
    for (a, b), s in zip(names, sides):
        if a.startswith("left_") and b.startswith("left_"):
            assert s == -1
        if a.startswith("right_") and b.startswith("right_"):
            assert s == 1
    smpl = get_joint_set("SMPL_24")
    assert set(bone_sides(smpl)) == {-1, 0, 1}


def test_demo_actor_wireframe():
    """The shipped actor (one or several Gaussians per bone) posed by its reference skeleton: one set of
    three ellipses per primitive, centred on ``actor.primitives``' means, every bone drawn."""
    pytest.importorskip("torch")
    from engine.data import demo_actor_path
    from engine.io.skeleton_file import load_skeleton
    from engine.neural.actor.model_file import load_actor
    from engine.scene.overlay import DEFAULT_SEGMENTS, actor_gaussians, actor_wireframe
    from engine.scene.shot import joints_for_actor

    actor, _ = load_actor(demo_actor_path(), device="cpu")
    skel = load_skeleton(demo_actor_path() / "reference_skeleton.npz")
    X, src = skel.joints[0].astype(np.float64), skel.joint_set.name
    seg, bones = actor_wireframe(actor, X, src, sigma=1.0)
    means, prec = actor_gaussians(actor, joints_for_actor(X, src, actor.joint_set.name, "test"))
    n = means.shape[0]
    assert seg.shape == (n * 3 * DEFAULT_SEGMENTS, 2, 3) and bones.shape == (len(seg),)
    assert set(bones.tolist()) == set(range(len(actor.bones)))
    centres = seg.reshape(n, 3 * DEFAULT_SEGMENTS * 2, 3).mean(1)
    np.testing.assert_allclose(centres, means, atol=1e-6)
    d = seg.reshape(n, -1, 3) - means[:, None]
    np.testing.assert_allclose(np.sqrt(np.einsum("npi,nij,npj->np", d, prec, d)), 1.0, rtol=1e-6)
    # from another joint set, mapped (and estimated) as rendering does
    if actor.joint_set.name == "BODY_25B" and src == "BODY_25B":
        body25 = map_joints(X, BODY_25B, BODY_25)
        seg25, _ = actor_wireframe(actor, body25, "BODY_25", sigma=1.0)
        assert seg25.shape == seg.shape
    bad = np.full_like(X, np.nan)                        # joints the actor's bones need are missing
    with pytest.raises(MarionetteError, match="arm: joint"):
        actor_wireframe(actor, bad, src, sigma=1.0, where="arm")
