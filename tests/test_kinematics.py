"""engine.body.kinematics and engine.body.smpl.motion: rotations, rigs, round trips, SMPL motion files (no bpy)."""

from __future__ import annotations

import numpy as np
import pytest

from engine import MarionetteError
from engine.body import kinematics as K
from engine.synthetic.skeleton_motion import synthetic_skeleton_motion
from engine.geometry import rotations
from engine.geometry import axes
from engine.motion import resample
from engine.body.smpl import motion as S
from engine.body.joint_sets import BODY_25, BODY_25B, COCO_17, H36M_17, JOINT_SETS, PANOPTIC_19, SMPL_24


def _random_rotations(n, seed=0):
    rng = np.random.default_rng(seed)
    return rotations.axis_angle_to_matrix(rng.normal(0, 1.5, (n, 3)))


def test_quaternion_matrix_round_trip():
    R = _random_rotations(500)
    q = rotations.matrix_to_quat(R)
    assert np.allclose(np.linalg.norm(q, axis=-1), 1)
    assert np.allclose(rotations.quat_to_matrix(q), R, atol=1e-12)
    # the half-turn cases that break naive conversions
    for axis in np.eye(3):
        Rh = rotations.axis_angle_to_matrix(np.pi * axis)
        assert np.allclose(rotations.quat_to_matrix(rotations.matrix_to_quat(Rh)), Rh, atol=1e-12)


def test_axis_angle_matches_scipy():
    Rotation = pytest.importorskip("scipy.spatial.transform").Rotation

    v = np.random.default_rng(1).normal(0, 1, (100, 3))
    assert np.allclose(rotations.axis_angle_to_matrix(v), Rotation.from_rotvec(v).as_matrix(), atol=1e-12)
    assert np.allclose(rotations.axis_angle_to_matrix(np.zeros(3)), np.eye(3))


def test_swing_matrix_is_minimal_and_handles_opposites():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(50, 3)), rng.normal(size=(50, 3))
    R = rotations.swing_matrix(a, b)
    an = a / np.linalg.norm(a, axis=-1, keepdims=True)
    bn = b / np.linalg.norm(b, axis=-1, keepdims=True)
    assert np.allclose(np.einsum("nij,nj->ni", R, an), bn, atol=1e-12)
    # minimal: the rotation axis is perpendicular to both
    assert np.allclose(np.einsum("nij,nj->ni", R, np.cross(an, bn)), np.cross(an, bn), atol=1e-12)
    Ro = rotations.swing_matrix(np.array([0.0, 0, 1]), np.array([0.0, 0, -1]))
    assert np.allclose(Ro @ [0, 0, 1], [0, 0, -1])


@pytest.mark.parametrize("axis", ["X", "Y", "Z", "-X", "-Y", "-Z"])
def test_up_axis_matrix(axis):
    C = axes.up_axis_matrix(axis)
    assert np.allclose(C @ C.T, np.eye(3)) and np.isclose(np.linalg.det(C), 1)
    up = np.zeros(3)
    up["XYZ".index(axis[-1])] = -1.0 if axis.startswith("-") else 1.0
    assert np.allclose(C @ up, [0, 0, 1])


def test_up_axis_y_matches_blender_convention():
    # Y-up files (glTF, SMPL) come in as (x, y, z) -> (x, -z, y)
    assert np.allclose(axes.up_axis_matrix("Y") @ [1, 2, 3], [1, -3, 2])
    with pytest.raises(MarionetteError, match="up axis"):
        axes.up_axis_matrix("W")


@pytest.mark.parametrize("joint_set", list(JOINT_SETS.values()), ids=list(JOINT_SETS))
def test_skeleton_round_trip_is_exact(joint_set):
    X = synthetic_skeleton_motion(joint_set, 120, seed=3)
    rig = K.build_skeleton_rig(X, joint_set)
    q, loc = K.skeleton_animation(rig, X)
    assert np.isfinite(q).all() and np.isfinite(loc).all()
    _, Y = K.forward_kinematics(rig, q, loc)
    assert np.abs(Y - X).max() < 1e-9
    # rest lengths are the (constant) observed lengths
    for c, p in enumerate(joint_set.parents):
        if p >= 0:
            assert np.isclose(np.linalg.norm(rig.tails[c] - rig.heads[c]), np.linalg.norm(X[0, c] - X[0, p]))


