"""engine.motion.resample: quaternion splines, root splines, skeleton resampling with exact bone lengths, gap filling."""

from __future__ import annotations

import numpy as np
import pytest

from engine import MarionetteError
from engine.cli import main as cli_main
from engine.geometry.rotations import quat_between, quat_exp, quat_log, quat_mul, quat_rotate
from engine.motion.resample import (bone_length_drift, fill_gaps, resample_positions, resample_rotations,
                                    resample_skeleton, skeleton_from_directions)
from engine.io.skeleton_file import SkeletonSequence, load_skeleton, save_skeleton
from engine.body.joint_sets import get_joint_set


def rigid_motion(js, T=240, fps=60.0, seed=0):
    """Smooth motion with exactly constant bone lengths (FK of swinging bone directions)."""
    rng = np.random.default_rng(seed)
    t = np.arange(T) / fps
    L = rng.uniform(0.05, 0.4, js.num_joints)
    L[js.root] = 0
    base = rng.normal(size=(js.num_joints, 3))
    base /= np.linalg.norm(base, axis=-1, keepdims=True)
    dirs = np.zeros((T, js.num_joints, 3))
    for j in range(js.num_joints):
        a = rng.normal(size=3) * 0.8
        dirs[:, j] = quat_rotate(quat_exp(a[None] * np.sin(2 * np.pi * 1.1 * t + j)[:, None]), base[j][None])
    root = np.stack([0.8 * t, 0.05 * np.sin(4 * np.pi * t), 1 + 0.03 * np.cos(4 * np.pi * t)], -1)
    return skeleton_from_directions(root, dirs, L, js.parents), L


def angle_between(q1, q2):
    return 2 * np.arccos(np.clip(np.abs(np.sum(q1 * q2, -1)), 0, 1))


def test_quaternion_helpers():
    rng = np.random.default_rng(1)
    v = rng.normal(size=(50, 3))
    v *= (np.pi * 0.99 / np.linalg.norm(v, axis=-1, keepdims=True)) * rng.uniform(0, 1, (50, 1))
    assert np.allclose(quat_log(quat_exp(v)), v, atol=1e-9)
    assert np.allclose(quat_log(quat_exp(np.zeros((1, 3)))), 0)
    a, b = rng.normal(size=(50, 3)), rng.normal(size=(50, 3))
    q = quat_between(a, b)
    bn = b / np.linalg.norm(b, axis=-1, keepdims=True)
    assert np.allclose(quat_rotate(q, a / np.linalg.norm(a, axis=-1, keepdims=True)), bn, atol=1e-9)
    # opposite vectors still give a valid half turn
    q = quat_between(np.array([[0, 0, 1.0]]), np.array([[0, 0, -2.0]]))
    assert np.allclose(quat_rotate(q, np.array([[0, 0, 1.0]])), [[0, 0, -1]], atol=1e-9)


def test_rotation_spline_exact_for_constant_angular_velocity_and_through_keys():
    t = np.sort(np.random.default_rng(2).uniform(0, 2, 12))  # uneven keys
    axis = np.array([0.3, 0.5, 0.8]) / np.linalg.norm([0.3, 0.5, 0.8])
    q = quat_exp(axis[None] * (2.1 * t)[:, None])
    t_out = np.linspace(t[0], t[-1], 301)
    r = resample_rotations(q, t, t_out)
    assert angle_between(r, quat_exp(axis[None] * (2.1 * t_out)[:, None])).max() < 1e-6  # arccos resolution
    # keys reproduced, output unit length
    rk = resample_rotations(q, t, t)
    assert angle_between(rk, q).max() < 1e-7
    assert np.allclose(np.linalg.norm(r, axis=-1), 1)


