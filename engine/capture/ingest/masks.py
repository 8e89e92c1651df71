"""Person masks: the detector's segmentation, refined with the multi-view 3D skeleton.

Per view and frame (in the crop's pixels):

1. **Seeds from the skeleton.** Every bone of the triangulated skeleton is projected and
   drawn as a capsule whose radius is a fraction of the bone's default width (metres, from
   the joint set) at the bone's depth: thin capsules are *sure person*; the detector's mask
   above 0.5 is *probably person*; a band around person and capsules is *probably
   background*; everything further is *sure background*.
2. **The empty background** (static cameras): per pixel, the median of the frames in which
   neither the detector nor the skeleton puts the person there (``background_plate``). Where
   that plate is known, a pixel that matches it (colour within the sensor noise, or a darker
   version of it of the same hue: the person's shadow) is *probably background* even where the
   detector said person — chairs, floor patches and shadows the segmenter annexed — and
   *sure background* outside the body's capsules; a pixel that differs clearly from it, near
   the person, is *probably person*. Pixels the person covers in nearly every frame have no
   plate and keep the detector's label.
3. **GrabCut** (colour models of person and background) settles the probable pixels.
4. **Only the subject:** connected blobs that no capsule touches are removed (other people,
   furniture the segmenter took for a person).

Quality, per view: ``coverage`` — the fraction of points sampled along the projected bones
that fall inside the detector's own segmentation (before refinement, which is seeded by the
bones and would cover them by construction; a user's ``--masks`` are scored as given) — low
when segmentation and 3D skeleton disagree; ``refine_iou`` — IoU of the refined mask with the
detector's (how much refinement changed); ``area`` — mask area over
the view's median (a frame far from 1 is suspect). A frame is flagged when coverage < 0.85,
area is outside [0.6, 1.6], or the detector found nobody; flagged views are excluded from
training and listed in ``capture.json``.
"""

from __future__ import annotations

import numpy as np

from engine.geometry.camera import Camera

MIN_COVERAGE = 0.75
AREA_RANGE = (0.6, 1.6)


def bone_segments(joints: np.ndarray, bones, widths: np.ndarray, cam: Camera) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """Projected bones: [(p0 [2], p1 [2], width in pixels)] for bones with both joints in front of the camera."""
    out = []
    Xc = joints @ cam.R.T + cam.t
    for (a, b), w in zip(bones, widths):
        if not (np.isfinite(joints[a]).all() and np.isfinite(joints[b]).all()):
            continue
        za, zb = Xc[a, 2], Xc[b, 2]
        if za <= 0.05 or zb <= 0.05:
            continue
        pa, pb = cam.project(joints[[a, b]], distort=False)
        out.append((pa, pb, float(cam.fx * w / (0.5 * (za + zb)))))
    return out


def draw_capsules(shape, segments, scale: float) -> np.ndarray:
    import cv2

    img = np.zeros(shape, np.uint8)
    for pa, pb, wpx in segments:
        r = max(1, int(round(scale * wpx)))
        cv2.line(img, tuple(int(round(v)) for v in pa), tuple(int(round(v)) for v in pb), 1, thickness=2 * r,
                 lineType=cv2.LINE_8)
    return img


def grow_mask(mask: np.ndarray, fraction: float) -> np.ndarray:
    """bool mask (> 0 / > 127 for uint8 0-255) dilated by ``fraction`` of the image's longer side."""
    import cv2

    k = max(3, int(fraction * max(mask.shape)) | 1)
    m = (mask > (127 if mask.dtype == np.uint8 and mask.max() > 1 else 0)).astype(np.uint8)
    return cv2.dilate(m, np.ones((k, k), np.uint8)) > 0


