"""``marionette ingest``: videos + calibration -> capture folder, on the vendored real clip.

The end-to-end tests run the real clip on a handful of frames (the whole clip is a slow
test); the two-person case is composited in keypoint space: a second, shifted copy of the
subject's triangulated skeleton is projected into the four cameras and written as a second
OpenPose person (in a different order per camera and frame).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from engine import MarionetteError
from engine.capture.ingest.crops import CropBox, CropSampler, crop_camera, square_box, undistorted
from engine.capture.ingest.pipeline import IngestOptions, ingest, open_inputs
from engine.capture.ingest.video import fit_camera_to_video, parse_frame_spec, probe_video
from engine.data import DATA_DIR
from engine.geometry.camera import Camera
from engine.io.calibration import load_calibration

CLIP = DATA_DIR / "pose2sim_demo"
VIDEOS = CLIP / "videos"
CALIB = CLIP / "Calib.qca.txt"
POSE = CLIP / "pose"

needs_detector = pytest.mark.skipif(
    __import__("importlib").util.find_spec("mediapipe") is None, reason="mediapipe (the video extra) not installed")


def _write_video(path: Path, frames: list[np.ndarray], fps: float) -> Path:
    import cv2

    h, w = frames[0].shape[:2]
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for f in frames:
        vw.write(f)
    vw.release()
    return path


def _tiny_videos(folder: Path, n: int = 4, frames: int = 6, fps: float = 60.0, size=(1088, 1920)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    img = np.full((size[1], size[0], 3), 90, np.uint8)
    for c in range(1, n + 1):
        _write_video(folder / f"cam0{c}.mp4", [img] * frames, fps)
    return folder


# ---------------------------------------------------------------------- units
def test_frame_spec():
    assert parse_frame_spec("0-9:3,20", 100) == [0, 3, 6, 9, 20]
    assert parse_frame_spec(None, 4) == [0, 1, 2, 3]
    for bad in ("5-2", "a-b", "0-100", "1-3:0"):
        with pytest.raises(MarionetteError, match="--frames"):
            parse_frame_spec(bad, 100)


def test_letterboxed_video_gets_adapted_intrinsics():
    cam = load_calibration(CALIB)[0]
    fitted, note = fit_camera_to_video(cam, 1080, 1920, "cam01.mp4")
    s = 1080 / 1088
    oy = (1920 - s * 1920) / 2
    assert "7.06 black rows" in note
    X = np.array([[0.0, 0.0, 1.0], [0.5, -0.3, 1.5]])
    u = cam.project(X)
    v = fitted.project(X)
    expect = s * (u + 0.5) - 0.5 + np.array([0.0, oy])
    assert np.allclose(v, expect, atol=1e-6)
    same, none = fit_camera_to_video(cam, 1088, 1920, "x")
    assert none is None and same is cam
    half, _ = fit_camera_to_video(cam, 544, 960, "x")  # a plain half-size re-encode
    assert np.allclose(half.project(X), 0.5 * (u + 0.5) - 0.5, atol=1e-6)
    with pytest.raises(MarionetteError, match="not made from the calibrated camera"):
        fit_camera_to_video(cam, 1088, 1500, "cam01.mp4")


def test_crop_camera_and_sampler_agree_with_the_full_camera():
    import cv2

    full = Camera.look_at("c", eye=(0, -3, 1), target=(0, 0, 1), width=400, height=300, f_px=350)
    full = full.copy(dist=np.array([-0.1, 0.05, 0.001, -0.001, 0.0]))
    box = CropBox(120.0, 60.0, 150.0)
    crop = crop_camera(undistorted(full), box, 64)
    X = np.array([[0.1, 0.2, 1.1], [-0.2, 0.0, 0.8]])
    u = undistorted(full).project(X, distort=False)
    assert np.allclose(crop.project(X), (u - [box.x0, box.y0]) * (64 / 150) - 0.5, atol=1e-9)
    # a dot drawn where the *distorted* camera sees X shows up where the crop camera projects X
    img = np.zeros((300, 400, 3), np.uint8)
    d = full.project(X[:1])[0]
    cv2.circle(img, (int(round(d[0])), int(round(d[1]))), 4, (255, 255, 255), -1)
    out = CropSampler(full, box, 64)(img)[..., 0].astype(float)
    ys, xs = np.nonzero(out > 0.3 * out.max())
    w = out[ys, xs]
    centre = np.array([(xs * w).sum() / w.sum(), (ys * w).sum() / w.sum()])
    assert np.linalg.norm(centre - crop.project(X[:1])[0]) < 0.6
    assert square_box(np.array([[0, 0], [10, 40]]), margin=0.0).side == 40  # min_side 32


# ---------------------------------------------------------------------- bad input
def test_video_problems_are_named(tmp_path):
    base = _tiny_videos(tmp_path / "v")
    # unreadable
    (base / "cam02.mp4").write_bytes(b"not a video at all")
    with pytest.raises(MarionetteError, match="cam02.mp4"):
        open_inputs(IngestOptions(videos=base, calib=CALIB, progress=False))
    # different lengths: refused, then accepted with --allow-trim
    _write_video(base / "cam02.mp4", [np.full((1920, 1088, 3), 90, np.uint8)] * 4, 60.0)
    with pytest.raises(MarionetteError, match="different lengths"):
        open_inputs(IngestOptions(videos=base, calib=CALIB, progress=False))
    inp = open_inputs(IngestOptions(videos=base, calib=CALIB, allow_trim=True, progress=False))
    assert inp.frames == [0, 1, 2, 3] and any("--allow-trim" in n for n in inp.notes)
    # different frame rates
    _write_video(base / "cam02.mp4", [np.full((1920, 1088, 3), 90, np.uint8)] * 6, 30.0)
    with pytest.raises(MarionetteError, match="different frame rates"):
        open_inputs(IngestOptions(videos=base, calib=CALIB, progress=False))
    _write_video(base / "cam02.mp4", [np.full((1920, 1088, 3), 90, np.uint8)] * 6, 60.0)
    # a video with no calibration camera
    shutil.copy(base / "cam01.mp4", base / "cam09.mp4")
    with pytest.raises(MarionetteError, match="cam09.mp4: no camera"):
        open_inputs(IngestOptions(videos=base, calib=CALIB, progress=False))
    (base / "cam09.mp4").unlink()
    # a calibration camera with no video is reported, not fatal
    (base / "cam04.mp4").unlink()
    inp = open_inputs(IngestOptions(videos=base, calib=CALIB, progress=False))
    assert any("without a video" in n and "cam_04" in n for n in inp.notes)
    # a size that is not a re-encode of the calibrated frame
    _write_video(base / "cam03.mp4", [np.full((1500, 1088, 3), 90, np.uint8)] * 6, 60.0)
    with pytest.raises(MarionetteError, match="cam03.mp4.*calibrate at the video's size"):
        open_inputs(IngestOptions(videos=base, calib=CALIB, progress=False))


def test_truncated_video_is_refused(tmp_path):
    data = (VIDEOS / "cam03.mp4").read_bytes()
    p = tmp_path / "cam03.mp4"
    p.write_bytes(data[: len(data) // 3])
    with pytest.raises(MarionetteError, match="cam03.mp4"):
        probe_video(p)


def test_cli_errors_are_one_line(tmp_path, capsys):
    from engine.cli import main

    out = tmp_path / "cap"
    out.mkdir()
    (out / "something").write_text("x")
    rc = main(["ingest", str(VIDEOS), "--calib", str(CALIB), "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == 1 and "exists and is not empty" in err and "Traceback" not in err
    rc = main(["ingest", str(VIDEOS), "--calib", str(CALIB), "--keypoints", str(POSE), "--frames", "0-9",
               "--subject", "7", "-o", str(tmp_path / "c2")])
    err = capsys.readouterr().err
    assert rc == 1 and "--subject 7" in err and "--list-subjects" in err
    assert not (tmp_path / "c2").exists() and not (tmp_path / "c2.partial").exists()


# ---------------------------------------------------------------------- several people
def _two_person_keypoints(folder: Path, frames: int = 100, shift=(1.6, 0.8, 0.0)) -> np.ndarray:
    """OpenPose folders holding the real subject plus a shifted copy (the second person), in random
    order per camera and frame; returns the second person's skeleton [T, J, 3]."""
    from engine.capture.reconstruct import reconstruct
    from engine.io.capture_folder import openpose_document

    rep = reconstruct(POSE, CALIB, fps=60.0)
    cams = load_calibration(CALIB)
    a = rep.skeleton.joints
    b = a + np.asarray(shift)
    rng = np.random.default_rng(0)
    for c, cam in enumerate(cams):
        d = folder / f"cam0{c + 1}_json"
        d.mkdir(parents=True)
        for t in range(frames):
            people = []
            for X in (a[t], b[t]):
                uv = cam.project(X)
                kp = np.concatenate([uv, np.where(np.isfinite(uv).all(1), 0.9, 0.0)[:, None]], 1)
                people.append(openpose_document(kp)["people"][0])
            if rng.random() < 0.5:
                people = people[::-1]
            (d / f"cam0{c + 1}.{t:04d}.json").write_text(json.dumps({"version": 1.3, "people": people}))
    return b


