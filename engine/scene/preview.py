"""A quick-look PNG of a 3D skeleton sequence (OpenCV drawing, no Blender).

The image is a grid: one row per orthographic view of the world (front: looking
along the horizontal axis after the first, e.g. world +Y for a Z-up world; side:
along the first horizontal axis; top: down the up axis), one column per sampled
frame. Views are of the world, not of the subject's facing direction.
Bones of the subject's left side are blue, right side red, the rest green-grey;
joints are dots. Every panel shares one metric scale, printed in the corner.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from engine import MarionetteError
from engine.geometry.axes import view_frame
from engine.io.skeleton_file import SkeletonSequence

_LEFT = (220, 120, 30)    # BGR blue-ish
_RIGHT = (40, 40, 220)    # red
_MID = (90, 160, 90)      # green-grey
_BG = (250, 250, 250)


def _bone_colour(canon_a: str, canon_b: str):
    side = canon_b if ("left" in canon_b or "right" in canon_b) else canon_a
    if side.startswith("left"):
        return _LEFT
    if side.startswith("right"):
        return _RIGHT
    return _MID


def render_preview(seq: SkeletonSequence, path, frames: int = 4, panel: int = 300) -> Path:
    """Write a preview PNG of ``seq`` (``frames`` evenly spaced frames x 3 views); returns the path."""
    import cv2

    joints = np.asarray(seq.joints, dtype=np.float64)
    valid_frames = np.flatnonzero(np.isfinite(joints).all(-1).any(-1))
    if valid_frames.size == 0:
        raise MarionetteError("preview: the skeleton has no valid joint in any frame")
    pick = valid_frames[np.linspace(0, valid_frames.size - 1, min(frames, valid_frames.size)).round().astype(int)]
    basis = view_frame(seq.up_axis)  # right, forward, up
    views = [("front", 0, 2, 1), ("side", 1, 2, 1), ("top", 0, 1, 1)]  # (name, horizontal, vertical) axes
    local = joints @ basis.T  # coordinates along (right, forward, up)
    finite = local[np.isfinite(local).all(-1)]
    lo, hi = finite.min(0), finite.max(0)
    extent = float(max(hi - lo)) * 1.1 + 1e-6
    scale = (panel - 20) / extent
    js = seq.joint_set
    colours = [_bone_colour(js.canonical[a], js.canonical[b]) for a, b in js.bones]
    H, W = len(views) * panel + 30, len(pick) * panel
    img = np.full((H, W, 3), _BG, dtype=np.uint8)
    for r, (vname, hx, vy, _) in enumerate(views):
        for c, t in enumerate(pick):
            x0, y0 = c * panel, 30 + r * panel
            pts = local[t]
            ok = np.isfinite(pts).all(-1)
            centre = np.nanmean(pts[ok], axis=0) if ok.any() else (lo + hi) / 2
            # keep the vertical position global for front/side views so the ground stays put
            ch = centre[hx]
            cv_ = (lo[vy] + hi[vy]) / 2 if vy == 2 else centre[vy]
            u = x0 + panel / 2 + (pts[:, hx] - ch) * scale
            v = y0 + panel / 2 - (pts[:, vy] - cv_) * scale
            cv2.rectangle(img, (x0, y0), (x0 + panel - 1, y0 + panel - 1), (210, 210, 210), 1)
            if vy == 2:  # ground line at the lowest point of the sequence
                g = int(round(y0 + panel / 2 - (lo[2] - cv_) * scale))
                cv2.line(img, (x0 + 5, g), (x0 + panel - 6, g), (180, 180, 180), 1, cv2.LINE_AA)
            for (a, b), col in zip(js.bones, colours):
                if ok[a] and ok[b]:
                    cv2.line(img, (int(round(u[a])), int(round(v[a]))), (int(round(u[b])), int(round(v[b]))),
                             col, 2, cv2.LINE_AA)
            for j in np.flatnonzero(ok):
                cv2.circle(img, (int(round(u[j])), int(round(v[j]))), 3, (40, 40, 40), -1, cv2.LINE_AA)
            frame_no = int(seq.extras["frame_indices"][t]) if "frame_indices" in seq.extras else int(t)
            cv2.putText(img, f"{vname}  frame {frame_no}", (x0 + 6, y0 + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                        (60, 60, 60), 1, cv2.LINE_AA)
    bar = 0.5 * scale  # 50 cm scale bar
    cv2.line(img, (10, 18), (10 + int(bar), 18), (0, 0, 0), 2)
    cv2.putText(img, f"50 cm   left side blue, right side red   up axis {seq.up_axis}   {seq.joint_set.name}",
                (16 + int(bar), 22), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise MarionetteError(f"{path}: PNG encoding failed")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(buf.tobytes())
    os.replace(tmp, path)
    return path
