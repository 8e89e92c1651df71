"""A cheap procedural capture, no Blender: a stick figure of coloured bones walking in place.

For tests and quick benchmarks of the actor pipeline. Each bone of a BODY_25B
skeleton is drawn as a thick, flat-coloured, shaded capsule (``cv2.line``), far
bones first, from cameras on a circle; the drawn pixels are the person mask. The
result is written in the capture format with ``engine.io.capture_folder``'s writer helpers, so
it is read back through exactly the same validating loader as a real capture.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from engine.geometry.camera import Camera
from engine.io.skeleton_file import SkeletonSequence
from engine.body.joint_sets import get_joint_set

# standing pose, metres, Z up, the subject faces -Y (so its left is +X)
_REST = {
    "Neck": (0, 0, 1.50), "HeadTop": (0, 0, 1.72), "Nose": (0, -0.10, 1.60),
    "LEye": (0.035, -0.09, 1.64), "REye": (-0.035, -0.09, 1.64), "LEar": (0.08, 0.0, 1.62), "REar": (-0.08, 0.0, 1.62),
    "LShoulder": (0.18, 0, 1.44), "RShoulder": (-0.18, 0, 1.44), "LElbow": (0.21, 0, 1.16), "RElbow": (-0.21, 0, 1.16),
    "LWrist": (0.23, -0.02, 0.90), "RWrist": (-0.23, -0.02, 0.90), "LHip": (0.10, 0, 0.95), "RHip": (-0.10, 0, 0.95),
    "LKnee": (0.10, -0.01, 0.52), "RKnee": (-0.10, -0.01, 0.52), "LAnkle": (0.10, 0.02, 0.10),
    "RAnkle": (-0.10, 0.02, 0.10), "LHeel": (0.10, 0.06, 0.04), "RHeel": (-0.10, 0.06, 0.04),
    "LBigToe": (0.09, -0.15, 0.02), "RBigToe": (-0.09, -0.15, 0.02), "LSmallToe": (0.14, -0.12, 0.02),
    "RSmallToe": (-0.14, -0.12, 0.02),
}


def _rot_x(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _rot_z(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def walk_sequence(frames: int, fps: float = 30.0) -> np.ndarray:
    """[T, 25, 3] BODY_25B joints walking in place while slowly turning."""
    js = get_joint_set("BODY_25B")
    rest = np.array([_REST[n] for n in js.names], dtype=np.float64)
    idx = {n: i for i, n in enumerate(js.names)}
    out = []
    for f in range(frames):
        ph = 2 * math.pi * f / 24.0
        p = rest.copy()

        def swing(chain, pivot, angle):
            R = _rot_x(angle)
            o = p[idx[pivot]].copy()
            for n in chain:
                p[idx[n]] = (p[idx[n]] - o) @ R.T + o

        for side, sgn in (("L", 1.0), ("R", -1.0)):
            a = 0.45 * sgn * math.sin(ph)
            foot = [side + n for n in ("Knee", "Ankle", "Heel", "BigToe", "SmallToe")]
            swing(foot, side + "Hip", a)
            swing(foot[1:], side + "Knee", -0.5 * max(0.0, -sgn * math.sin(ph + 0.6)) - 0.1)
            swing([side + "Elbow", side + "Wrist"], side + "Shoulder", -0.6 * a)
            swing([side + "Wrist"], side + "Elbow", 0.3 + 0.2 * math.sin(ph))
        yaw = 2 * math.pi * f / max(frames, 1) * 0.5
        out.append(p @ _rot_z(yaw).T)
    return np.asarray(out, dtype=np.float32)


def ring_cameras(n: int, size: int, radius: float = 3.0, height: float = 1.1) -> list[Camera]:
    cams = []
    for i in range(n):
        a = 2 * math.pi * i / n + 0.3
        eye = (radius * math.cos(a), radius * math.sin(a), height)
        cams.append(Camera.look_at(f"cam{i:02d}", eye, (0, 0, 0.9), size, size, fov_deg=40.0))
    return cams


def _bone_colours(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(0.15, 0.95, size=(n, 3))


def draw_view(joints: np.ndarray, cam: Camera, colours: np.ndarray, widths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RGB float [H, W, 3] and mask [H, W] of the stick figure, painter's order, 4x supersampled."""
    import cv2

    js = get_joint_set("BODY_25B")
    ss = 4
    H, W = cam.height * ss, cam.width * ss
    img = np.zeros((H, W, 3), np.float32)
    mask = np.zeros((H, W), np.float32)
    uv = cam.project(joints)
    z = cam.world_to_camera(joints)[:, 2]
    bones = js.bones
    order = sorted(range(len(bones)), key=lambda k: -(z[bones[k][0]] + z[bones[k][1]]))
    for k in order:
        a, b = bones[k]
        zm = 0.5 * (z[a] + z[b])
        th = max(1, int(round(2.2 * widths[k] * cam.fx / zm * ss)))
        pa = tuple(int(round((v + 0.5) * ss - 0.5)) for v in uv[a])
        pb = tuple(int(round((v + 0.5) * ss - 0.5)) for v in uv[b])
        col = colours[k]
        # two strokes: a darker rim then a lighter core, so bones have some shading to learn
        cv2.line(img, pa, pb, tuple(float(c) * 0.6 for c in col), th, cv2.LINE_8)
        cv2.line(img, pa, pb, tuple(float(c) for c in col), max(1, th // 2), cv2.LINE_8)
        cv2.line(mask, pa, pb, 1.0, th, cv2.LINE_8)
    img = cv2.resize(img, (cam.width, cam.height), interpolation=cv2.INTER_AREA)
    mask = cv2.resize(mask, (cam.width, cam.height), interpolation=cv2.INTER_AREA)
    return img, mask


def make_toy_capture(out, cameras: int = 4, frames: int = 12, size: int = 64, heldout_cameras: int = 1,
                     heldout_every: int = 4, seed: int = 0, overwrite: bool = False) -> Path:
    """Write a procedural capture to ``out`` and return its path."""
    from PIL import Image

    from engine.io.capture_folder import begin_capture, finish_capture

    js = get_joint_set("BODY_25B")
    cams = ring_cameras(cameras, size)
    names = [c.name for c in cams]
    joints = walk_sequence(frames)
    colours = _bone_colours(len(js.bones), seed)
    widths = js.default_widths
    partial = begin_capture(out, names, overwrite=overwrite)
    for cam in cams:
        for f in range(frames):
            rgb, mask = draw_view(joints[f], cam, colours, widths)
            rgba = np.concatenate([rgb, mask[..., None]], -1)
            Image.fromarray((np.clip(rgba, 0, 1) * 255 + 0.5).astype(np.uint8), "RGBA").save(
                partial / "images" / cam.name / f"{f:06d}.png")
            Image.fromarray((mask * 255 + 0.5).astype(np.uint8), "L").save(
                partial / "masks" / cam.name / f"{f:06d}.png")
    held_c = names[len(names) - heldout_cameras:] if heldout_cameras else []
    held_f = [f for f in range(frames) if heldout_every and f % heldout_every == heldout_every - 1]
    meta = {"fps": 30.0, "frames": list(range(frames)), "cameras": names,
            "train_cameras": [n for n in names if n not in held_c], "heldout_cameras": held_c,
            "heldout_frames": held_f, "joint_set": js.name, "resolution": [size, size], "seed": seed,
            "up_axis": "Z", "generator": {"tool": "engine.synthetic.toy_capture", "look": "stick figure"}}
    skel = SkeletonSequence(joints=joints, joint_set=js, fps=30.0, up_axis="Z")
    return finish_capture(partial, out, meta, cams, skel, overwrite=overwrite)
