"""Small valid inputs for the hardening and fuzzing tests (tests/test_hardening.py, tests/test_fuzz_*.py).

Every builder writes a *valid* file or folder that the matching reader or command accepts;
the tests then mutate it. All are cheap (no Blender, no training).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from engine.body.joint_sets import get_joint_set
from engine.geometry.camera import save_cameras
from engine.io.skeleton_file import SkeletonSequence, save_skeleton
from engine.synthetic.toy_capture import ring_cameras, walk_sequence

BODY_25B = get_joint_set("BODY_25B")


def openpose_doc(keypoints: np.ndarray) -> dict:
    return {"version": 1.3, "people": [{"person_id": [-1],
                                        "pose_keypoints_2d": [round(float(v), 3) for v in keypoints.ravel()]}]}


def keypoint_capture(root, cameras: int = 3, frames: int = 6, size: int = 400) -> tuple[Path, Path]:
    """OpenPose folders (one per camera) of the toy walk seen by a camera ring, and its cameras.json.

    Returns (pose folder, calibration file); ``marionette triangulate`` accepts them.
    """
    root = Path(root)
    cams = ring_cameras(cameras, size)
    joints = walk_sequence(frames)
    pose = root / "pose"
    for cam in cams:
        folder = pose / f"{cam.name}_json"
        folder.mkdir(parents=True)
        uv = cam.project(joints)  # [T, J, 2]
        for f in range(frames):
            kp = np.concatenate([uv[f], np.full((uv.shape[1], 1), 0.9)], -1)
            (folder / f"{cam.name}.{f:04d}.json").write_text(json.dumps(openpose_doc(kp)))
    calib = root / "cameras.json"
    save_cameras(calib, cams)
    return pose, calib


def skeleton_file(path, frames: int = 8, fps: float = 30.0) -> Path:
    """A BODY_25B skeleton .npz (the toy walk) with frame_indices, as triangulate writes it."""
    path = Path(path)
    seq = SkeletonSequence(walk_sequence(frames), BODY_25B, fps, up_axis="Z",
                           extras={"frame_indices": np.arange(frames, dtype=np.int64)})
    save_skeleton(path, seq)
    return path


def actor_dir(path, seed: int = 0) -> Path:
    """An untrained tiny actor folder (actor.json + actor.safetensors)."""
    from engine.neural.actor.model import Actor, make_config
    from engine.neural.actor.model_file import save_actor

    cfg = make_config("BODY_25B", latent_dim=4, preset="tiny")
    return save_actor(path, Actor(cfg, seed=seed), {"resolution": [32, 32]})


def toy_capture(path) -> Path:
    from engine.synthetic.toy_capture import make_toy_capture

    return make_toy_capture(path, cameras=3, frames=4, size=32, heldout_every=2)


def copy_tree(src, dst) -> Path:
    shutil.copytree(src, dst)
    return Path(dst)


def files_under(root) -> list[str]:
    """Sorted relative paths of everything under ``root`` (files and folders)."""
    root = Path(root)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []
