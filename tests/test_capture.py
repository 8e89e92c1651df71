"""Capture folder format (engine only) and, further down, the Blender-rendered synthetic capture."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from engine import MarionetteError
from engine.geometry.camera import Camera, load_cameras_json
from engine.io.capture_folder import (begin_capture, finish_capture, image_relpath, keypoints_relpath, load_capture,
                            mask_relpath, partial_path, read_openpose_json, write_openpose_json)
from engine.io.skeleton_file import SkeletonSequence
from engine.body.joint_sets import BODY_25B


def _fake_capture(tmp_path, names=("cam00", "cam01"), frames=(0, 1), size=(32, 24)):
    out = tmp_path / "cap"
    partial = begin_capture(out, list(names))
    W, H = size
    cams = [Camera.look_at(n, eye=(3 * np.cos(i), 3 * np.sin(i), 1.5), target=(0, 0, 1), width=W, height=H)
            for i, n in enumerate(names)]
    for n in names:
        for f in frames:
            Image.fromarray(np.zeros((H, W, 4), np.uint8)).save(partial / image_relpath(n, f))
            Image.fromarray(np.zeros((H, W), np.uint8)).save(partial / mask_relpath(n, f))
            write_openpose_json(partial / keypoints_relpath(n, f), np.zeros((25, 3)))
    skel = SkeletonSequence(np.zeros((len(frames), 25, 3)), BODY_25B, fps=30.0)
    meta = dict(fps=30.0, frames=list(frames), cameras=list(names), train_cameras=list(names[:-1]),
                heldout_cameras=list(names[-1:]), heldout_frames=[], joint_set="BODY_25B", resolution=[W, H])
    finish_capture(partial, out, meta, cams, skel)
    return out, cams


def test_format_round_trip(tmp_path):
    out, cams = _fake_capture(tmp_path)
    assert not partial_path(out).exists()
    cap = load_capture(out)
    assert cap.camera_names == ["cam00", "cam01"] and cap.frames == [0, 1]
    assert cap.heldout_cameras == ["cam01"] and cap.train_cameras == ["cam00"]
    assert cap.load_image("cam00", 1).shape == (24, 32, 3)
    assert cap.load_mask("cam01", 0).shape == (24, 32)
    for a, b in zip(load_cameras_json(out / "cameras.json"), cams):
        np.testing.assert_allclose(a.P, b.P)


def test_format_rejects_damage(tmp_path):
    out, _ = _fake_capture(tmp_path)
    Image.fromarray(np.zeros((10, 10, 4), np.uint8)).save(out / image_relpath("cam01", 1))
    with pytest.raises(MarionetteError, match="000001.png.*10x10"):
        load_capture(out)
    (out / mask_relpath("cam00", 0)).unlink()
    with pytest.raises(MarionetteError, match="not found"):
        load_capture(out)
    doc = json.loads((out / "capture.json").read_text())
    doc["complete"] = False
    (out / "capture.json").write_text(json.dumps(doc))
    with pytest.raises(MarionetteError, match="complete"):
        load_capture(out)


def test_begin_capture_refuses(tmp_path):
    with pytest.raises(MarionetteError, match="at least one camera"):
        begin_capture(tmp_path / "x", [])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "a").write_text("x")
    with pytest.raises(MarionetteError, match="not empty"):
        begin_capture(tmp_path / "full", ["cam00"])
    # a parent that is a file cannot hold a folder (chmod tricks do not stop root)
    with pytest.raises(MarionetteError, match="cannot create"):
        begin_capture(tmp_path / "full" / "a" / "cap", ["cam00"])
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            with pytest.raises(MarionetteError, match="not writable"):
                begin_capture(ro / "cap", ["cam00"])
        finally:
            ro.chmod(0o700)


def test_openpose_json_round_trip(tmp_path):
    kp = np.random.default_rng(0).uniform(0, 100, (25, 3))
    kp[:, 2] = 1.0
    kp[3] = [0, 0, 0]
    write_openpose_json(tmp_path / "k.json", kp)
    back = read_openpose_json(tmp_path / "k.json", 25)
    assert np.isnan(back[3, 0]) and back[3, 2] == 0
    np.testing.assert_allclose(np.delete(back, 3, 0), np.delete(kp, 3, 0), atol=1e-4)


# ====================================================================== engine-side synthetic maths
from engine.scene.camera_ring import RigSpec, build_rig  # noqa: E402
from engine.io.skeleton_file import save_skeleton  # noqa: E402
from engine.body.joint_sets import COCO_17, SMPL_24  # noqa: E402
from engine.synthetic.body import (AIM_BONES, REGIONS, build_body, look_from_seed, motion_targets,  # noqa: E402
                              procedural_walk, project_keypoints, root_matrix)


@pytest.fixture(scope="module")
def body():
    return build_body(look_from_seed(0))


def test_rig_cameras_look_at_target():
    cams, train, held = build_rig(RigSpec(count=5, heldout=2, width=64, height=48, target=(0.1, 0.2, 0.9)))
    assert train == [f"cam{i:02d}" for i in range(5)] and held == ["heldout00", "heldout01"]
    for c in cams:
        u, v = c.project(np.array([0.1, 0.2, 0.9]))
        assert abs(u - (c.width - 1) / 2) < 1e-6 and abs(v - (c.height - 1) / 2) < 1e-6
        assert (c.width, c.height) == (64, 48)
    with pytest.raises(MarionetteError, match="at least 1"):
        build_rig(RigSpec(count=0))
    with pytest.raises(MarionetteError, match="resolution"):
        build_rig(RigSpec(width=0))


def test_looks_differ_by_seed_and_repeat():
    assert look_from_seed(3) == look_from_seed(3)
    assert len({json.dumps(look_from_seed(s).to_dict()) for s in range(6)}) == 6


def test_body_regions_and_joints(body):
    counts = np.bincount(body.face_region, minlength=len(REGIONS))
    assert all(counts[REGIONS.index(r)] > 50 for r in ("skin", "shirt", "trousers", "shoes", "hair"))
    j = {n: body.rest_joints[i] for i, n in enumerate(BODY_25B.names)}
    assert 1.5 < j["HeadTop"][2] < 2.0 and j["HeadTop"][2] > j["Nose"][2] > j["Neck"][2] > j["LHip"][2]
    assert j["LHip"][2] > j["LKnee"][2] > j["LAnkle"][2] > 0
    assert j["LShoulder"][0] > 0 > j["RShoulder"][0]  # left is +X, the body faces -Y
    assert j["Nose"][1] < j["LEar"][1]
    assert abs(body.verts[:, 2].min()) < 1e-9
    # helper geometry (joint cubes, tights, skirt, hair helper) was removed
    assert 13000 < len(body.verts) < 14000
    for aim, (a, b, parent, children) in AIM_BONES.items():
        assert parent in body.bones and all(body.bones[c]["parent"] == aim for c in children)


def test_procedural_walk_moves_and_stays_on_floor(body):
    w = procedural_walk(body.rest_joints, 40)
    assert w.shape == (40, 25, 3) and np.isfinite(w).all()
    feet = [BODY_25B.index(n) for n in ("LHeel", "RHeel", "LBigToe", "RBigToe", "LSmallToe", "RSmallToe")]
    assert np.allclose(w[:, feet, 2].min(1), body.rest_joints[feet, 2].min(), atol=1e-9)
    # bone lengths are kept (rigid FK)
    for a, b in (("LHip", "LKnee"), ("LKnee", "LAnkle"), ("RShoulder", "RElbow")):
        ia, ib = BODY_25B.index(a), BODY_25B.index(b)
        d = np.linalg.norm(w[:, ia] - w[:, ib], axis=-1)
        assert np.allclose(d, np.linalg.norm(body.rest_joints[ia] - body.rest_joints[ib]), atol=1e-9)
    lk, rk = w[:, BODY_25B.index("LKnee")], w[:, BODY_25B.index("RKnee")]
    assert np.ptp(np.linalg.norm(lk - rk, axis=-1)) > 0.1  # legs actually swing
    M = root_matrix(body.rest_joints, body.rest_joints)
    np.testing.assert_allclose(M, np.eye(4), atol=1e-12)


def test_motion_targets_map_and_refuse(tmp_path):
    rng = np.random.default_rng(1)
    coco = rng.normal(size=(5, COCO_17.num_joints, 3))
    t = motion_targets(coco, COCO_17, frames=8)
    assert t.shape == (8, 25, 3) and np.isfinite(t[:, BODY_25B.index("LKnee")]).all()
    smpl = motion_targets(rng.normal(size=(3, 24, 3)), SMPL_24)  # neck from the shoulders
    assert np.isfinite(smpl[:, BODY_25B.index("Neck")]).all()
    bad = rng.normal(size=(4, 25, 3))
    bad[:, BODY_25B.index("LElbow")] = np.nan
    with pytest.raises(MarionetteError, match="cannot drive.*LElbow"):
        motion_targets(bad, BODY_25B)


def test_project_keypoints_noise_and_drops():
    cam = Camera.look_at("c", eye=(0, -3, 1), target=(0, 0, 1), width=100, height=80)
    pts = np.array([[0, 0, 1.0], [0.1, 0, 1.2], [50, 0, 1]])  # the last is outside the image
    kp = project_keypoints(cam, pts)
    assert kp[:2, 2].tolist() == [1, 1] and kp[2, 2] == 0 and np.isnan(kp[2, 0])
    np.testing.assert_allclose(kp[0, :2], [49.5, 39.5], atol=1e-9)
    many = np.tile(pts[:2], (2000, 1))
    noisy = project_keypoints(cam, many, noise_px=2.0, rng=np.random.default_rng(0))
    assert 1.8 < np.nanstd(noisy[:, 0] - project_keypoints(cam, many)[:, 0]) < 2.2
    dropped = project_keypoints(cam, many, drop_prob=0.3, rng=np.random.default_rng(0))
    assert 0.25 < 1 - dropped[:, 2].mean() < 0.35


# ====================================================================== the rendered tiny capture (bpy)
def _dlt(cams, uv):
    A = []
    for c, (u, v) in zip(cams, uv):
        P = c.P
        A += [u * P[2] - P[0], v * P[2] - P[1]]
    _, _, vt = np.linalg.svd(np.asarray(A))
    X = vt[-1]
    return X[:3] / X[3]


@pytest.fixture(scope="session")
def tiny_capture(tmp_path_factory):
    """2 cameras x 3 frames x 64x64, rendered once per session through the real CLI."""
    pytest.importorskip("bpy")
    from engine.cli import main

    out = tmp_path_factory.mktemp("synthetic") / "tiny"
    rc = main(["make-capture", "-o", str(out), "--cameras", "2", "--frames", "3", "--resolution", "64",
               "--samples", "2", "--seed", "0", "--heldout-every", "3"])
    assert rc == 0
    return out


@pytest.mark.blender
def test_tiny_capture_files_and_shapes(tiny_capture):
    cap = load_capture(tiny_capture)
    assert cap.camera_names == ["cam00", "cam01"] and cap.frames == [0, 1, 2] and cap.heldout_frames == [2]
    assert cap.skeleton.joints.shape == (3, 25, 3) and cap.skeleton.joint_set.name == "BODY_25B"
    assert not partial_path(tiny_capture).exists()
    meta = json.loads((tiny_capture / "capture.json").read_text())
    assert meta["complete"] is True and meta["resolution"] == [64, 64] and meta["generator"]["look"]["seed"] == 0
    for cam in cap.camera_names:
        for f in cap.frames:
            rgba = cap.load_rgba(cam, f)
            mask = cap.load_mask(cam, f)
            assert rgba.shape == (64, 64, 4) and mask.shape == (64, 64)
            assert set(np.unique(mask)) <= {0.0, 1.0}
            assert 0.03 < mask.mean() < 0.5  # a person, not an empty or full frame
            # the mask is the rendered coverage
            assert np.array_equal(mask > 0.5, rgba[..., 3] >= 0.5)
            # the person is coloured (clothes), not flat grey
            person = rgba[..., :3][mask > 0.5]
            assert person.std(0).max() > 0.05


@pytest.mark.blender
def test_tiny_capture_joints_inside_masks(tiny_capture):
    from scipy.ndimage import binary_dilation

    cap = load_capture(tiny_capture)
    for cam in cap.cameras:
        for f in cap.frames:
            mask = binary_dilation(cap.load_mask(cam.name, f) > 0.5, iterations=2)  # surface joints sit on the edge
            kp = cap.load_keypoints(cam.name, f)
            uv = cam.project(cap.joints3d(f))
            seen = kp[:, 2] > 0
            assert seen.sum() == 25
            np.testing.assert_allclose(kp[seen, :2], uv[seen], atol=1e-3)
            x, y = np.round(kp[seen, :2]).astype(int).T
            outside = [cap.joint_set.names[j] for j, ok in zip(np.flatnonzero(seen), mask[y, x]) if not ok]
            assert not outside, f"{cam.name} frame {f}: joints outside the mask: {outside}"


@pytest.mark.blender
def test_tiny_capture_cameras_round_trip(tiny_capture):
    cams = load_cameras_json(tiny_capture / "cameras.json")
    expected, _, _ = build_rig(RigSpec(count=2, width=64, height=64))
    for a, b in zip(cams, expected):
        assert a.name == b.name
        np.testing.assert_allclose(a.K, b.K, atol=1e-9)
        np.testing.assert_allclose(a.R, b.R, atol=1e-9)
        np.testing.assert_allclose(a.t, b.t, atol=1e-9)
        back = Camera.from_dict(a.to_dict())
        np.testing.assert_allclose(back.P, a.P)


@pytest.mark.blender
def test_tiny_capture_triangulates_to_ground_truth(tiny_capture):
    cap = load_capture(tiny_capture)
    for f in cap.frames:
        kps = [cap.load_keypoints(c.name, f) for c in cap.cameras]
        for j in range(25):
            X = _dlt(cap.cameras, [k[j, :2] for k in kps])
            assert np.linalg.norm(X - cap.joints3d(f)[j]) < 0.005


@pytest.mark.blender
def test_tiny_capture_engine_triangulation_recovers_joints(tiny_capture, tmp_path):
    """engine.capture.triangulation on the keypoint files, and the triangulate CLI on the capture folder."""
    from engine.cli import main
    from engine.io.skeleton_file import load_skeleton
    from engine.capture.triangulation import triangulate

    cap = load_capture(tiny_capture)
    kp = np.stack([[cap.load_keypoints(c.name, f) for f in cap.frames] for c in cap.cameras])
    kp = np.nan_to_num(kp, nan=0.0)
    res = triangulate(kp, cap.cameras, reproj_threshold=None)
    assert np.nanmax(np.linalg.norm(res.points - cap.skeleton.joints, axis=-1)) < 0.005
    out = tmp_path / "tri.npz"
    assert main(["triangulate", str(tiny_capture / "keypoints"), "--calib", str(tiny_capture / "cameras.json"),
                 "--joint-set", "BODY_25B", "--cutoff", "0", "-o", str(out)]) == 0
    tri = load_skeleton(out)
    assert np.nanmax(np.linalg.norm(tri.joints - cap.skeleton.joints, axis=-1)) < 0.005


@pytest.mark.blender
def test_tiny_capture_rendered_body_matches_cameras(tiny_capture):
    """The Blender cameras and the cameras.json agree: the mask's bounding box is where the
    projected joints say the body is (a 0.5 px convention slip or a flipped axis would fail)."""
    cap = load_capture(tiny_capture)
    for cam in cap.cameras:
        m = cap.load_mask(cam.name, 0) > 0.5
        ys, xs = np.nonzero(m)
        uv = cam.project(cap.joints3d(0))
        assert abs(uv[:, 0].mean() - xs.mean()) < 3 and abs(uv[:, 1].mean() - ys.mean()) < 4
        head = uv[BODY_25B.index("HeadTop"), 1]
        assert abs(head - ys.min()) < 2.5  # the head top vertex is the topmost point of the body


def test_make_capture_bad_inputs(tmp_path, capsys):
    from engine.cli import main

    out = tmp_path / "cap"
    assert main(["make-capture", "-o", str(out), "--cameras", "0"]) == 1
    assert "--cameras must be at least 1" in capsys.readouterr().err
    assert main(["make-capture", "-o", str(out), "--resolution", "0"]) == 1
    assert "--resolution must be positive" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main(["make-capture", "-o", str(tmp_path / "file" / "cap")]) == 1
    assert "is not a folder" in capsys.readouterr().err
    motion = tmp_path / "nowrists.npz"
    joints = np.random.default_rng(0).normal(size=(4, 25, 3))
    joints[:, BODY_25B.index("RWrist")] = np.nan
    save_skeleton(motion, SkeletonSequence(joints, BODY_25B, fps=30.0))
    assert main(["make-capture", "-o", str(out), "--motion", str(motion)]) == 1
    assert "cannot drive" in capsys.readouterr().err
    assert not out.exists() and not partial_path(out).exists()


@pytest.mark.slow
@pytest.mark.blender
def test_capture_from_skeleton_file_and_determinism(tmp_path, tiny_capture):
    """A Y-up COCO-17 skeleton file drives the body (mapped, gap-filled, looped); the same
    command twice gives the same pixels."""
    from engine.cli import main

    body = build_body(look_from_seed(0))
    walk = procedural_walk(body.rest_joints, 10)
    coco_idx = [BODY_25B.index(n) for n in ("Nose", "LEye", "REye", "LEar", "REar", "LShoulder", "RShoulder",
                                            "LElbow", "RElbow", "LWrist", "RWrist", "LHip", "RHip", "LKnee",
                                            "RKnee", "LAnkle", "RAnkle")]
    coco = walk[:, coco_idx]
    y_up = np.stack([coco[..., 0], coco[..., 2], -coco[..., 1]], -1)
    y_up[3, 5] = np.nan  # a gap to fill
    motion = tmp_path / "coco.npz"
    save_skeleton(motion, SkeletonSequence(y_up, COCO_17, fps=25.0, up_axis="Y"))
    out = tmp_path / "from_file"
    assert main(["make-capture", "-o", str(out), "--motion", str(motion), "--cameras", "1", "--frames", "12",
                 "--resolution", "48", "--samples", "2"]) == 0
    cap = load_capture(out)
    assert cap.fps == 25.0 and len(cap.frames) == 12
    knee = cap.skeleton.joints[:, BODY_25B.index("LKnee")]
    assert np.ptp(knee[:, 1]) > 0.05  # it moves
    for f in cap.frames:
        m = cap.load_mask("cam00", f) > 0.5
        kp = cap.load_keypoints("cam00", f)
        x, y = np.round(kp[kp[:, 2] > 0, :2]).astype(int).T
        from scipy.ndimage import binary_dilation
        assert binary_dilation(m, iterations=2)[y, x].all()
    again = tmp_path / "again"
    assert main(["make-capture", "-o", str(again), "--cameras", "2", "--frames", "3", "--resolution", "64",
                 "--samples", "2", "--seed", "0", "--heldout-every", "3"]) == 0
    a, b = load_capture(tiny_capture), load_capture(again)
    np.testing.assert_array_equal(a.skeleton.joints, b.skeleton.joints)
    for cam in a.camera_names:
        for f in a.frames:
            assert np.abs(a.load_rgba(cam, f) - b.load_rgba(cam, f)).max() <= 2 / 255


@pytest.mark.blender
def test_failure_while_rendering_leaves_nothing(tmp_path, monkeypatch):
    """A crash half way through (here: reading joints of the 2nd frame) removes OUT.partial/
    and never creates OUT."""
    pytest.importorskip("bpy")
    from addon.synthetic import make_capture as mc
    from addon.synthetic import scene as S
    from engine.synthetic.capture_config import build_parser, config_from_args

    calls = {"n": 0}
    real = S.read_joints

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("simulated crash")
        return real(*a, **k)

    monkeypatch.setattr(S, "read_joints", flaky)
    out = tmp_path / "cap"
    args = build_parser().parse_args(["-o", str(out), "--cameras", "1", "--frames", "3", "--resolution", "32",
                                      "--samples", "1"])
    with pytest.raises(RuntimeError, match="simulated"):
        mc.make_capture(config_from_args(args), args)
    assert calls["n"] == 2
    assert not out.exists() and not partial_path(out).exists()
