"""Capture folder format (engine only) and, further down, the Blender-rendered synthetic capture."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from engine import MarionetteError
from engine.camera import Camera, load_cameras_json
from engine.capture import (begin_capture, finish_capture, image_relpath, keypoints_relpath, load_capture,
                            mask_relpath, partial_path, read_openpose_json, write_openpose_json)
from engine.skeleton_io import SkeletonSequence
from engine.skeletons import BODY_25B


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
