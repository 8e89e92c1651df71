"""2D pose and person segmentation from images: MediaPipe's BlazePose (legacy Pose solution).

Its weights ship inside the ``mediapipe`` 0.10.14 wheel (``pose_landmark_full.tflite``, the
pose detector and the segmentation head), so nothing is downloaded at run time. The wheel's
declared dependencies would replace ``opencv-python-headless`` and numpy 1.x; install it as
``scripts/install.sh`` does: ``pip install --no-deps mediapipe==0.10.14`` plus the ``video``
extra (absl-py, attrs, flatbuffers, protobuf<5, matplotlib).

Landmarks come out in the BLAZEPOSE_33 joint set (``engine.body.joint_sets``), in pixels of the
image given (integer pixel centres: MediaPipe's normalised ``x * W - 0.5``), with the
landmark's visibility as confidence. The detector sees one person per image; ``detect_people``
finds several by blanking each person found and looking again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from engine import MarionetteError

MEDIAPIPE_VERSION = "0.10.14"
NUM_LANDMARKS = 33


@dataclass
class Detection:
    keypoints: np.ndarray  # [33, 3] x, y (pixels), confidence (visibility 0..1)
    mask: np.ndarray | None  # [H, W] float32 person probability, or None

    def box(self, min_confidence: float = 0.3) -> tuple[float, float, float, float] | None:
        ok = self.keypoints[:, 2] > min_confidence
        if ok.sum() < 3:
            return None
        xy = self.keypoints[ok, :2]
        return float(xy[:, 0].min()), float(xy[:, 1].min()), float(xy[:, 0].max()), float(xy[:, 1].max())


def _import_mediapipe():
    os.environ.setdefault("GLOG_minloglevel", "2")  # MediaPipe's C++ logging is chatty on stderr
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import warnings

    # protobuf 4.25 warns about an API MediaPipe 0.10.14 still uses; nothing a user can act on
    warnings.filterwarnings("ignore", message=r"SymbolDatabase\.GetPrototype\(\) is deprecated")
    try:
        import mediapipe as mp
    except ImportError as exc:
        raise MarionetteError(
            f"the 2D pose detector needs mediapipe {MEDIAPIPE_VERSION} (its wheel carries the BlazePose weights); "
            f"install it with:  pip install --no-deps mediapipe=={MEDIAPIPE_VERSION} && pip install -e '.[video]'  "
            f"(scripts/install.sh does this), or give existing 2D keypoints with --keypoints DIR  [{exc}]") from None
    if not hasattr(mp, "solutions") or not hasattr(mp.solutions, "pose"):
        raise MarionetteError(f"mediapipe {getattr(mp, '__version__', '?')} has no legacy Pose solution with "
                              f"bundled weights; install mediapipe=={MEDIAPIPE_VERSION}")
    return mp


def detector_available() -> bool:
    try:
        _import_mediapipe()
        return True
    except MarionetteError:
        return False


class PoseDetector:
    """One BlazePose instance (not thread-safe; make one per worker process).

    ``static=True`` treats every image independently (crops that move, several people);
    ``static=False`` lets MediaPipe track between consecutive frames of one camera.
    """

    def __init__(self, static: bool = True, model_complexity: int = 1, min_detection_confidence: float = 0.5,
                 segmentation: bool = True):
        mp = _import_mediapipe()
        self._pose = mp.solutions.pose.Pose(static_image_mode=static, model_complexity=model_complexity,
                                            enable_segmentation=segmentation, smooth_segmentation=not static,
                                            min_detection_confidence=min_detection_confidence)

    def close(self) -> None:
        self._pose.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def detect(self, bgr: np.ndarray) -> Detection | None:
        """Detect the (one) person in a BGR uint8 image, or None."""
        if bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.dtype != np.uint8:
            raise MarionetteError(f"detector: expected an HxWx3 uint8 image, got {bgr.shape} {bgr.dtype}")
        H, W = bgr.shape[:2]
        rgb = np.ascontiguousarray(bgr[..., ::-1])
        res = self._pose.process(rgb)
        if res.pose_landmarks is None:
            return None
        lm = res.pose_landmarks.landmark
        kp = np.array([[p.x * W - 0.5, p.y * H - 0.5, p.visibility] for p in lm], dtype=np.float64)
        mask = None if res.segmentation_mask is None else np.asarray(res.segmentation_mask, dtype=np.float32)
        return Detection(kp, mask)


def blank_person(bgr: np.ndarray, det: Detection, grow: float = 0.15) -> np.ndarray:
    """A copy of the image with a detected person painted out (mask, dilated, and landmark box)."""
    import cv2

    out = bgr.copy()
    H, W = out.shape[:2]
    region = np.zeros((H, W), np.uint8)
    if det.mask is not None:
        region[det.mask > 0.3] = 1
        k = max(3, int(0.02 * max(H, W)) | 1)
        region = cv2.dilate(region, np.ones((k, k), np.uint8))
    box = det.box(0.1)
    if box is not None:
        x0, y0, x1, y1 = box
        gx, gy = grow * (x1 - x0) + 8, grow * (y1 - y0) + 8
        xa, ya = int(max(0, x0 - gx)), int(max(0, y0 - gy * 1.5))  # the head top lies above the landmarks
        xb, yb = int(min(W, x1 + gx)), int(min(H, y1 + gy))
        region[ya:yb, xa:xb] = 1
    out[region > 0] = 127
    return out


def _overlaps(box, boxes, iou: float = 0.2) -> bool:
    x0, y0, x1, y1 = box
    for a0, b0, a1, b1 in boxes:
        iw, ih = max(0.0, min(x1, a1) - max(x0, a0)), max(0.0, min(y1, b1) - max(y0, b0))
        inter = iw * ih
        union = (x1 - x0) * (y1 - y0) + (a1 - a0) * (b1 - b0) - inter
        if union > 0 and inter / union > iou:
            return True
        cx, cy = 0.5 * (x0 + x1), 0.5 * (y0 + y1)
        if a0 <= cx <= a1 and b0 <= cy <= b1:
            return True
    return False


def detect_people(detector: PoseDetector, bgr: np.ndarray, max_people: int = 4, tiles: bool = True) -> list[Detection]:
    """Up to ``max_people`` people in one image.

    BlazePose returns one person per image. People are found one at a time on the whole
    image, blanking each one found; then, because the detector works on a 224-pixel view of
    the image and misses people who are small in a large frame, on overlapping square tiles
    (half the shorter side) of what is left. False detections are expected here: the
    cross-view association (``engine.capture.ingest.subjects``) keeps only people that triangulate.
    """
    found: list[Detection] = []
    img = bgr
    for _ in range(max_people):
        det = detector.detect(img)
        if det is None or det.box(0.3) is None:
            break
        found.append(det)
        img = blank_person(img, det)
    if not tiles or len(found) >= max_people:
        return found
    H, W = img.shape[:2]
    side = min(H, W) // 2
    if side < 64:
        return found
    step = side // 2
    boxes = [d.box(0.1) for d in found]
    for y0 in sorted(set(list(range(0, H - side + 1, step)) + [H - side])):
        for x0 in sorted(set(list(range(0, W - side + 1, step)) + [W - side])):
            if len(found) >= max_people:
                return found
            det = detector.detect(np.ascontiguousarray(img[y0:y0 + side, x0:x0 + side]))
            if det is None or det.box(0.3) is None:
                continue
            kp = det.keypoints.copy()
            kp[:, 0] += x0
            kp[:, 1] += y0
            mask = None
            if det.mask is not None:
                mask = np.zeros((H, W), np.float32)
                mask[y0:y0 + side, x0:x0 + side] = det.mask
            full = Detection(kp, mask)
            box = full.box(0.1)
            if box is None or _overlaps(box, boxes):
                continue
            found.append(full)
            boxes.append(box)
            img = blank_person(img, full)
    return found
