import json
from pathlib import Path

import numpy as np
import pytest

from engine import MarionetteError
from engine.geometry.camera import Camera
from engine.data import demo_capture_paths
from engine.capture.association import select_subject
from engine.io.keypoints import frame_number, match_cameras, read_keypoints
from engine.body.joint_sets import BODY_25, BODY_25B, COCO_17, map_joints

DEMO = demo_capture_paths()


def write_openpose(path: Path, people):
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"version": 1.3, "people": [{"person_id": [-1], "pose_keypoints_2d": np.asarray(p, float).ravel().tolist()}
                                      for p in people]}
    path.write_text(json.dumps(doc))


def test_read_bundled_capture():
    kp = read_keypoints(DEMO.pose_dir)
    assert kp.data.shape == (4, 100, 25, 3)
    assert kp.camera_names == ["cam01_json", "cam02_json", "cam03_json", "cam04_json"]
    assert kp.joint_set is BODY_25B and "auto" in kp.summary.joint_set_note
    np.testing.assert_array_equal(kp.frame_indices, np.arange(100))
    assert kp.people is not None and kp.people.shape[2] >= 2  # a bystander in some frames
    assert kp.summary.multi_person_frames_per_camera["cam01_json"] > 0
    missing = kp.data[..., 2] == 0
    assert np.isnan(kp.data[..., 0][missing]).all() and np.isfinite(kp.data[..., 0][~missing]).all()


def test_body25_vs_body25b_detection(tmp_path):
    kp = read_keypoints(DEMO.pose_dir, joint_set="BODY_25B")
    xy = map_joints(kp.data[:2, :20, :, :2], BODY_25B, BODY_25, allow_approximate=False)  # BODY_25 order
    for c in range(2):
        for t in range(20):
            arr = np.concatenate([np.nan_to_num(xy[c, t]), np.isfinite(xy[c, t, :, :1]).astype(float)], -1)
            write_openpose(tmp_path / f"cam{c}" / f"{t:06d}_keypoints.json", [arr])
    back = read_keypoints(tmp_path)
    assert back.joint_set is BODY_25


def test_frame_numbers():
    assert frame_number(Path("cam01.0012.json")) == 12
    assert frame_number(Path("000034_keypoints.json")) == 34
    assert frame_number(Path("video_000000000007_keypoints.json")) == 7
    assert frame_number(Path("nothing.json")) is None


def _synthetic_folder(tmp_path, cams=2, frames=5, joints=17):
    rng = np.random.default_rng(0)
    for c in range(cams):
        for t in range(frames):
            pts = np.concatenate([rng.uniform(100, 500, (joints, 2)), np.full((joints, 1), 0.9)], -1)
            write_openpose(tmp_path / f"cam{c}" / f"{t:04d}.json", [pts])
    return tmp_path


def test_zeros_nan_and_negative_confidences_are_missing_and_counted(tmp_path):
    root = _synthetic_folder(tmp_path)
    doc = json.loads((root / "cam0" / "0001.json").read_text())
    flat = doc["people"][0]["pose_keypoints_2d"]
    flat[0:3] = [0, 0, 0]             # OpenPose "not detected": missing, not an error
    flat[3:6] = [10.0, 20.0, -0.5]    # negative confidence
    flat[8] = None                    # null confidence (NaN)
    (root / "cam0" / "0001.json").write_text(json.dumps(doc).replace("null", "NaN"))
    kp = read_keypoints(root)
    assert kp.joint_set is COCO_17
    assert kp.data[0, 1, 0, 2] == 0 and np.isnan(kp.data[0, 1, 0, 0])
    assert kp.data[0, 1, 1, 2] == 0 and kp.data[0, 1, 2, 2] == 0
    assert kp.summary.invalid_values == 2
    assert any("NaN/infinite/negative" in line for line in kp.summary.lines())


def test_frames_with_nobody_and_missing_files_are_counted(tmp_path):
    root = _synthetic_folder(tmp_path, frames=6)
    write_openpose(root / "cam1" / "0002.json", [])
    (root / "cam0" / "0004.json").unlink()
    kp = read_keypoints(root)
    assert kp.summary.empty_frames_per_camera["cam1"] == 1
    assert kp.summary.frames_missing_per_camera["cam0"] == 1
    assert (kp.data[1, 2, :, 2] == 0).all() and (kp.data[0, 4, :, 2] == 0).all()
    text = "\n".join(kp.summary.lines())
    assert "nobody" in text and "without a file" in text


@pytest.mark.parametrize("content, match", [
    ("{not json", r"0001\.json: not valid JSON"),
    ('{"version": 1.3}', r"0001\.json: missing field 'people'"),
    ('{"people": {}}', r"0001\.json: field 'people' must be a list"),
    ('{"people": [{"pose_keypoints_2d": [1, 2]}]}', r"0001\.json: people\[0\]\.pose_keypoints_2d"),
    ('{"people": [{"pose_keypoints_2d": ["a", 2, 3]}]}', r"0001\.json: people\[0\]\.pose_keypoints_2d contains"),
    ('{"people": [{"face": []}]}', r"0001\.json: people\[0\] has no field 'pose_keypoints_2d'"),
])
def test_malformed_files(tmp_path, content, match):
    root = _synthetic_folder(tmp_path)
    (root / "cam1" / "0001.json").write_text(content)
    with pytest.raises(MarionetteError, match=match):
        read_keypoints(root)