@needs_detector
def test_two_people_listed_and_the_chosen_one_kept(tmp_path):
    second = _two_person_keypoints(tmp_path / "pose")
    res = ingest(IngestOptions(videos=VIDEOS, calib=CALIB, keypoints=tmp_path / "pose", frames="0-99:25",
                               list_subjects=True, workers=1, progress=False))
    assert len(res.subjects) == 2, res.subjects
    assert all("4 frames" in line and "4.0 cameras" in line for line in res.subjects)
    # pick the shifted person by its root position: x is 1.6 m further along
    xs = [float(line.split(" x ")[1].split()[0]) for line in res.subjects]
    k = int(np.argmax(xs))
    out = tmp_path / "cap"
    res = ingest(IngestOptions(videos=VIDEOS, calib=CALIB, keypoints=tmp_path / "pose", frames="0-99:25",
                               subject=k, out=out, workers=1, progress=False, cutoff=0))
    from engine.io.capture_folder import load_capture

    cap = load_capture(out)
    got = cap.skeleton.joints
    want = second[[0, 25, 50, 75]]
    ok = np.isfinite(got).all(-1) & np.isfinite(want).all(-1)
    assert ok.mean() > 0.8
    assert np.median(np.linalg.norm(got[ok] - want[ok], axis=-1)) < 0.03  # the right person, every frame
    assert f"kept subject {k}" in cap.meta["generator"]["subject"]