def test_rest_lengths_are_robust_medians():
    X = synthetic_skeleton_motion(BODY_25, 101, seed=4)
    knee, hip = BODY_25.index("RKnee"), BODY_25.index("RHip")
    true = np.linalg.norm(X[0, knee] - X[0, hip])
    X_bad = X.copy()
    X_bad[::10, knee] += np.array([0.0, 0.0, 0.5])  # a tenth of the frames are outliers
    rig = K.build_skeleton_rig(X_bad, BODY_25)
    assert abs(rig.lengths[knee] - true) < 0.02


def test_missing_joints_leave_gaps_not_zeros():
    X = synthetic_skeleton_motion(BODY_25, 60, seed=5)
    elbow, wrist, root = BODY_25.index("RElbow"), BODY_25.index("RWrist"), BODY_25.root
    X[10:20, elbow] = np.nan
    X[30, root] = np.nan
    rig = K.build_skeleton_rig(X, BODY_25)
    q, loc = K.skeleton_animation(rig, X)
    # the elbow's bone and the bone hanging off it have no key there; others do
    assert np.isnan(q[10:20, elbow]).all() and np.isnan(q[10:20, wrist]).all()
    assert np.isfinite(q[:10, elbow]).all() and np.isfinite(q[20:, wrist]).all()
    assert np.isfinite(q[10:20, BODY_25.index("LWrist")]).all()
    assert np.isnan(loc[30]).all() and np.isfinite(loc[29]).all()
    # frames with data still round-trip exactly
    _, Y = K.forward_kinematics(rig, q, loc)
    ok = np.isfinite(X).all(-1)
    ok[10:20] = False  # FK there uses rest rotations for the gap
    ok[30] = False
    assert np.abs(Y[ok] - X[ok]).max() < 1e-9


def test_root_never_seen_is_an_error():
    X = synthetic_skeleton_motion(COCO_17, 10)
    X[:, COCO_17.root] = np.nan
    with pytest.raises(MarionetteError, match="never observed"):
        K.build_skeleton_rig(X, COCO_17)
    with pytest.raises(MarionetteError, match="zero frames"):
        K.build_skeleton_rig(np.zeros((0, 17, 3)), COCO_17)
    with pytest.raises(MarionetteError, match="expected shape"):
        K.build_skeleton_rig(np.zeros((5, 16, 3)), COCO_17)


def test_twist_follows_the_rigid_neighbour():
    """A bone whose reference is a sibling edge (same rigid parent segment) must turn
    exactly with that segment: twist is observed, not guessed, so bones do not spin."""
    X = synthetic_skeleton_motion(PANOPTIC_19, 200, seed=6)
    rig = K.build_skeleton_rig(X, PANOPTIC_19)
    W, valid = K.skeleton_bone_rotations(rig, X)
    assert valid.all()
    checked = 0
    parents = PANOPTIC_19.parents
    for b in range(rig.num_bones):
        (p0, c0), (p1, c1) = rig.primary[b], rig.reference[b]
        if parents[b] < 0 or p1 != p0 or parents[c1] != p0:
            continue  # only bones referenced to a sibling hanging off the same joint
        # both edges rotate with the parent joint's frame: the recovered rotation relative to the
        # first frame must equal the rotation that carries the pair of edges (up to round-off)
        e = X[:, [c0, c1]] - X[:, [p0, p1]]
        rel = W[:, b] @ W[0, b].T
        assert np.allclose(np.einsum("tij,tkj->tki", rel, e[[0] * len(e)]), e, atol=1e-9)
        checked += 1
    assert checked >= 2