def test_rotation_spline_is_c1_and_beats_slerp():
    T = 200
    t = np.arange(T) / 60.0
    truth = quat_exp(np.stack([np.sin(3 * t), np.cos(2 * t), 0.5 * np.sin(5 * t)], -1) * 0.9)
    keys = np.arange(0, T, 8)
    r = resample_rotations(truth[keys], t[keys], t[: keys[-1] + 1])
    err = angle_between(r, truth[: keys[-1] + 1])
    # slerp baseline (linear in the exponential map between keys)
    lin = np.empty_like(r)
    for i in range(keys[-1] + 1):
        k = min(np.searchsorted(keys, i, side="right") - 1, len(keys) - 2)
        u = (i - keys[k]) / (keys[k + 1] - keys[k])
        q0 = truth[keys[k]]
        d = quat_log(quat_mul(q0 * [1, -1, -1, -1], truth[keys[k + 1]]))
        lin[i] = quat_mul(q0, quat_exp(u * d))
    assert err.mean() < 0.5 * angle_between(lin, truth[: keys[-1] + 1]).mean()
    # C1: angular velocity from finite differences has no jumps at keys
    dense_t = np.linspace(t[keys[2]] - 1e-4, t[keys[2]] + 1e-4, 3)
    d = resample_rotations(truth[keys], t[keys], dense_t)
    w_left = quat_log(quat_mul(d[0] * [1, -1, -1, -1], d[1]))
    w_right = quat_log(quat_mul(d[1] * [1, -1, -1, -1], d[2]))
    # a kink (slerp) changes the velocity by O(1) across a key; a C1 curve only by O(step)
    assert np.linalg.norm(w_left - w_right) < 1e-2 * np.linalg.norm(w_left)


def test_gaps_bridged_up_to_max_gap_and_hold():
    t = np.arange(20) / 10.0
    q = quat_exp(np.stack([t, 0 * t, 0 * t], -1))[:, None]
    q[5:8] = np.nan  # 0.3 s missing
    r = resample_rotations(q, t, t, max_gap=0.35)
    assert np.isfinite(r).all()
    assert angle_between(r[6, 0], quat_exp(np.array([0.6, 0, 0]))) < 1e-6
    r = resample_rotations(q, t, t, max_gap=0.2)
    assert np.isnan(r[5:8]).all() and np.isfinite(r[:5]).all()
    r = resample_rotations(q, t, np.array([-1.0, 3.0]))
    assert np.isnan(r).all()
    r = resample_rotations(q, t, np.array([-1.0, 3.0]), extrapolate="hold")
    assert np.allclose(np.abs(np.sum(r[1, 0] * q[-1, 0])), 1)


def test_position_spline_exact_for_quadratics_on_uneven_keys():
    t = np.sort(np.random.default_rng(4).uniform(0, 3, 15))
    f = lambda x: np.stack([x ** 2 - x, 3 * x + 1, -0.5 * x ** 2], -1)  # noqa: E731
    t_out = np.linspace(t[0], t[-1], 97)
    assert np.allclose(resample_positions(f(t), t, t_out), f(t_out), atol=1e-9)


def test_validation_errors():
    q = quat_exp(np.zeros((3, 1, 3)))
    with pytest.raises(MarionetteError, match="strictly increasing"):
        resample_rotations(q, [0, 0, 1], [0.5])
    with pytest.raises(MarionetteError, match="3 frames"):
        resample_rotations(q, [0, 1], [0.5])
    with pytest.raises(MarionetteError, match=r"\[T, B, 4\]"):
        resample_rotations(np.zeros((3, 2, 3)), [0, 1, 2], [0.5])
    js = get_joint_set("COCO_17")
    seq = SkeletonSequence(np.zeros((3, 17, 3)) + np.arange(17)[None, :, None], js, 30.0)
    with pytest.raises(MarionetteError, match="fps"):
        resample_skeleton(seq, 0)
    with pytest.raises(MarionetteError, match="lengths"):
        resample_skeleton(seq, 60, lengths="average")


def test_upsample_skeleton_exact_lengths_keys_and_beats_linear():
    js = get_joint_set("BODY_25B")
    X, L = rigid_motion(js)
    keys = np.arange(0, len(X), 8)
    sub = SkeletonSequence(X[keys], js, 60.0, extras={"frame_indices": keys})
    up = resample_skeleton(sub, 60.0)
    fi = np.asarray(up.extras["frame_indices"])
    assert fi[0] == 0 and fi[-1] == keys[-1] and len(fi) == keys[-1] + 1
    out = up.joints.astype(np.float64)
    # bone lengths exact (float32 storage) at every frame, keys reproduced
    assert bone_length_drift(out, js.parents, L) < 1e-6
    assert np.abs(out[keys] - X[keys]).max() < 1e-5
    err = np.linalg.norm(out - X[: keys[-1] + 1], axis=-1).mean()
    lin = np.stack([np.stack([np.interp(fi, keys, X[keys, j, k]) for k in range(3)], -1)
                    for j in range(js.num_joints)], 1)
    err_lin = np.linalg.norm(lin - X[: keys[-1] + 1], axis=-1).mean()
    assert err < 0.5 * err_lin
    assert bone_length_drift(lin, js.parents, L) > 1e-3  # the baseline shrinks bones between keys


