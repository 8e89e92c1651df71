import numpy as np
import pytest

from engine import MarionetteError
from engine.io.calibration import load_calibration
from engine.cli import main
from engine.data import demo_capture_paths
from engine.capture.association import select_subject
from engine.io.keypoints import read_keypoints
from engine.capture.selfcalib import calibrate_from_keypoints, compare_cameras, subject_scale
from engine.body.joint_sets import BODY_25B
from engine.capture.triangulation import triangulate

DEMO = demo_capture_paths()


@pytest.fixture(scope="module")
def real_motion():
    """3D joints of the bundled capture (real motion) and its cameras, as ground truth."""
    cams = load_calibration(DEMO.calibration)
    kp = select_subject(read_keypoints(DEMO.pose_dir, joint_set="BODY_25B"), cams)
    X = triangulate(kp.data, cams).points
    return cams, X


def test_selfcalibration_recovers_synthetic_rig(real_motion):
    cams, X = real_motion
    X = X[::2]
    rng = np.random.default_rng(0)
    kp = np.stack([np.concatenate([c.project(X), np.full(X.shape[:2] + (1,), 0.9)], -1) for c in cams])
    kp[..., :2] += rng.normal(scale=0.5, size=kp[..., :2].shape)
    kp[~np.isfinite(kp).all(-1)] = [np.nan, np.nan, 0.0]
    shin = np.nanmedian(np.linalg.norm(X[:, BODY_25B.index("LKnee")] - X[:, BODY_25B.index("LAnkle")], axis=-1))
    res = calibrate_from_keypoints(kp, cams, BODY_25B, bone=("LKnee", "LAnkle", float(shin)), max_nfev=40)
    err = compare_cameras(res.cameras, cams)
    assert max(err["rotation_deg"]) < 0.3
    assert max(err["centre_m"]) < 0.03
    assert res.reprojection_px < 1.0
    # the new world is Z-up with the floor near z = 0
    feet = res.points[:, [BODY_25B.index(n) for n in ("LHeel", "RHeel")]]
    assert abs(np.nanpercentile(feet[..., 2], 5)) < 0.1
    assert np.nanmedian(res.points[:, BODY_25B.index("HeadTop"), 2]) > 1.3


def test_scale_arguments(real_motion):
    _, X = real_motion
    with pytest.raises(MarionetteError, match="exactly one"):
        subject_scale(X, BODY_25B)
    with pytest.raises(MarionetteError, match="no joint named"):
        subject_scale(X, BODY_25B, bone=("Knee", "LAnkle", 0.4))
    s, note = subject_scale(X * 0.5, BODY_25B, height=1.72)
    assert 1.7 < s < 2.3 and "height" in note


def test_cli_argument_errors(tmp_path, capsys):
    rc = main(["calibrate-from-keypoints", str(DEMO.pose_dir), "--focal-px", "1600", "--height", "1.7", "-o",
               str(tmp_path / "c.json")])
    assert rc == 1 and "--size" in capsys.readouterr().err
    rc = main(["calibrate-from-keypoints", str(DEMO.pose_dir), "--intrinsics", str(DEMO.calibration), "--bone",
               "LKnee", "LAnkle", "x", "-o", str(tmp_path / "c.json")])
    assert rc == 1 and "must be a number" in capsys.readouterr().err


def test_correct_pointing_removes_per_camera_bias(real_motion):
    from engine.capture.selfcalib import correct_pointing

    cams, X = real_motion
    X = X[::3]
    rng = np.random.default_rng(1)
    kp = np.stack([np.concatenate([c.project(X), np.full(X.shape[:2] + (1,), 0.9)], -1) for c in cams])
    kp[..., :2] += rng.normal(scale=1.0, size=kp[..., :2].shape)
    kp[~np.isfinite(kp).all(-1)] = [np.nan, np.nan, 0.0]
    # two cameras point a fraction of a degree off (about 15 px on these 1920-pixel frames)
    off = []
    for i, c in enumerate(cams):
        a, b = (0.008, -0.004) if i == 0 else ((-0.003, 0.007) if i == 2 else (0.0, 0.0))
        ca, sa, cb, sb = np.cos(a), np.sin(a), np.cos(b), np.sin(b)
        dR = np.array([[1, 0, 0], [0, cb, -sb], [0, sb, cb]]) @ np.array([[ca, 0, sa], [0, 1, 0], [-sa, 0, ca]])
        off.append(c.copy(R=dR @ c.R, t=dR @ c.t))

    def tri(k, cs):
        return triangulate(k, cs, min_confidence=0.3, reproj_threshold=25.0)

    before = np.nanmedian(tri(kp, off).reprojection_error)
    corr = correct_pointing(kp, off, tri)
    assert np.abs(corr.bias_before).max() > 5.0
    assert np.abs(corr.bias_after).max() < 0.5
    after = np.nanmedian(tri(kp, corr.cameras).reprojection_error)
    assert after < 0.5 * before and after < 2.0
    # centres, intrinsics and the unperturbed cameras' relative geometry are kept
    for c0, c1 in zip(off, corr.cameras):
        assert np.allclose(c0.center, c1.center, atol=1e-9) and np.allclose(c0.K, c1.K)
    assert corr.shift_px.shape == (len(cams), 2)
