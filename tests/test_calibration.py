import json

import numpy as np
import pytest

from engine import MarionetteError
from engine.io.calibration import load_calibration, load_calibration_info, write_pose2sim_toml
from engine.geometry.camera import Camera, save_cameras
from engine.data import demo_capture_paths

QCA = demo_capture_paths().calibration


def test_qualisys_reader_on_bundled_calibration():
    info = load_calibration_info(QCA)
    cams = info.cameras
    assert info.format == "qualisys-qca" and info.up_axis == "Z"
    assert [c.name for c in cams] == ["cam_01", "cam_02", "cam_03", "cam_04"]
    for c in cams:
        assert (c.width, c.height) == (1088, 1920)  # portrait, from <fov_video>
        assert 1650 < c.fx < 1700 and abs(c.fx / c.fy - 1) < 1e-3  # 1/64 pixel units
        assert 0.4 * c.width < c.cx < 0.6 * c.width and 0.4 * c.height < c.cy < 0.6 * c.height
        # every camera sees the middle of the capture volume, about 1 m up
        assert c.world_to_camera(np.array([0.0, 0.0, 1.0]))[2] > 1.0
        assert 1.5 < c.center[2] < 2.2  # cameras mounted ~1.7-2.1 m high (Z up, millimetres -> metres)
    np.testing.assert_allclose(cams[0].center, [1.4602323709, -1.9091590482, 1.8965058524], atol=1e-9)
    np.testing.assert_allclose(cams[0].K[0, 0], 107599.671875 / 64)


def test_qualisys_conventions_reproject_real_keypoints():
    """The right conventions make the bundled OpenPose detections agree across views."""
    from engine.capture.association import select_subject
    from engine.io.keypoints import read_keypoints
    from engine.capture.triangulation import triangulate

    cams = load_calibration(QCA)
    kp = select_subject(read_keypoints(demo_capture_paths().pose_dir, joint_set="BODY_25B"), cams)
    res = triangulate(kp.data, cams, reproj_threshold=None)
    assert np.nanmedian(res.reprojection_error) < 15.0  # a wrong axis convention gives hundreds of pixels
    nose = kp.joint_set.index("Nose")
    assert np.nanmedian(res.reprojection_error[:, nose]) < 5.0


def test_pose2sim_toml_round_trip(tmp_path):
    cams = load_calibration(QCA)
    path = tmp_path / "Calib.toml"
    write_pose2sim_toml(path, cams)
    info = load_calibration_info(path)
    assert info.format == "pose2sim-toml"
    for a, b in zip(cams, info.cameras):
        assert a.name == b.name and (a.width, a.height) == (b.width, b.height)
        np.testing.assert_allclose(a.P, b.P, atol=1e-9)
        np.testing.assert_allclose(a.dist[:4], b.dist[:4])


def test_panoptic_json(tmp_path):
    R = np.eye(3)
    doc = {"calibDataSource": "test", "cameras": [
        {"name": "00_00", "type": "hd", "resolution": [1920, 1080], "panel": 0, "node": 0,
         "K": [[1400, 0, 960], [0, 1400, 540], [0, 0, 1]], "distCoef": [-0.2, 0.1, 0, 0, 0],
         "R": R.tolist(), "t": [[10.0], [-20.0], [300.0]]},
        {"name": "00_01", "type": "hd", "resolution": [1920, 1080], "panel": 0, "node": 1,
         "K": [[1400, 0, 960], [0, 1400, 540], [0, 0, 1]], "distCoef": [0, 0, 0, 0, 0],
         "R": R.tolist(), "t": [[0.0], [0.0], [250.0]]}]}
    path = tmp_path / "calibration_seq.json"
    path.write_text(json.dumps(doc))
    info = load_calibration_info(path)
    assert info.format == "panoptic-json" and info.up_axis == "-Y"
    np.testing.assert_allclose(info.cameras[0].t, [0.1, -0.2, 3.0])  # centimetres -> metres
    assert [c.name for c in info.cameras] == ["00_00", "00_01"]


def test_marionette_json_dispatch(tmp_path):
    cam = Camera.look_at("a", [2, 0, 1], [0, 0, 1], 640, 480, f_px=500)
    path = tmp_path / "cams.json"
    save_cameras(path, [cam, cam.copy(name="b")], up_axis="Y")
    info = load_calibration_info(path)
    assert info.format == "marionette-json" and info.up_axis == "Y" and len(info.cameras) == 2