def test_downsample_and_median_lengths():
    js = get_joint_set("SMPL_24")
    X, L = rigid_motion(js, T=121)
    seq = SkeletonSequence(X, js, 60.0)
    down = resample_skeleton(seq, 24.0)
    assert down.fps == 24.0 and down.num_frames == 49
    assert np.abs(down.joints[::2] - X[::5][:25]).max() < 1e-5  # times k/24 that hit input frames
    noisy = X + np.random.default_rng(5).normal(scale=0.005, size=X.shape)
    med = resample_skeleton(SkeletonSequence(noisy, js, 60.0), 60.0, lengths="median")
    assert bone_length_drift(med.joints, js.parents) < 1e-6


def test_fill_gaps_keeps_observed_and_fills_missing():
    js = get_joint_set("BODY_25B")
    X, L = rigid_motion(js, T=120)
    G = X.copy()
    wrist = js.index("LWrist")
    G[40:52, wrist] = np.nan  # 0.2 s
    G[80:120, js.index("RWrist")] = np.nan  # to the end: cannot be bridged
    G[10:13, js.root] = np.nan
    filled = fill_gaps(SkeletonSequence(G, js, 60.0), max_gap=0.5)
    ok = np.isfinite(G).all(-1)
    assert np.array_equal(filled.joints[ok], G[ok].astype(np.float32))
    assert np.linalg.norm(filled.joints[40:52, wrist] - X[40:52, wrist], axis=-1).max() < 0.02
    assert np.isnan(filled.joints[80:, js.index("RWrist")]).all()
    assert (filled.confidence[40:52, wrist] > 0).all()
    # a too-long gap stays missing
    short = fill_gaps(SkeletonSequence(G, js, 60.0), max_gap=0.1)
    assert np.isnan(short.joints[40:52, wrist]).all()


def test_cli_resample_round_trip(tmp_path, capsys):
    js = get_joint_set("COCO_17")
    X, _ = rigid_motion(js, T=31, fps=15.0)
    X[5:8, 9] = np.nan
    src = tmp_path / "in.npz"
    save_skeleton(src, SkeletonSequence(X, js, 15.0, up_axis="Y"))
    out = tmp_path / "out.npz"
    assert cli_main(["resample", str(src), "--fps", "60", "-o", str(out)]) == 0
    seq = load_skeleton(out)
    assert seq.fps == 60 and seq.num_frames == 121 and seq.up_axis == "Y" and not seq.missing.any()
    assert cli_main(["resample", str(src), "--fill-only", "-o", str(tmp_path / "f.npz")]) == 0
    assert load_skeleton(tmp_path / "f.npz").num_frames == 31
    assert cli_main(["resample", str(src), "-o", str(tmp_path / "x.npz")]) == 1
    assert "--fps is required" in capsys.readouterr().err
    assert cli_main(["resample", str(tmp_path / "nope.npz"), "--fps", "30", "-o", str(tmp_path / "y.npz")]) == 1
    assert not (tmp_path / "x.npz").exists() and not (tmp_path / "y.npz").exists()


def test_joints_below_a_never_seen_joint_are_kept():
    """COCO-17 hangs the arm and leg off the shoulders: a shoulder never seen must not lose them."""
    js = get_joint_set("COCO_17")
    X, _ = rigid_motion(js, T=30, fps=30.0)
    X[:, js.index("left_shoulder")] = np.nan
    up = resample_skeleton(SkeletonSequence(X, js, 30.0), 60.0)
    missing = up.missing.any(0)
    assert missing[js.index("left_shoulder")] and missing.sum() == 1
    assert np.abs(up.joints[::2] - X[: up.num_frames // 2 + 1])[:, ~missing].max() < 1e-5
    G = X.copy()
    G[10:14, js.index("left_elbow")] = np.nan  # its parent (the shoulder) is never seen
    filled = fill_gaps(SkeletonSequence(G, js, 30.0))
    assert not filled.missing[:, js.index("left_elbow")].any()