# ---------------------------------------------------------------------- end to end
@needs_detector
def test_real_clip_few_frames_end_to_end(tmp_path):
    from engine.io.capture_folder import load_capture
    from engine.neural.actor.dataset import ViewSet, split_views

    out = tmp_path / "cap"
    res = ingest(IngestOptions(videos=VIDEOS, calib=CALIB, frames="0-99:33", resolution=96, out=out,
                               heldout_cameras=["cam02"], heldout_frames="99", workers=1, progress=False))
    cap = load_capture(out)
    assert cap.camera_names == ["cam01", "cam02", "cam03", "cam04"]
    assert cap.heldout_cameras == ["cam02"] and cap.heldout_frames == [99] and cap.frames == [0, 33, 66, 99]
    assert cap.joint_set.name == "BLAZEPOSE_33"
    assert all((c.width, c.height) == (96, 96) and not c.has_distortion for c in cap.cameras)
    assert (out / "contact_sheet.png").is_file() and (out / "cameras_full.json").is_file()
    J = cap.skeleton.joints
    assert np.isfinite(J).all(-1).mean() > 0.9
    # the skeleton projects inside the masks it seeded (the masks' own quality figure)
    for name, q in res.quality.items():
        assert q["coverage_mean"] > 0.8, (name, q)
    # and the subject is a person-sized thing standing on the platform (metres, Z up)
    height = np.nanmax(J[..., 2], axis=1) - np.nanmin(J[..., 2], axis=1)
    assert np.all((height > 1.0) & (height < 2.1))
    # the rig is colour-calibrated from the subject: a gain per camera and channel, recorded
    gains = cap.meta["generator"]["colour_gains"]
    assert sorted(gains) == cap.camera_names
    g = np.array(list(gains.values()))
    assert g.shape == (4, 3) and np.all((g > 0.25) & (g < 4)) and not np.allclose(g, 1)
    assert any(line.startswith("colour calibration") for line in res.lines)
    assert any(line.startswith("camera pointing refined") for line in res.lines)
    shifts = cap.meta["generator"]["pointing_shift_px"]
    assert sorted(shifts) == cap.camera_names and all(abs(v) <= 0.03 * 96 for s in shifts.values() for v in s)
    views = split_views(cap, "train")
    ds = ViewSet(cap, views, resolution=96)
    item = ds[0]
    assert item["rgb"].shape == (3, 96, 96) and float(item["mask"].mean()) > 0.05


@pytest.mark.slow
@needs_detector
def test_real_clip_whole(tmp_path):
    res = ingest(IngestOptions(videos=VIDEOS, calib=CALIB, out=tmp_path / "cap", progress=False))
    assert all(q["coverage_mean"] > 0.85 for q in res.quality.values())
