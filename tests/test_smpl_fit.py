"""SMPL fitting: correspondence, priors, analytic Jacobians, the batched fit and its failure handling."""

import numpy as np
import pytest
import torch

from engine import MarionetteError
from engine.body.joint_sets import JointSet, get_joint_set
from engine.body.smpl.fit import FitOptions, _LMModel, _Problem, _inv_right_jacobian, fit_smpl
from engine.synthetic.smpl import make_synthetic_motion, synthetic_observations
from engine.geometry.rotations import matrix_to_axis_angle_torch as matrix_to_axis_angle
from engine.body.smpl.joints import SUPPORTED_SETS, correspondence
from engine.synthetic.smpl import make_synthetic_smpl_model
from engine.geometry.rotations import axis_angle_to_matrix_torch as batch_rodrigues
from engine.body.smpl.prior import GMMPosePrior, bending_penalty, limit_penalty


@pytest.fixture(scope="module")
def model():
    return make_synthetic_smpl_model(3, num_vertices=1500)


@pytest.fixture(scope="module")
def motion():
    return make_synthetic_motion(24, fps=30.0, seed=5)


def _mpjpe(a, b):
    ok = np.isfinite(b).all(-1)
    return float(np.linalg.norm(a - b, axis=-1)[ok].mean())


@pytest.mark.parametrize("name", SUPPORTED_SETS)
def test_correspondence_covers_every_set(name):
    js = get_joint_set(name)
    corr = correspondence(js)
    assert corr.A.shape[0] == js.num_joints
    assert corr.used.sum() >= 12
    assert "->" in corr.describe()
    if "left_hip" in js.canonical:  # detector hips are never SMPL's hips
        row = corr.A[js.canonical.index("left_hip")]
        assert [corr.point_names[p] for p in np.nonzero(row)[0]] == ["det_left_hip"]


def test_unknown_joint_set_has_no_correspondence(model, motion):
    custom = JointSet("MY_SET", ("a", "b"), ("pelvis", "neck"), (-1, 0))
    with pytest.raises(MarionetteError, match="no SMPL correspondence"):
        correspondence(custom)
    with pytest.raises(MarionetteError, match="no SMPL correspondence"):
        fit_smpl(np.zeros((3, 2, 3)), custom, model)


def test_priors():
    pose = torch.zeros(2, 24, 3)
    assert float(limit_penalty(pose).sum()) == 0.0
    pose[1, 4, 0] = -0.5  # knee hyper-extended
    assert float(limit_penalty(pose)[1]) > 0
    assert float(bending_penalty(pose)[1]) > float(bending_penalty(pose)[0])
    bent = torch.zeros(1, 24, 3)
    bent[0, 4, 0] = 1.0  # knee bent the right way: no bending penalty
    assert float(bending_penalty(bent)) == 0.0


def test_rotation_helpers():
    g = torch.Generator().manual_seed(0)
    aa = torch.randn(200, 3, generator=g, dtype=torch.float64)
    aa = aa / aa.norm(dim=-1, keepdim=True) * torch.rand(200, 1, generator=g, dtype=torch.float64) * 3.1
    assert torch.allclose(matrix_to_axis_angle(batch_rodrigues(aa)), aa, atol=1e-6)
    d = torch.zeros(200, 3, dtype=torch.float64)
    Ji = _inv_right_jacobian(aa)
    for k in range(3):
        d.zero_()
        d[:, k] = 1e-6
        fd = (matrix_to_axis_angle(batch_rodrigues(aa) @ batch_rodrigues(d)) - aa) / 1e-6
        assert torch.allclose(fd, Ji[..., k], atol=1e-4)


def test_analytic_jacobians_match_finite_differences(model, motion):
    poses, trans, betas = motion
    js = get_joint_set("BODY_25")
    kp, _ = synthetic_observations(model, js, poses[:3], trans[:3], betas)
    pb = _Problem(kp, np.ones(kp.shape[:2]), js, model, FitOptions(device="cpu"))
    pb.dtype = torch.float64
    pb.smpl.__init__(model, "cpu", torch.float64)
    pb.ev.__init__(pb.corr, model.landmarks, "cpu", torch.float64)
    lm = _LMModel(pb)
    dt = torch.float64
    aa = torch.tensor(poses[:3], dtype=dt).reshape(3, 24, 3)
    tr = torch.tensor(trans[:3], dtype=dt)
    b = torch.tensor(betas, dtype=dt)
    off = torch.tensor([[0.01, -0.02, 0.005]], dtype=dt)
    out = lm.forward(aa, tr, b, off, jac=True)
    eps = 1e-6
    for joint, axis in [(0, 0), (1, 2), (4, 0), (15, 1), (18, 1), (10, 2)]:
        d = torch.zeros(3, 24, 3, dtype=dt)
        d[:, joint, axis] = eps
        aa2 = matrix_to_axis_angle(batch_rodrigues(aa) @ batch_rodrigues(d))
        fd = (lm.forward(aa2, tr, b, off)["points"] - out["points"]) / eps
        assert torch.allclose(fd, out["J_pts"][..., joint * 3 + axis], atol=1e-5)
    b2 = b.clone()
    b2[3] += 1.0  # points are affine in the betas
    assert torch.allclose(lm.forward(aa, tr, b2, off)["points"] - out["points"], out["B_pts"][..., 3], atol=1e-9)
    off2 = off.clone()
    off2[0, 1] += eps
    fd = (lm.forward(aa, tr, b, off2)["points"] - out["points"]) / eps
    assert torch.allclose(fd, out["O_pts"][..., 1], atol=1e-6)