def test_local_rotations_are_sign_continuous():
    X = synthetic_skeleton_motion(H36M_17, 300, seed=7, amplitude=0.3)
    rig = K.build_skeleton_rig(X, H36M_17)
    q, _ = K.skeleton_animation(rig, X)
    assert (np.sum(q[1:] * q[:-1], axis=-1) > 0).all()


def test_resample_animation_by_time():
    X30 = synthetic_skeleton_motion(BODY_25B, 61, fps=30.0, seed=8, amplitude=0.3)
    X120 = synthetic_skeleton_motion(BODY_25B, 241, fps=120.0, seed=8, amplitude=0.3)
    assert np.allclose(X120[::4], X30)  # same motion, sampled finer
    rig = K.build_skeleton_rig(X30, BODY_25B)
    q, loc = K.skeleton_animation(rig, X30)
    t = np.arange(61) / 30.0
    q2, loc2, off = resample.resample_animation(q, loc, t, 30.0)
    assert q2 is q and list(off) == list(range(61))
    q24, loc24, off24 = resample.resample_animation(q, loc, t, 24.0)
    assert len(off24) == 49 and list(off24) == list(range(49))  # 2 s at 24 fps
    _, Y = K.forward_kinematics(rig, q24, loc24)
    # frame k at 24 fps is time k/24 = frame 5k at 120 fps; shared instants (every 1/6 s) are exact
    assert np.abs(Y[::4] - X30[::5]).max() < 1e-9
    # in between, the C1 rotation spline stays within interpolation error of the true motion,
    # no worse than interpolating joint positions linearly (which would also break bone lengths)
    err = np.abs(Y - X120[::5]).max()
    u = (np.arange(49) * 30 / 24) % 1
    i0 = np.floor(np.arange(49) * 30 / 24).astype(int)
    lin = X30[i0] * (1 - u)[:, None, None] + X30[np.minimum(i0 + 1, 60)] * u[:, None, None]
    assert err < 0.02 and err <= np.abs(lin - X120[::5]).max()
    # rows with frame numbers (dropped frames) stay on their frames without resampling
    _, _, off_drop = resample.resample_animation(q[[0, 1, 5]], loc[[0, 1, 5]], t[[0, 1, 5]], 30.0)
    assert list(off_drop) == [0, 1, 5]


def test_joints_from_pose_reads_heads_and_tails():
    X = synthetic_skeleton_motion(COCO_17, 5)
    rig = K.build_skeleton_rig(X, COCO_17)
    P, Y = K.forward_kinematics(rig, np.tile([1.0, 0, 0, 0], (1, rig.num_bones, 1)), np.zeros((1, 3)))
    assert np.allclose(Y[0], rig.rest_joints)
    world = np.eye(4)
    world[:3, 3] = (1, 2, 3)
    _, Yw = K.forward_kinematics(rig, np.tile([1.0, 0, 0, 0], (1, rig.num_bones, 1)), np.zeros((1, 3)), world=world)
    assert np.allclose(Yw[0], rig.rest_joints + [1, 2, 3])


# ----------------------------------------------------------------------------- SMPL motion

def test_generic_smpl_rest_is_symmetric_and_plausible():
    J = S.GENERIC_SMPL_REST_JOINTS
    names = SMPL_24.names
    for j, n in enumerate(names):
        if n.startswith("left_"):
            r = names.index("right_" + n[5:])
            assert np.allclose(J[j] * [-1, 1, 1], J[r])
    height = J[:, 1].max() - J[:, 1].min()
    assert 1.3 < height < 1.8  # ankle/foot to head joint of an adult, metres


@pytest.mark.parametrize("up, upright", [("Y", False), ("Z", False), ("Z", True), ("-X", True)])
def test_smpl_rig_reproduces_smpl_kinematics(up, upright):
    rng = np.random.default_rng(9)
    T = 40
    poses, trans = rng.normal(0, 0.5, (T, 24, 3)), rng.normal(0, 1, (T, 3))
    C, s = axes.up_axis_matrix(up), 0.5
    M = axes.up_axis_matrix("Y") if upright else C  # rest pose standing in Blender, whatever the file's world
    rest = S.GENERIC_SMPL_REST_JOINTS
    rig = S.smpl_rig(s * rest @ M.T)
    q, loc = S.smpl_animation(rig, poses, trans, rest, C, s, rest_axes=M)
    _, Y = K.forward_kinematics(rig, q, loc)
    assert np.abs(Y - s * S.smpl_joints(rest, poses, trans) @ C.T).max() < 1e-9