def test_folder_errors(tmp_path):
    with pytest.raises(MarionetteError, match="not found"):
        read_keypoints(tmp_path / "nope")
    with pytest.raises(MarionetteError, match="no camera sub-folders"):
        read_keypoints(tmp_path)
    root = _synthetic_folder(tmp_path / "a")
    (root / "cam2").mkdir()
    with pytest.raises(MarionetteError, match=r"cam2: empty camera folder"):
        read_keypoints(root)
    (root / "cam2").rmdir()
    write_openpose(root / "cam1" / "del_000001_0.json", [])
    with pytest.raises(MarionetteError, match=r"del_000001_0\.json: frame number 0 also used"):
        read_keypoints(root)
    (root / "cam1" / "del_000001_0.json").unlink()
    pts = np.ones((25, 3))
    write_openpose(root / "cam1" / "0009.json", [pts])
    with pytest.raises(MarionetteError, match="25 joints, other files have 17"):
        read_keypoints(root)


def test_unknown_joint_count(tmp_path):
    write_openpose(tmp_path / "c0" / "0.json", [np.ones((18, 3))])
    write_openpose(tmp_path / "c1" / "0.json", [np.ones((18, 3))])
    with pytest.raises(MarionetteError, match="18 joints per person.*--joint-set"):
        read_keypoints(tmp_path)
    with pytest.raises(MarionetteError, match="BODY_25B has 25 joints"):
        read_keypoints(tmp_path, joint_set="BODY_25B")


def test_coco_keypoint_files(tmp_path):
    for c in range(2):
        images = [{"id": 100 + t, "file_name": f"cam{c}_{t:05d}.jpg", "width": 640, "height": 480} for t in range(3)]
        anns = [{"id": t, "image_id": 100 + t, "category_id": 1, "num_keypoints": 17,
                 "keypoints": [v for j in range(17) for v in (10.0 + j, 20.0 + t, 2 if j else 1)]} for t in range(3)]
        anns[0]["keypoints"][3 * 5 + 2] = 0  # joint 5 unlabelled in frame 0
        (tmp_path / f"cam{c}.json").write_text(json.dumps({"images": images, "annotations": anns,
                                                           "categories": [{"id": 1, "name": "person"}]}))
    kp = read_keypoints(tmp_path)
    assert kp.joint_set is COCO_17 and kp.camera_names == ["cam0", "cam1"]
    assert kp.data.shape == (2, 3, 17, 3)
    np.testing.assert_array_equal(kp.frame_indices, [0, 1, 2])
    assert kp.data[0, 0, 0, 2] == 0.5 and kp.data[0, 0, 1, 2] == 1.0 and kp.data[0, 0, 5, 2] == 0.0
    (tmp_path / "cam1.json").write_text(json.dumps({"images": []}))
    with pytest.raises(MarionetteError, match=r"cam1\.json: missing field 'annotations'"):
        read_keypoints(tmp_path)


def test_camera_matching():
    m, how = match_cameras(["cam01_json", "cam02_json"], ["cam_02", "cam_01"])
    assert m == [1, 0] and "by name" in how
    m, how = match_cameras(["cam01_json", "cam02_json", "extra"], ["cam_01", "cam_02"])
    assert m == [0, 1, None]
    m, how = match_cameras(["left", "right"], ["A", "B"])
    assert m == [0, 1] and "sorted order" in how
    with pytest.raises(MarionetteError, match="counts differ"):
        match_cameras(["left", "right", "top"], ["A", "B"])


def _ring_cameras(n=3):
    cams = []
    for i in range(n):
        a = 2 * np.pi * i / n
        cams.append(Camera.look_at(f"c{i}", [3.5 * np.cos(a), 3.5 * np.sin(a), 1.5], [0, 0, 1.0], 1000, 1000,
                                   f_px=900))
    return cams


def test_subject_selection_tracks_one_person(tmp_path):
    rng = np.random.default_rng(3)
    cams = _ring_cameras(3)
    T, J = 12, 17
    base = rng.normal(scale=0.25, size=(J, 3)) + [0, 0, 1.0]
    subject = base[None] + np.linspace(0, 0.3, T)[:, None, None] * [1, 0, 0]
    other = base[None] + [1.2, 0.9, 0.0] + np.zeros((T, 1, 1))
    truth = np.zeros((3, T), int)
    for c, cam in enumerate(cams):
        for t in range(T):
            people = []
            for X in (subject[t], other[t]):
                px = cam.project(X) + rng.normal(scale=0.5, size=(J, 2))
                people.append(np.concatenate([px, np.full((J, 1), 0.9)], -1))
            if c == 2:
                people = people[:1]  # the bystander is outside camera 2's view
            elif rng.random() < 0.5:
                people = people[::-1]
                truth[c, t] = 1
            write_openpose(tmp_path / f"c{c}" / f"{t:03d}.json", people)
    kp = read_keypoints(tmp_path)
    sel = select_subject(kp, cams)
    np.testing.assert_array_equal(sel.person_index, truth)
    assert "tracked by proximity" in sel.summary.subject_note
    expected = np.stack([cams[c].project(subject) for c in range(3)])
    assert np.abs(sel.data[..., :2] - expected).max() < 3.0