def person_region(shape, seg: np.ndarray | None, segments) -> np.ndarray:
    """bool [H, W]: where the person may be in one view — the detector's mask (> 0.5) and the
    skeleton's wide capsules, grown by 6 % of the image — kept out of the background plate."""
    body = draw_capsules(shape, segments, 2.0)
    person = body | (seg > 0.5).astype(np.uint8) if seg is not None else body
    return grow_mask(person, 0.06)


def background_plate(images: np.ndarray, exclude: np.ndarray, min_samples: int = 5,
                     rows_per_chunk: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """The empty background seen by a static camera.

    images [T, H, W, 3] uint8, exclude [T, H, W] bool (the person may be there). Returns the
    plate [H, W, 3] float32 (per-pixel median of the frames where the pixel is not excluded)
    and known [H, W] bool (at least ``min_samples`` such frames; elsewhere the plate is 0).
    Computed in bands of rows so memory stays a few times one band of the clip.
    """
    T, H, W = exclude.shape
    plate = np.zeros((H, W, 3), np.float32)
    counts = (~exclude).sum(0)
    known = counts >= max(1, min(min_samples, T))
    for y0 in range(0, H, rows_per_chunk):
        band = images[:, y0:y0 + rows_per_chunk].astype(np.float32)
        band[exclude[:, y0:y0 + rows_per_chunk]] = np.nan
        with np.errstate(all="ignore"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: unknown, zeroed below
                med = np.nanmedian(band, axis=0)
        plate[y0:y0 + rows_per_chunk] = np.nan_to_num(med)
    plate[~known] = 0
    return plate, known


def plate_noise(images: np.ndarray, exclude: np.ndarray, plate: np.ndarray, known: np.ndarray) -> float:
    """Robust per-channel noise (0-255 scale) of the frames around the plate, where both are background."""
    diffs = []
    step = max(1, len(images) // 10)
    for i in range(0, len(images), step):
        sel = known & ~exclude[i]
        if sel.sum() > 50:
            diffs.append(np.abs(images[i][sel].astype(np.float32) - plate[sel]).max(-1))
    if not diffs:
        return 8.0
    d = np.concatenate(diffs)
    return float(max(2.0, 1.4826 * np.median(d)))


def plate_difference(bgr: np.ndarray, plate: np.ndarray, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """(matches [H, W] bool, differs [H, W] bool) of a frame against the background plate.

    *matches*: every channel within 3.5 noise widths of the plate (at least 10 levels), or a
    shadow: 35-100 % of the plate's brightness with the same chromaticity. *differs*: some channel
    more than 7 noise widths (at least 28 levels) away and not a shadow. Both after a 3x3 blur, so
    single noisy pixels do not decide.
    """
    import cv2

    img = cv2.blur(bgr.astype(np.float32), (3, 3))
    bg = cv2.blur(plate, (3, 3))
    d = np.abs(img - bg).max(-1)
    bb = (bg * bg).sum(-1) + 1e-3
    gain = (img * bg).sum(-1) / bb                      # brightness relative to the plate
    chroma = np.sqrt(((img - gain[..., None] * bg) ** 2).sum(-1) / bb)  # hue change, relative
    shadow = (gain > 0.35) & (gain < 1.0) & (chroma < 0.06) & (np.sqrt(bb) > 30)
    matches = (d < max(10.0, 3.5 * noise)) | shadow
    differs = (d > max(28.0, 7.0 * noise)) & ~shadow
    return matches, differs


def refine_mask(bgr: np.ndarray, seg: np.ndarray | None, segments, iterations: int = 2,
                plate: tuple[np.ndarray, np.ndarray, float] | None = None) -> np.ndarray:
    """GrabCut with skeleton seeds (and the background plate, ``(plate, known, noise)``, when
    given). Returns a uint8 mask (255 person, 0 background)."""
    import cv2

    H, W = bgr.shape[:2]
    core = draw_capsules((H, W), segments, 0.5)
    body = draw_capsules((H, W), segments, 2.0)
    prob = (seg > 0.5).astype(np.uint8) if seg is not None else body
    person = (prob | body).astype(np.uint8)
    k = max(5, int(0.06 * max(H, W)) | 1)
    near = cv2.dilate(person, np.ones((k, k), np.uint8))
    gc = np.full((H, W), cv2.GC_BGD, np.uint8)
    gc[near > 0] = cv2.GC_PR_BGD
    gc[prob > 0] = cv2.GC_PR_FGD
    if plate is not None:
        bg, known, noise = plate
        matches, differs = plate_difference(bgr, bg, noise)
        gc[known & differs & (near > 0)] = cv2.GC_PR_FGD
        gc[known & matches & (near > 0)] = cv2.GC_PR_BGD
        # the limbs' own capsules stay probable: dark shorts on a dark floor match the plate too
        gc[known & matches & (draw_capsules((H, W), segments, 1.0) == 0)] = cv2.GC_BGD
    gc[core > 0] = cv2.GC_FGD
    if (gc == cv2.GC_FGD).sum() < 10 or (gc == cv2.GC_BGD).sum() < 10:
        out = prob
    else:
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        try:
            cv2.grabCut(np.ascontiguousarray(bgr), gc, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)
            out = ((gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)).astype(np.uint8)
        except cv2.error:
            out = prob
    return keep_subject_blobs(out, core) * 255


def keep_subject_blobs(mask: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """Keep the connected components of ``mask`` that touch ``seeds``."""
    import cv2

    n, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return mask.astype(np.uint8)
    keep = np.unique(labels[(seeds > 0) & (labels > 0)])
    return np.isin(labels, keep).astype(np.uint8)


def coverage(mask: np.ndarray, segments, samples: int = 9) -> float:
    """Fraction of points along the projected bones (ends excluded) inside the mask."""
    H, W = mask.shape
    hits = total = 0
    for pa, pb, _ in segments:
        for s in np.linspace(0.1, 0.9, samples):
            x, y = pa + s * (pb - pa)
            xi, yi = int(round(x)), int(round(y))
            if 0 <= xi < W and 0 <= yi < H:
                total += 1
                hits += mask[yi, xi] > 127
    return hits / total if total else float("nan")


def view_quality(masks: list[np.ndarray], segments: list, detected: list[bool],
                 independent: list[np.ndarray] | None = None) -> dict:
    """Per-view figures and flagged frame positions (indices into ``masks``).

    ``independent``: masks not derived from the skeleton (the detector's segmentation, uint8
    0-255) on which coverage is measured; default ``masks``.
    """
    areas = np.array([(m > 127).sum() for m in masks], dtype=np.float64)
    med = float(np.median(areas[areas > 0])) if (areas > 0).any() else 1.0
    ref = masks if independent is None else independent
    cov = np.array([coverage(m, s) for m, s in zip(ref, segments)])
    ious = []
    if independent is not None:
        for m, r in zip(masks, independent):
            a, b = m > 127, r > 127
            u = (a | b).sum()
            ious.append((a & b).sum() / u if u else np.nan)
    ratio = areas / max(med, 1.0)
    flagged = [i for i in range(len(masks))
               if not detected[i] or not np.isfinite(cov[i]) or cov[i] < MIN_COVERAGE
               or not (AREA_RANGE[0] <= ratio[i] <= AREA_RANGE[1])]
    return {
        "coverage_mean": float(np.nanmean(cov)) if np.isfinite(cov).any() else float("nan"),
        "refine_iou": float(np.nanmean(ious)) if ious and np.isfinite(ious).any() else float("nan"),
        "coverage_min": float(np.nanmin(cov)) if np.isfinite(cov).any() else float("nan"),
        "area_cv": float(np.std(areas) / max(np.mean(areas), 1.0)),
        "area_ratio_range": [float(ratio.min()), float(ratio.max())],
        "detector_failures": int(sum(not d for d in detected)),
        "flagged": flagged,
        "coverage": cov.tolist(),
    }
