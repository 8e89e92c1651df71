"""Videos in: probing, frame ranges, pairing with calibration cameras, size reconciliation.

Pixel convention (as everywhere in Marionette): pixel centres at integer coordinates, so
the continuous image spans ``[-0.5, W - 0.5]``.

**Videos whose size differs from the calibration.** A calibration is made at one image
size; the videos a user has are sometimes re-encoded at another. The only relation
assumed is the one encoders and players use: the calibrated frame scaled uniformly to fit
the video and centred, with black bars filling the rest (letterbox or pillarbox)::

    u_video = s (u + 0.5) - 0.5 + ox,   v_video = s (v + 0.5) - 0.5 + oy,
    s = min(W_video / W_calib, H_video / H_calib),  ox = (W_video - s W_calib) / 2,  oy = (H_video - s H_calib) / 2

Pose2Sim's demo has exactly this: cam01/cam02 are 1080x1920 against a 1088x1920
calibration, i.e. the calibrated frame scaled by 1080/1088 (to 1080x1906) with ~7 black
rows top and bottom (registered against the 1088-wide calibration photos to 0.3-0.5 px).
Bars wider than ``MAX_BAR_FRACTION`` of the image are refused: that is a different camera
or a crop, not a re-encode.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine import MarionetteError
from engine.geometry.camera import Camera

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg")
MAX_BAR_FRACTION = 0.05  # letterbox bars may take at most 5 % of the video's height (or width)


@dataclass
class VideoInfo:
    path: Path
    width: int
    height: int
    fps: float
    frames: int  # frames that decode (counted, not the container's claim)

    @property
    def name(self) -> str:
        return self.path.stem


def list_videos(inputs) -> list[Path]:
    """``inputs``: one folder (its video files) or a list of video files. Sorted naturally."""
    inputs = [Path(p) for p in ([inputs] if isinstance(inputs, (str, Path)) else inputs)]
    if not inputs:
        raise MarionetteError("ingest: no videos given (pass a folder of videos or the video files)")
    files: list[Path] = []
    for p in inputs:
        if p.is_dir():
            found = [f for f in p.iterdir() if f.is_file() and f.suffix.lower() in VIDEO_SUFFIXES]
            if not found:
                raise MarionetteError(f"{p}: folder holds no video files ({', '.join(VIDEO_SUFFIXES)})")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise MarionetteError(f"{p}: no such video file or folder")
    names = [f.stem for f in files]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise MarionetteError(f"ingest: several videos are named {dup} (names pair videos with cameras)")
    return sorted(files, key=lambda f: [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", f.stem)])


def probe_video(path) -> VideoInfo:
    """Open a video and count the frames that decode; errors name the file."""
    import cv2

    path = Path(path)
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise MarionetteError(f"{path}: cannot be opened as a video (unreadable or not a video file)")
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        claimed = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        ok, frame = cap.read()  # the first frame gives the size and proves the codec decodes
        if not ok or frame is None:
            raise MarionetteError(f"{path}: no frame decodes (empty, truncated or an unsupported codec)")
        n = 1
        while cap.grab():  # grab() skips decoding the pixels: counting the rest costs little
            n += 1
    finally:
        cap.release()
    size = frame.shape[1], frame.shape[0]
    if not (np.isfinite(fps) and fps > 0):
        raise MarionetteError(f"{path}: the container gives no frame rate (got {fps}); re-encode it with one")
    if claimed and abs(claimed - n) > 1:
        # a container that promises more frames than decode is a truncated file
        raise MarionetteError(f"{path}: the container claims {claimed} frames but only {n} decode "
                              "(truncated or damaged file)")
    return VideoInfo(path=path, width=int(size[0]), height=int(size[1]), fps=fps, frames=n)


def parse_frame_spec(spec: str | None, available: int, what: str = "--frames") -> list[int]:
    """``"A-B[:STEP]"`` ranges (inclusive), single numbers, comma-separated; None = all.

    >>> parse_frame_spec("0-9:3,20", 100)
    [0, 3, 6, 9, 20]
    """
    if spec is None or str(spec).strip() in ("", "all"):
        return list(range(available))
    out: list[int] = []
    for part in str(spec).split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d{1,9})(?:-(\d{1,9}))?(?::(\d{1,9}))?", part)
        if not m:
            raise MarionetteError(f"{what}: {part!r} is not a frame range; expected e.g. 0-99, 10-50:2, 7 "
                                  "or a comma-separated list of those")
        a = int(m.group(1))
        b = int(m.group(2)) if m.group(2) is not None else a
        step = int(m.group(3)) if m.group(3) is not None else 1
        if step < 1 or b < a:
            raise MarionetteError(f"{what}: {part!r} needs A <= B and STEP >= 1")
        if b >= available:
            raise MarionetteError(f"{what}: {part!r} asks for frame {b}, but the videos have {available} "
                                  f"frames (0-{available - 1})")
        out += list(range(a, b + 1, step))
    return sorted(set(out))


def fit_camera_to_video(cam: Camera, width: int, height: int, where: str) -> tuple[Camera, str | None]:
    """The calibration camera expressed in the video's pixels (see the module docstring).

    Returns the camera and a note (None when the sizes already agree).
    """
    if (cam.width, cam.height) == (width, height):
        return cam, None
    sx, sy = width / cam.width, height / cam.height
    s = min(sx, sy)
    ox, oy = (width - s * cam.width) / 2.0, (height - s * cam.height) / 2.0
    if ox > MAX_BAR_FRACTION * width or oy > MAX_BAR_FRACTION * height:
        raise MarionetteError(
            f"{where}: the video is {width}x{height} but calibration camera {cam.name!r} is "
            f"{cam.width}x{cam.height}; a uniform scale of {s:.4f} would leave bars of {ox:.0f} px (sides) and "
            f"{oy:.0f} px (top/bottom), more than {MAX_BAR_FRACTION:.0%} of the image — this video was not made "
            "from the calibrated camera's frames by scaling; calibrate at the video's size")
    scaled = cam.scaled(s)
    K = scaled.K.astype(np.float64).copy()
    K[0, 2] += ox  # the bars shift the picture
    K[1, 2] += oy
    out = scaled.copy(K=K, width=int(width), height=int(height))
    bars = (f"{oy:.2f} black rows top and bottom" if oy > 0.01 else
            f"{ox:.2f} black columns left and right" if ox > 0.01 else "no bars")
    note = (f"{where}: {width}x{height} video vs {cam.width}x{cam.height} calibration ({cam.name}): taken as the "
            f"calibrated frame scaled by {s:.5f} and centred ({bars}); intrinsics adapted")
    return out, note


def read_frames(info: VideoInfo, frames: list[int]):
    """Yield ``(frame_index, BGR uint8 image)`` for the wanted frames, in order, decoding sequentially."""
    import cv2

    wanted = sorted(set(int(f) for f in frames))
    cap = cv2.VideoCapture(str(info.path))
    try:
        i, k = 0, 0
        while k < len(wanted):
            if i < wanted[k]:
                if not cap.grab():
                    break
                i += 1
                continue
            ok, img = cap.read()
            if not ok or img is None:
                break
            yield i, img
            i += 1
            k += 1
        if k < len(wanted):
            raise MarionetteError(f"{info.path}: frame {wanted[k]} does not decode (the file ends early "
                                  "or is damaged)")
    finally:
        cap.release()