# ---------------------------------------------------------------------- bad input
def _qca_text():
    return QCA.read_text()


@pytest.mark.parametrize("edit, match", [
    (lambda s: s.replace('r11="0.5536380477336265" ', ""), "missing attribute 'r11'"),
    (lambda s: s.replace('focalLengthU="107599.671875"', 'focalLengthU="abc"'), "'focalLengthU' is 'abc'"),
    (lambda s: s.replace('focalLengthU="107599.671875"', 'focalLengthU="0"'), "field 'K'"),
    (lambda s: s.replace('viewrotation="0"', 'viewrotation="90"', 1), "viewrotation"),
    (lambda s: s.replace("</cameras>", ""), "not valid XML"),
    (lambda s: s.replace('<fov_video bottom="1919" left="0" right="1087" top="0"/>', "", 1), "<fov_video>"),
])
def test_bad_qualisys_files(tmp_path, edit, match):
    path = tmp_path / "bad.qca.txt"
    path.write_text(edit(_qca_text()))
    with pytest.raises(MarionetteError, match=match) as info:
        load_calibration(path)
    assert "bad.qca.txt" in str(info.value)


GOOD_TOML = """[cam_01]
name = "cam01"
size = [ 1088.0, 1920.0]
matrix = [ [ 1680.0, 0.0, 540.0], [ 0.0, 1680.0, 960.0], [ 0.0, 0.0, 1.0]]
distortions = [ -0.04, 0.13, 0.0, 0.0]
rotation = [ 1.2, -0.3, 0.2]
translation = [ 0.1, 0.9, 3.9]
fisheye = false

[metadata]
adjusted = false
error = 0.0
"""


@pytest.mark.parametrize("edit, match", [
    (lambda s: s.replace("matrix = [ [ 1680.0, 0.0, 540.0], [ 0.0, 1680.0, 960.0], [ 0.0, 0.0, 1.0]]",
                         "matrix = [ [ 0.0, 0.0, 0.0], [ 0.0, 0.0, 0.0], [ 0.0, 0.0, 1.0]]"), r"\[cam_01\].*field 'K'"),
    (lambda s: s.replace("translation = [ 0.1, 0.9, 3.9]\n", ""), "missing field 'translation'"),
    (lambda s: s.replace("size = [ 1088.0, 1920.0]", "size = [ 1088.0]"), "field 'size'"),
    (lambda s: s.replace("rotation = [ 1.2, -0.3, 0.2]", "rotation = [ 1.2, -0.3]"), "field 'rotation'"),
    (lambda s: s.replace("fisheye = false", "fisheye = true"), "fisheye"),
    (lambda s: s.replace("[cam_01]", "[cam_01"), "not a recognised calibration"),
    (lambda s: "[metadata]\nerror = 0.0\n", "no camera tables"),
])
def test_bad_pose2sim_toml(tmp_path, edit, match):
    path = tmp_path / "Calib.toml"
    path.write_text(edit(GOOD_TOML))
    with pytest.raises(MarionetteError, match=match) as info:
        load_calibration(path)
    assert "Calib.toml" in str(info.value)


def test_good_toml_parses(tmp_path):
    path = tmp_path / "Calib.toml"
    path.write_text(GOOD_TOML)
    (cam,) = load_calibration(path)
    assert cam.name == "cam01" and (cam.width, cam.height) == (1088, 1920)


def test_missing_empty_and_unknown_files(tmp_path):
    with pytest.raises(MarionetteError, match="not found"):
        load_calibration(tmp_path / "nope.toml")
    with pytest.raises(MarionetteError, match="is a folder"):
        load_calibration(tmp_path)
    (tmp_path / "empty.toml").write_text("   \n")
    with pytest.raises(MarionetteError, match="empty"):
        load_calibration(tmp_path / "empty.toml")
    (tmp_path / "bad.json").write_text('{"cameras": [')
    with pytest.raises(MarionetteError, match="bad.json: not valid JSON"):
        load_calibration(tmp_path / "bad.json")
    (tmp_path / "bin.dat").write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(MarionetteError, match="bin.dat"):
        load_calibration(tmp_path / "bin.dat")
