"""The reconstruct pipeline: keypoint folder + calibration file -> filtered 3D skeleton sequence.

Stages (each a function here, readable and testable alone):

1. ``pair_cameras``: read the calibration and the keypoints, match keypoint folders to
   calibration cameras, keep the matched ones;
2. ``engine.capture.association.select_subject``: one subject across views and time;
3. ``check_image_bounds``: warn when detections fall outside a camera's image;
4. ``engine.capture.triangulation.triangulate``;
5. ``clean_up``: fill short gaps, low-pass filter, lower the confidence of filled joints;
6. ``summary_lines``: the text report.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine import MarionetteError
from engine.capture.association import select_subject
from engine.capture.filtering import butterworth, fill_gaps
from engine.capture.triangulation import TriangulationResult, triangulate
from engine.io.calibration import load_calibration_info
from engine.io.keypoints import Keypoints2D, match_cameras, read_keypoints
from engine.io.skeleton_file import SkeletonSequence


@dataclass
class ReconstructionReport:
    lines: list[str]
    skeleton: SkeletonSequence
    result: TriangulationResult
    camera_names: list[str]


def pair_cameras(pose_dir, calib_path, joint_set: str = "auto", progress: bool = False):
    """Stage 1: -> (calibration info, keypoints of the matched cameras, their cameras, report lines)."""
    calib = load_calibration_info(calib_path)
    kp = read_keypoints(pose_dir, joint_set=None if joint_set == "auto" else joint_set, progress=progress)
    cam_names = [c.name for c in calib.cameras]
    mapping, how = match_cameras(kp.camera_names, cam_names)
    lines = [f"calibration: {calib.path} ({calib.format}, {len(cam_names)} cameras, up axis {calib.up_axis})", how]
    extra = [kp.camera_names[i] for i, m in enumerate(mapping) if m is None]
    if extra:
        lines.append(f"ignored keypoint folders with no calibration camera: {', '.join(extra)}")
    keep = [i for i, m in enumerate(mapping) if m is not None]
    unused = [cam_names[j] for j in range(len(cam_names)) if j not in set(m for m in mapping if m is not None)]
    if unused:
        lines.append(f"calibration cameras without keypoints (unused): {', '.join(unused)}")
    if len(keep) < 2:
        raise MarionetteError(f"{pose_dir}: only {len(keep)} keypoint folder(s) match a calibration camera "
                              f"(folders {kp.camera_names}, cameras {cam_names}); need at least 2")
    kp = kp.subset(keep)
    cameras = [calib.cameras[mapping[i]] for i in keep]
    return calib, kp, cameras, lines


def check_image_bounds(kp: Keypoints2D, cameras) -> list[str]:
    """Stage 3: warnings for cameras whose detections lie outside their image (keypoints from a resized video
    would not fit the calibration)."""
    lines = []
    for c, cam in enumerate(cameras):
        xy = kp.data[c, ..., :2][kp.data[c, ..., 2] > 0]
        if xy.size:
            outside = ((xy[:, 0] < -0.5) | (xy[:, 0] > cam.width - 0.5) | (xy[:, 1] < -0.5)
                       | (xy[:, 1] > cam.height - 0.5)).mean()
            if outside > 0.05:
                lines.append(f"warning: {100 * outside:.0f}% of {kp.camera_names[c]}'s detections lie outside "
                             f"camera {cam.name}'s {cam.width}x{cam.height} image: wrong camera pairing or "
                             "keypoints from a resized video?")
    return lines


def clean_up(res: TriangulationResult, fps: float, cutoff: float | None, max_gap: int):
    """Stage 5: -> (joints [T, J, 3] gap-filled and low-passed, filled [T, J] bool, confidence [T, J])."""
    joints = res.points
    filled = np.zeros(joints.shape[:2], dtype=bool)
    if max_gap > 0:
        joints, filled = fill_gaps(joints, max_gap=max_gap)
    if cutoff:
        if not cutoff < fps / 2:
            raise MarionetteError(f"--cutoff {cutoff} Hz must be below half the frame rate (--fps {fps}); "
                                  "lower it or pass --cutoff 0 to disable filtering")
        joints = butterworth(joints, fps=fps, cutoff=cutoff)
    conf = res.confidence.copy()
    if filled.any():
        med = np.array([np.median(c[c > 0]) if (c > 0).any() else 0.5 for c in conf.T])
        conf = np.where(filled, 0.5 * med[None], conf)
    return joints, filled, conf


def summary_lines(seq: SkeletonSequence, res: TriangulationResult, filled: np.ndarray, num_cameras: int, *,
                  reproj_threshold, min_views: int, max_gap: int, cutoff, fps: float) -> list[str]:
    """Stage 6: the report on triangulation, outliers, gap filling and what is still missing."""
    js = seq.joint_set
    T, J = seq.joints.shape[:2]
    missing = seq.missing
    st = res.stats
    err = res.reprojection_error[np.isfinite(res.reprojection_error)]
    lines = [f"triangulated {T} frames x {J} joints ({js.name}) from {num_cameras} cameras: "
             f"median reprojection error {np.median(err) if err.size else float('nan'):.2f} px, "
             f"mean views per joint {res.views_used[~res.missing].mean() if (~res.missing).any() else 0:.2f}"]
    lines.append(f"outlier views rejected: {st['views_rejected']} (threshold {reproj_threshold} px); joints "
                 f"rejected after that: {st['points_rejected']}; joints with < {min_views} views: "
                 f"{st['points_missing'] - st['points_rejected']}")
    lines.append(f"gap filling (<= {max_gap} frames): {int(filled.sum())} joints filled; "
                 f"low-pass: {'%g Hz Butterworth (zero-phase) at %g fps' % (cutoff, fps) if cutoff else 'off'}")
    empty_frames = int(missing.all(1).sum())
    lines.append(f"missing after clean-up: {int(missing.sum())} of {T * J} joint samples; "
                 f"{empty_frames} frames with no joint at all")
    worst = np.argsort(-missing.sum(0))[:5]
    worst = [j for j in worst if missing[:, j].any()]
    if worst:
        lines.append("most often missing: " + ", ".join(f"{js.names[j]} {int(missing[:, j].sum())}" for j in worst))
    return lines


def nothing_triangulated(kp: Keypoints2D, cameras, min_confidence: float, min_views: int,
                         reproj_threshold) -> str:
    """Why no joint could be triangulated, as one message (the result would be an all-NaN skeleton)."""
    seen = kp.data[..., 2] > min_confidence  # [C, T, J]
    per_cam = ", ".join(f"{kp.camera_names[c]} {int(seen[c].sum())}" for c in range(len(cameras)))
    shared = int((seen.sum(0) >= min_views).sum())
    why = (f"confident detections (confidence > {min_confidence:g}) per camera: {per_cam}; joint samples seen by "
           f"at least {min_views} cameras in the same frame: {shared}")
    if not seen.any():
        hint = "lower --min-confidence or check the keypoint files"
    elif shared == 0:
        hint = ("the cameras never see a joint in the same frame: check that their frame numbers overlap "
                f"(frames {int(kp.frame_indices.min())}-{int(kp.frame_indices.max())} over all cameras)")
    else:
        hint = (f"every candidate was rejected (reprojection threshold {reproj_threshold} px): wrong calibration, "
                "wrong camera pairing, or keypoints in another image size")
    return f"nothing could be triangulated, so no skeleton was written: {why}; {hint}"


def reconstruct(pose_dir, calib_path, *, joint_set: str = "auto", fps: float = 30.0, cutoff: float | None = 6.0,
                max_gap: int = 10, reproj_threshold: float | None = 25.0, min_confidence: float = 0.3,
                min_views: int = 2, progress: bool = False) -> ReconstructionReport:
    """Keypoint folder + calibration file -> filtered 3D skeleton sequence and a text report.

    Steps: read calibration, read keypoints, match camera folders to cameras, pick one
    subject, triangulate, fill gaps of <= ``max_gap`` frames, low-pass at ``cutoff`` Hz
    (None or 0 disables). Frames and joints that cannot be reconstructed stay NaN with
    confidence 0 and are counted in ``lines``.
    """
    if not (fps > 0):
        raise MarionetteError(f"--fps must be positive, got {fps}")
    calib, kp, cameras, lines = pair_cameras(pose_dir, calib_path, joint_set, progress)
    kp = select_subject(kp, cameras, min_confidence=min_confidence, progress=progress)
    lines += check_image_bounds(kp, cameras)
    res = triangulate(kp.data, cameras, min_confidence=min_confidence, reproj_threshold=reproj_threshold,
                      min_views=min_views)
    if res.missing.all():
        raise MarionetteError(nothing_triangulated(kp, cameras, min_confidence, min_views, reproj_threshold))
    joints, filled, conf = clean_up(res, fps, cutoff, max_gap)
    extras = dict(frame_indices=kp.frame_indices, reprojection_error=res.reprojection_error.astype(np.float32),
                  views_used=res.views_used, filled=filled, camera_names=np.array([c.name for c in cameras]),
                  person_index=kp.person_index if kp.person_index is not None else np.zeros((len(cameras), 0)))
    seq = SkeletonSequence(joints=joints, joint_set=kp.joint_set, fps=float(fps), confidence=conf,
                           up_axis=calib.up_axis, extras=extras)
    lines += kp.summary.lines()
    lines += summary_lines(seq, res, filled, len(cameras), reproj_threshold=reproj_threshold, min_views=min_views,
                           max_gap=max_gap, cutoff=cutoff, fps=fps)
    return ReconstructionReport(lines, seq, res, [c.name for c in cameras])