def test_noise_free_fit_recovers_the_motion(model, motion):
    poses, trans, betas = motion
    js = get_joint_set("BODY_25")
    kp, true_joints = synthetic_observations(model, js, poses, trans, betas)
    res = fit_smpl(kp, js, model, options=FitOptions(iters=25))
    assert res.poses.shape == (24, 72) and res.trans.shape == (24, 3) and res.betas.shape == (10,)
    assert not res.failed.any()
    assert _mpjpe(res.keypoints, kp) < 0.010
    assert np.nanmax(res.fit_error) < 0.02
    # body joints (not the hands, whose rotation nothing observes) land near the truth
    assert np.linalg.norm(res.joints[:, :22] - true_joints[:, :22], axis=-1).mean() < 0.02


@pytest.mark.parametrize("name", ["COCO_17", "H36M_17", "BODY_25B", "PANOPTIC_19"])
def test_fit_other_joint_sets(model, motion, name):
    poses, trans, betas = motion
    js = get_joint_set(name)
    kp, _ = synthetic_observations(model, js, poses[:8], trans[:8], betas, noise=0.003, seed=1)
    res = fit_smpl(kp, js, model, options=FitOptions(iters=12))
    clean, _ = synthetic_observations(model, js, poses[:8], trans[:8], betas)
    assert _mpjpe(res.keypoints, clean) < 0.02


def test_missing_joints_nans_and_failed_frames(model, motion):
    poses, trans, betas = motion
    js = get_joint_set("BODY_25")
    kp, _ = synthetic_observations(model, js, poses[:10], trans[:10], betas, drop=0.1, seed=2)
    kp[4, 3:] = np.nan  # frame 4: almost everything missing
    kp[6, 0, 0] = np.inf  # a non-finite coordinate is just a missing joint
    conf = np.ones(kp.shape[:2])
    conf[7, 2] = np.nan
    res = fit_smpl(kp, js, model, confidence=conf, options=FitOptions(iters=12))
    assert res.failed.tolist() == [i == 4 for i in range(10)]
    assert res.failure_reason[4] == "too few joints"
    assert np.allclose(res.poses[4], res.poses[3]) and np.allclose(res.trans[4], res.trans[3])
    assert np.isfinite(res.poses).all() and np.isfinite(res.joints).all()
    assert any("fewer than" in m for m in res.messages)
    with pytest.raises(MarionetteError, match="every frame"):
        fit_smpl(np.full((3, 25, 3), np.nan), js, model)
    with pytest.raises(MarionetteError, match="expected shape"):
        fit_smpl(np.zeros((3, 17, 3)), js, model)


def test_divergent_frame_is_detected_and_replaced(model, motion):
    poses, trans, betas = motion
    js = get_joint_set("BODY_25")
    kp, _ = synthetic_observations(model, js, poses[:8], trans[:8], betas)
    rng = np.random.default_rng(0)
    kp[5] = kp[5].mean(0) + rng.normal(scale=0.8, size=kp[5].shape)  # no body can explain this frame
    res = fit_smpl(kp, js, model, options=FitOptions(iters=10))
    assert res.failed[5] and res.failure_reason[5] == "diverged"
    assert not res.failed[[0, 1, 2, 3, 4, 6, 7]].any()
    assert np.allclose(res.poses[5], res.poses[4])
    assert any("diverged" in m for m in res.messages)


def test_gmm_prior_file(model, motion, tmp_path):
    rng = np.random.default_rng(0)
    K = 3
    means = rng.normal(scale=0.1, size=(K, 69))
    A = rng.normal(size=(K, 69, 69)) * 0.05
    covars = A @ A.transpose(0, 2, 1) + 0.05 * np.eye(69)
    np.savez(tmp_path / "gmm.npz", means=means, covars=covars, weights=np.array([0.5, 0.3, 0.2]))
    gmm = GMMPosePrior.load(tmp_path / "gmm.npz")
    x = torch.tensor(means[1:2], dtype=torch.float32)
    assert float(gmm(x)) <= float(gmm(x + 0.5))
    np.savez(tmp_path / "bad.npz", means=means[:, :10], covars=covars, weights=np.ones(K))
    with pytest.raises(MarionetteError, match="means"):
        GMMPosePrior.load(tmp_path / "bad.npz")
    poses, trans, betas = motion
    js = get_joint_set("COCO_17")
    kp, _ = synthetic_observations(model, js, poses[:6], trans[:6], betas)
    res = fit_smpl(kp, js, model, options=FitOptions(iters=8, gmm=gmm))
    assert np.isfinite(res.poses).all() and _mpjpe(res.keypoints, kp) < 0.03


@pytest.mark.slow
def test_lbfgs_optimizer_path(model, motion):
    """The autograd + L-BFGS alternative (slow: torch.optim's first import alone takes seconds)."""
    poses, trans, betas = motion
    js = get_joint_set("BODY_25")
    kp, _ = synthetic_observations(model, js, poses[:6], trans[:6], betas)
    res = fit_smpl(kp, js, model, options=FitOptions(iters=30, optimizer="lbfgs"))
    assert np.isfinite(res.poses).all() and _mpjpe(res.keypoints, kp) < 0.05
    with pytest.raises(MarionetteError, match="optimizer"):
        fit_smpl(kp, js, model, options=FitOptions(optimizer="adam"))