def _save_motion(path, **arrays):
    np.savez(path, **arrays)
    return path


def _motion_arrays(T=8, J=24):
    rng = np.random.default_rng(10)
    return dict(poses=rng.normal(0, 0.2, (T, 3 * J)), trans=rng.normal(0, 1, (T, 3)), betas=rng.normal(0, 1, 16),
                gender=np.array("female"), mocap_framerate=np.array(60.0))


def test_load_smpl_motion_variants(tmp_path):
    m = S.load_smpl_motion(_save_motion(tmp_path / "a.npz", **_motion_arrays()))
    assert m.poses.shape == (8, 24, 3) and m.fps == 60.0 and m.gender == "female" and m.up_axis is None
    a = _motion_arrays(J=52)
    del a["mocap_framerate"]
    a["mocap_frame_rate"] = np.array(120.0)
    m = S.load_smpl_motion(_save_motion(tmp_path / "b.npz", **a))
    assert m.source_joints == 52 and m.fps == 120.0
    assert np.allclose(m.poses[:, :22].reshape(8, -1), a["poses"][:, :66]) and not m.poses[:, 22:].any()
    a = _motion_arrays()
    del a["mocap_framerate"]
    a["fps"] = np.array(30)
    a["betas"] = np.tile(a["betas"], (8, 1))
    a["up_axis"] = np.array("Y")
    m = S.load_smpl_motion(_save_motion(tmp_path / "c.npz", **a))
    assert m.fps == 30 and m.betas.shape == (16,) and m.up_axis == "Y"


@pytest.mark.parametrize("change, message", [
    (lambda a: a.update(trnas=a.pop("trans")), "missing field 'trans'.*'trnas'"),
    (lambda a: a.pop("poses"), "missing field 'poses'"),
    (lambda a: a.update(poses=a["poses"][:, :70]), "field 'poses' has shape"),
    (lambda a: a.update(trans=a["trans"][:5]), "field 'trans' has shape"),
    (lambda a: a["poses"].__setitem__((3, 5), np.nan), "NaN.*first at frame 3"),
    (lambda a: a.update(poses=a["poses"][:0], trans=a["trans"][:0]), "zero frames"),
    (lambda a: a.update(mocap_framerat=a.pop("mocap_framerate")), "missing frame rate.*mocap_framerat"),
    (lambda a: a.update(mocap_framerate=np.array(-1.0)), "positive frame rate"),
    (lambda a: a.update(gender=np.array("robot")), "field 'gender'"),
    (lambda a: a.update(betas=np.tile(np.arange(16.0), (8, 1)) + np.arange(8)[:, None]), "changes over time"),
])
def test_load_smpl_motion_rejects_bad_files(tmp_path, change, message):
    a = _motion_arrays()
    change(a)
    path = _save_motion(tmp_path / "bad.npz", **a)
    with pytest.raises(MarionetteError, match=message):
        S.load_smpl_motion(path)


def test_load_smpl_motion_rejects_truncated_and_pickled_files(tmp_path):
    good = _save_motion(tmp_path / "good.npz", **_motion_arrays())
    data = good.read_bytes()
    (tmp_path / "trunc.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(MarionetteError, match="not a readable .npz"):
        S.load_smpl_motion(tmp_path / "trunc.npz")
    np.save(tmp_path / "obj.npy", np.array([{"poses": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(MarionetteError, match="not a readable"):
        S.load_smpl_motion(tmp_path / "obj.npy")
    with pytest.raises(MarionetteError, match="not found"):
        S.load_smpl_motion(tmp_path / "nope.npz")
