import shutil

import numpy as np
import pytest

from engine import MarionetteError
from engine.geometry.camera import Camera
from engine.cli import main
from engine.data import demo_capture_paths
from engine.capture.filtering import butterworth, fill_gaps
from engine.io.skeleton_file import load_skeleton
from engine.capture.triangulation import dlt, triangulate

DEMO = demo_capture_paths()


def ring(n=5, distort=True):
    cams = []
    for i in range(n):
        a = 2 * np.pi * i / n + 0.3
        cam = Camera.look_at(f"cam{i}", [4.0 * np.cos(a), 4.0 * np.sin(a), 1.2 + 0.3 * (i % 2)], [0, 0, 1.0],
                             1088, 1920, f_px=1600.0)
        if distort and i % 2 == 0:
            cam = cam.copy(dist=np.array([-0.08, 0.1, 0.001, -0.0005, 0.0]))
        cams.append(cam)
    return cams


def observe(cams, X, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    kp = np.stack([np.concatenate([c.project(X), np.full(X.shape[:-1] + (1,), 0.9)], -1) for c in cams])
    kp[..., :2] += rng.normal(scale=noise, size=kp[..., :2].shape)
    return kp


def points(T=40, J=17, seed=1):
    rng = np.random.default_rng(seed)
    return rng.uniform([-0.6, -0.6, 0.1], [0.6, 0.6, 1.9], size=(T, J, 3))


def test_exact_round_trip_with_distortion():
    cams, X = ring(), points()
    res = triangulate(observe(cams, X), cams)
    np.testing.assert_allclose(res.points, X, atol=1e-6)
    assert np.nanmax(res.reprojection_error) < 1e-3
    assert (res.views_used == len(cams)).all()


def test_dlt_matches_cv2_two_views():
    import cv2

    cams, X = ring(2, distort=False), points(5, 3).reshape(-1, 3)
    rng = np.random.default_rng(0)
    xy = np.stack([c.pixels_to_normalized(c.project(X) + rng.normal(scale=1e-3, size=(len(X), 2))) for c in cams])
    Rt = np.stack([np.hstack([c.R, c.t[:, None]]) for c in cams])
    ours = dlt(xy, np.ones(xy.shape[:2]), Rt)
    h = cv2.triangulatePoints(Rt[0], Rt[1], xy[0].T, xy[1].T)
    np.testing.assert_allclose(ours, (h[:3] / h[3]).T, atol=1e-4)


def test_noise_and_outlier_views_are_rejected():
    cams, X = ring(5), points()
    kp = observe(cams, X, noise=0.7)
    rng = np.random.default_rng(2)
    C, T, J = kp.shape[:3]
    outlier = rng.random((C, T, J)) < 0.08
    outlier[:, :, 0] = False
    outlier[:2, :, 0] = True  # joint 0: two bad views of five in every frame
    kp[..., :2] += outlier[..., None] * rng.choice([-1, 1], size=(C, T, J, 2)) * rng.uniform(60, 200, (C, T, J, 1))
    plain = triangulate(kp, cams, reproj_threshold=None)
    robust = triangulate(kp, cams, reproj_threshold=15.0)
    err_plain = np.linalg.norm(plain.points - X, axis=-1)
    err_robust = np.linalg.norm(robust.points - X, axis=-1)
    assert np.nanmedian(err_plain[outlier.any(0)]) > 0.02
    assert np.nanpercentile(err_robust, 99) < 0.01  # metres
    assert robust.stats["views_rejected"] >= outlier.any(0).sum()
    # the rejected views are exactly the outliers
    assert not (robust.used & outlier).any()
    assert (robust.views_used[:, 0] == 3).all()
    assert np.nanmedian(robust.reprojection_error) < 1.5


def test_missing_views_and_confidence_handling():
    cams, X = ring(3), points(6, 4)
    kp = observe(cams, X)
    kp[0, 0, 0, 2] = 0.0                 # not detected
    kp[1, 0, 0, 2] = 0.1                 # below min_confidence
    kp[2, 1, 1, :2] = np.nan             # NaN pixel
    kp[0, 2, 2, 2] = np.nan              # NaN confidence
    res = triangulate(kp, cams, min_confidence=0.3)
    assert np.isnan(res.points[0, 0]).all() and res.confidence[0, 0] == 0 and res.views_used[0, 0] == 0
    assert res.views_used[1, 1] == 2 and res.views_used[2, 2] == 2
    np.testing.assert_allclose(res.points[1, 1], X[1, 1], atol=1e-6)
    assert res.stats["points_missing"] == 1
    with pytest.raises(MarionetteError, match=r"\[C, T, J, 3\]"):
        triangulate(kp[..., :2], cams)
    with pytest.raises(MarionetteError, match="2 cameras"):
        triangulate(kp[:1], cams[:1])
    with pytest.raises(MarionetteError, match="4 cameras were given|3 cameras but"):
        triangulate(kp, cams[:2])


def test_gap_filling_and_butterworth():
    t = np.arange(120) / 60.0
    x = np.stack([np.sin(2 * np.pi * 0.5 * t), np.cos(2 * np.pi * 0.5 * t), t], -1)[:, None]  # [T, 1, 3]
    holes = x.copy()
    holes[10:15] = np.nan     # short gap: filled
    holes[40:70] = np.nan     # long gap: kept
    holes[:3] = np.nan        # leading: kept
    filled, mask = fill_gaps(holes, max_gap=10)
    assert mask[10:15].all() and not mask[40:70].any() and not mask[:3].any()
    np.testing.assert_allclose(filled[10:15], x[10:15], atol=2e-3)
    assert np.isnan(filled[40:70]).all() and np.isnan(filled[:3]).all()
    rng = np.random.default_rng(0)
    noisy = filled + rng.normal(scale=0.01, size=filled.shape)
    smooth = butterworth(noisy, fps=60, cutoff=4)
    ok = np.isfinite(smooth).all(-1)[:, 0]
    assert np.isnan(smooth[40:70]).all()
    assert np.abs(smooth[ok] - x[ok]).mean() < 0.5 * np.abs(noisy[ok] - x[ok]).mean()
    with pytest.raises(MarionetteError, match="Nyquist"):
        butterworth(noisy, fps=10, cutoff=6)


@pytest.fixture(scope="module")
def demo_skeleton(tmp_path_factory):
    out = tmp_path_factory.mktemp("tri") / "skeleton.npz"
    png = out.with_name("preview.png")
    rc = main(["triangulate", str(DEMO.pose_dir), "--calib", str(DEMO.calibration), "--fps", "60", "-o", str(out),
               "--preview", str(png)])
    assert rc == 0
    return out, png


def test_cli_end_to_end_on_real_capture(demo_skeleton, capsys):
    out, png = demo_skeleton
    seq = load_skeleton(out)
    assert seq.joint_set.name == "BODY_25B" and seq.up_axis == "Z" and seq.fps == 60
    assert seq.joints.shape == (100, 25, 3) and seq.joints.dtype == np.float32
    assert seq.missing.mean() < 0.02
    for key in ("reprojection_error", "views_used", "frame_indices", "filled", "camera_names"):
        assert key in seq.extras
    assert np.nanmedian(seq.extras["reprojection_error"]) < 15
    # standing subject in a Z-up world: head above ankles, feet near the floor
    js = seq.joint_set
    assert np.nanmean(seq.joints[:, js.index("HeadTop"), 2] - seq.joints[:, js.index("LAnkle"), 2]) > 1.2
    import cv2

    img = cv2.imread(str(png))
    assert img is not None and img.shape[0] > 300 and img.shape[1] > 600


def test_real_capture_limb_lengths_are_stable(demo_skeleton):
    seq = load_skeleton(demo_skeleton[0])
    js = seq.joint_set
    for a, b in (("LHip", "LKnee"), ("RHip", "RKnee"), ("LKnee", "LAnkle"), ("RKnee", "RAnkle")):
        L = np.linalg.norm(seq.joints[:, js.index(a)] - seq.joints[:, js.index(b)], axis=-1)
        assert 0.3 < np.nanmean(L) < 0.5, (a, b)
        assert np.nanstd(L) < 0.025, (a, b)  # metres; a real bone does not change length


def _copy_demo(tmp_path, names):
    root = tmp_path / "pose"
    for src, dst in zip(sorted(DEMO.pose_dir.iterdir()), names):
        if dst:
            shutil.copytree(src, root / dst)
    return root


def test_cli_folder_names_not_matching_use_sorted_order(tmp_path, capsys):
    root = _copy_demo(tmp_path, ["a_front", "b_left", "c_back", "d_right"])
    rc = main(["triangulate", str(root), "--calib", str(DEMO.calibration), "--fps", "60", "-o",
               str(tmp_path / "s.npz")])
    assert rc == 0
    assert "paired in sorted order" in capsys.readouterr().out


def test_cli_extra_and_missing_camera_folders(tmp_path, capsys):
    root = _copy_demo(tmp_path, ["cam01_json", "cam02_json", None, "cam04_json"])
    shutil.copytree(root / "cam01_json", root / "cam07_json")
    rc = main(["triangulate", str(root), "--calib", str(DEMO.calibration), "--fps", "60", "-o",
               str(tmp_path / "s.npz")])
    out = capsys.readouterr().out
    assert rc == 0
    assert "ignored keypoint folders with no calibration camera: cam07_json" in out
    assert "calibration cameras without keypoints (unused): cam_03" in out


def test_cli_bad_inputs_give_one_line_errors(tmp_path, capsys):
    root = _copy_demo(tmp_path, ["cam01_json", None, None, None])
    rc = main(["triangulate", str(root), "--calib", str(DEMO.calibration), "-o", str(tmp_path / "s.npz")])
    assert rc == 1 and "need at least 2" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    rc = main(["triangulate", str(tmp_path / "empty"), "--calib", str(DEMO.calibration), "-o", str(tmp_path / "s.npz")])
    assert rc == 1 and "no camera sub-folders" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text("[cam_01]\nname = 'x'\n")
    rc = main(["triangulate", str(DEMO.pose_dir), "--calib", str(bad), "-o", str(tmp_path / "s.npz")])
    err = capsys.readouterr().err
    assert rc == 1 and "bad.toml" in err and "missing field 'size'" in err
    assert not (tmp_path / "s.npz").exists()


def test_demo_command(tmp_path, capsys):
    rc = main(["demo", "-o", str(tmp_path / "out"), "--no-render"])  # the full demo: tests/test_demo.py
    assert rc == 0
    assert (tmp_path / "out" / "skeleton.npz").is_file() and (tmp_path / "out" / "skeleton_preview.png").is_file()
    out = capsys.readouterr().out
    assert "median reprojection error" in out and "missing after clean-up" in out


@pytest.mark.slow
def test_numba_kernel_matches_numpy_reference():
    pytest.importorskip("numba")
    cams, X = ring(5), points(30, 17)
    kp = observe(cams, X, noise=0.7)
    rng = np.random.default_rng(5)
    bad = rng.random(kp.shape[:3]) < 0.1
    kp[..., :2] += bad[..., None] * 150.0
    kp[0, :3, :, 2] = 0.0
    for thr in (None, 15.0):
        a = triangulate(kp, cams, reproj_threshold=thr, backend="numpy")
        b = triangulate(kp, cams, reproj_threshold=thr, backend="numba")
        np.testing.assert_allclose(a.points, b.points, atol=1e-8)
        np.testing.assert_array_equal(a.used, b.used)
        np.testing.assert_allclose(a.reprojection_error, b.reprojection_error, atol=1e-6)
        assert a.stats == b.stats


def test_backend_argument():
    cams, X = ring(3), points(2, 2)
    with pytest.raises(MarionetteError, match="backend"):
        triangulate(observe(cams, X), cams, backend="gpu")


def test_cli_cutoff_above_nyquist_and_swapped_resolution(tmp_path, capsys):
    rc = main(["triangulate", str(DEMO.pose_dir), "--calib", str(DEMO.calibration), "--fps", "10", "-o",
               str(tmp_path / "s.npz")])
    assert rc == 1 and "--cutoff 6.0 Hz must be below half the frame rate" in capsys.readouterr().err
    # keypoints in landscape pixel coordinates against the portrait calibration: warned
    root = _copy_demo(tmp_path, ["cam01_json", "cam02_json", "cam03_json", "cam04_json"])
    for f in root.glob("*/*.json"):
        text = f.read_text()
        doc = __import__("json").loads(text)
        for p in doc["people"]:
            k = p["pose_keypoints_2d"]
            for i in range(0, len(k), 3):
                k[i], k[i + 1] = k[i + 1], k[i]
        f.write_text(__import__("json").dumps(doc))
    rc = main(["triangulate", str(root), "--calib", str(DEMO.calibration), "--fps", "60", "-o",
               str(tmp_path / "s.npz")])
    assert "lie outside camera cam_01's 1088x1920 image" in capsys.readouterr().out
