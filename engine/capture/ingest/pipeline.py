"""``marionette ingest``: synchronised videos + calibration -> a training capture folder.

Stages (each a function below, readable and testable alone):

1. ``open_inputs``     probe the videos, pair them with calibration cameras, reconcile sizes
                       and frame rates, pick the frames.
2. ``find_subjects``   people per camera and frame — from the user's keypoint files, or the
                       detector on full frames every ``bootstrap_stride`` frames — associated
                       across cameras and tracked over time (``engine.capture.ingest.subjects``).
3. ``crop_boxes``      the chosen subject's skeleton, interpolated to every frame, projected
                       into each view: one square crop per view holding the subject in every frame.
4. ``sample_views``    per view (one worker process each): decode, undistort+crop, detect
                       2D pose and person segmentation in the crop (other people greyed out).
5. ``final_skeleton``  triangulate (detector keypoints, or the given keypoints), fill gaps,
                       low-pass.
6. ``make_masks``      per view: refine masks with the 3D skeleton, quality figures, flagged frames.
7. ``write_capture``   images, masks, keypoints, cameras (crop and full frame), joints3d.npz,
                       contact sheet, report; ``capture.json`` last, then rename into place.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine import MarionetteError
from engine.geometry.camera import Camera, save_cameras
from engine.capture.ingest.crops import CropBox, CropSampler, crop_camera, square_box, undistorted
from engine.capture.ingest.video import VideoInfo, fit_camera_to_video, list_videos, parse_frame_spec, probe_video, read_frames

DETECTOR_CONFIDENCE = 0.5  # BlazePose visibility below this is not used for triangulation


@dataclass
class IngestOptions:
    videos: list | str | Path
    calib: str | Path
    out: str | Path | None = None
    keypoints: str | Path | None = None
    masks: str | Path | None = None
    frames: str | None = None
    resolution: int = 256
    subject: int | None = None
    list_subjects: bool = False
    heldout_cameras: list[str] = field(default_factory=list)
    heldout_frames: str | None = None
    allow_trim: bool = False
    overwrite: bool = False
    margin: float = 0.18
    bootstrap_stride: int = 10
    max_people: int = 4
    workers: int = 2
    cutoff: float = 6.0
    refine_masks: bool = True
    colour_calibration: bool = True
    refine_pointing: bool = True
    progress: bool = True

    def validate(self) -> None:
        if not (16 <= int(self.resolution) <= 4096):
            raise MarionetteError(f"--resolution must be between 16 and 4096 pixels, got {self.resolution}")
        if not (0.0 <= self.margin <= 2.0):
            raise MarionetteError(f"--margin must be between 0 and 2 (a fraction of the subject's box), got {self.margin}")
        if self.bootstrap_stride < 1:
            raise MarionetteError(f"--bootstrap-stride must be at least 1, got {self.bootstrap_stride}")
        if self.workers < 1:
            raise MarionetteError(f"--workers must be at least 1, got {self.workers}")
        if self.subject is not None and self.subject < 0:
            raise MarionetteError(f"--subject must be 0 or more, got {self.subject}")
        if not (self.cutoff >= 0):
            raise MarionetteError(f"--cutoff must be 0 (off) or a positive frequency in Hz, got {self.cutoff}")


@dataclass
class Inputs:
    videos: list[VideoInfo]
    names: list[str]  # capture camera names (the video file stems)
    calib_cameras: list[Camera]  # calibration cameras, calibration pixels, with distortion
    video_cameras: list[Camera]  # the same in the video's pixels (size reconciled), with distortion
    up_axis: str
    fps: float
    frames: list[int]  # video frame numbers to ingest
    notes: list[str]
    calib_path: Path
    pointing_shift: dict | None = None  # per camera, the image shift of the pointing refinement


@dataclass
class SubjectTrack:
    people: np.ndarray  # [C, T, P, J, 3] detections in ``cameras``' pixels
    cameras: list[Camera]
    joint_set: object
    subjects: list
    rows: list[int]  # rows of people used for association
    chosen: int | None = None


@dataclass
class ViewSamples:
    images: np.ndarray  # [T, R, R, 3] uint8 BGR crops at the output resolution
    seg: np.ndarray | None  # [T, R, R] uint8 0..255 detector person probability
    keypoints: np.ndarray | None  # [T, 33, 3] in output-crop pixels (NaN/0 where not found)
    detected: np.ndarray  # [T] bool
    seconds: dict


def _bar(total: int, desc: str, enabled: bool, unit: str = "frame"):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, leave=False)


# ---------------------------------------------------------------------- 1. inputs
def open_inputs(opt: IngestOptions) -> Inputs:
    from engine.io.calibration import load_calibration_info
    from engine.io.keypoints import match_cameras

    files = list_videos(opt.videos)
    calib = load_calibration_info(opt.calib)
    cam_names = [c.name for c in calib.cameras]
    names = [f.stem for f in files]
    mapping, how = match_cameras(names, cam_names)
    notes = [how.replace("keypoint folders", "videos").replace("keypoint folder", "video")]
    orphans = [str(files[i]) for i, m in enumerate(mapping) if m is None]
    if orphans:
        raise MarionetteError(f"{', '.join(orphans)}: no camera of {calib.path} matches (cameras "
                              f"{', '.join(cam_names)}); rename the video after its camera or remove it")
    unused = [n for j, n in enumerate(cam_names) if j not in set(mapping)]
    if unused:
        notes.append(f"calibration cameras without a video (unused): {', '.join(unused)}")
    if len(files) < 2:
        raise MarionetteError(f"ingest: {len(files)} video(s) given; triangulation needs at least 2 cameras")
    infos = []
    bar = _bar(len(files), "probing videos", opt.progress, "video")
    for f in files:
        infos.append(probe_video(f))
        bar.update()
    bar.close()
    fps = [v.fps for v in infos]
    if max(fps) - min(fps) > 0.01 * max(fps):
        raise MarionetteError("ingest: the videos have different frame rates (" +
                              ", ".join(f"{v.path.name} {v.fps:g}" for v in infos) +
                              "); synchronised cameras must share one — resample them first")
    counts = [v.frames for v in infos]
    T = min(counts)
    if max(counts) != T:
        listing = ", ".join(f"{v.path.name} {v.frames}" for v in infos)
        if not opt.allow_trim:
            raise MarionetteError(f"ingest: the videos have different lengths ({listing} frames); trim them to "
                                  "the same synchronised range, or pass --allow-trim to keep the first "
                                  f"{T} frames of each")
        notes.append(f"videos of different lengths ({listing}): kept the first {T} frames of each (--allow-trim)")
    calib_cams = [calib.cameras[m] for m in mapping]
    video_cams = []
    for v, cam in zip(infos, calib_cams):
        fitted, note = fit_camera_to_video(cam, v.width, v.height, str(v.path))
        video_cams.append(fitted)
        if note:
            notes.append(note)
    frames = parse_frame_spec(opt.frames, T)
    return Inputs(infos, names, calib_cams, video_cams, calib.up_axis, float(np.mean(fps)), frames, notes,
                  Path(calib.path))


# ---------------------------------------------------------------------- 2. subjects
def _detect_full_frames(args):
    """Worker: people in full frames of one video at the given frame numbers."""
    path, frames, max_people = args
    from engine.capture.ingest.detector import PoseDetector, detect_people

    info = VideoInfo(Path(path), 0, 0, 0.0, max(frames) + 1)
    out = {}
    with PoseDetector(static=True) as det:
        for f, img in read_frames(info, frames):
            out[f] = [d.keypoints for d in detect_people(det, img, max_people)]
    return out


def _quiet_worker():
    """MediaPipe's TFLite and glog write INFO lines to fd 2 from C++; keep worker processes quiet
    (their errors still reach the parent as exceptions)."""
    import os
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning, module="google.protobuf")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)


def _map(fn, jobs: list, workers: int, progress=None):
    """``[fn(j) for j in jobs]``, in worker processes when ``workers > 1``."""
    if workers <= 1 or len(jobs) <= 1:
        out = []
        for j in jobs:
            out.append(fn(j))
            if progress is not None:
                progress(1)
        return out
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    # fork: the parent has not loaded MediaPipe (only workers do), and fork needs no importable __main__
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context("spawn")
    out = []
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx, initializer=_quiet_worker) as pool:
        for res in pool.map(fn, jobs):
            out.append(res)
            if progress is not None:
                progress(1)
    return out


def find_subjects(inp: Inputs, opt: IngestOptions) -> SubjectTrack:
    from engine.capture.ingest.subjects import track_subjects

    C, T = len(inp.videos), len(inp.frames)
    if opt.keypoints:
        from engine.io.keypoints import match_cameras, read_keypoints

        kp = read_keypoints(opt.keypoints)
        mapping, how = match_cameras(kp.camera_names, inp.names)
        inp.notes.append(how)
        people_src = kp.people if kp.people is not None else kp.data[:, :, None]
        P, J = people_src.shape[2], people_src.shape[3]
        people = np.full((C, T, P, J, 3), np.nan)
        people[..., 2] = 0.0
        pos = {int(f): i for i, f in enumerate(kp.frame_indices)}
        missing = [f for f in inp.frames if f not in pos]
        if len(missing) == len(inp.frames):
            raise MarionetteError(f"{opt.keypoints}: its frame numbers ({int(kp.frame_indices.min())}-"
                                  f"{int(kp.frame_indices.max())}) do not overlap the videos' frames "
                                  f"{inp.frames[0]}-{inp.frames[-1]}")
        if missing:
            inp.notes.append(f"{len(missing)} of {T} frames have no keypoint file: they are missing in the skeleton")
        for k, m in enumerate(mapping):
            if m is None:
                continue
            for r, f in enumerate(inp.frames):
                if f in pos:
                    people[m, r] = people_src[k, pos[f]]
        if not (np.nan_to_num(people[..., 2]) > 0).reshape(C, -1).any(1).all():
            absent = [inp.names[c] for c in range(C) if not (np.nan_to_num(people[c, ..., 2]) > 0).any()]
            raise MarionetteError(f"{opt.keypoints}: no keypoints for camera(s) {', '.join(absent)}")
        # keypoint files are in the calibration's pixels (as Pose2Sim's and OpenPose-on-original-frames are)
        cameras, joint_set = inp.calib_cameras, kp.joint_set
        rows = list(range(T))
    else:
        from engine.body.joint_sets import BLAZEPOSE_33

        rows = list(range(0, T, opt.bootstrap_stride))
        if rows[-1] != T - 1:
            rows.append(T - 1)
        sel = [inp.frames[r] for r in rows]
        jobs = [(str(v.path), sel, opt.max_people) for v in inp.videos]
        bar = _bar(C, f"finding people ({len(sel)} frames per camera)", opt.progress, "camera")
        results = _map(_detect_full_frames, jobs, opt.workers, bar.update)
        bar.close()
        P = max(1, max((len(v) for res in results for v in res.values()), default=1))
        people = np.full((C, T, P, 33, 3), np.nan)
        people[..., 2] = 0.0
        for c, res in enumerate(results):
            for r, f in zip(rows, sel):
                for p, kpt in enumerate(res.get(f, [])):
                    people[c, r, p] = kpt
        if not (people[..., 2] > 0).any():
            raise MarionetteError(f"ingest: the detector found nobody in {len(sel)} sampled frames of "
                                  f"{', '.join(str(v.path) for v in inp.videos)}")
        cameras, joint_set = inp.video_cameras, BLAZEPOSE_33
    bar = _bar(len(rows), "associating people", opt.progress)
    subjects = track_subjects(people, cameras, inp.fps, rows=rows, frame_numbers=inp.frames,
                              progress=lambda n: bar.update(n))
    bar.close()
    return SubjectTrack(people, cameras, joint_set, subjects, rows)


def choose_subject(track: SubjectTrack, opt: IngestOptions) -> tuple[object, str]:
    if not track.subjects:
        raise MarionetteError("ingest: nobody is seen consistently by two cameras (no person triangulates); check "
                              "that the videos are synchronised and match the calibration")
    k = 0 if opt.subject is None else opt.subject
    if k >= len(track.subjects):
        raise MarionetteError(f"--subject {k}: only {len(track.subjects)} subject(s) found (0-"
                              f"{len(track.subjects) - 1}); run with --list-subjects to see them")
    track.chosen = k
    s = track.subjects[k]
    how = "chosen with --subject" if opt.subject is not None else "the one present in most frames"
    return s, (f"kept subject {k} of {len(track.subjects)} ({how}): present in {len(s.rows)} of "
               f"{len(track.rows)} associated frames")


def interpolate_rows(values: np.ndarray, rows: list[int], T: int) -> np.ndarray:
    """values [len(rows), J, 3] at ``rows`` -> [T, J, 3], linear in between, held at the ends."""
    out = np.full((T,) + values.shape[1:], np.nan)
    x = np.asarray(rows, dtype=np.float64)
    flat = values.reshape(len(rows), -1)
    res = out.reshape(T, -1)
    for k in range(flat.shape[1]):
        ok = np.isfinite(flat[:, k])
        if ok.sum() >= 1:
            res[:, k] = np.interp(np.arange(T), x[ok], flat[ok, k])
    return out


# ---------------------------------------------------------------------- 3. crops
def robust_points(points: np.ndarray, k: float = 4.0) -> np.ndarray:
    """Per frame, drop projected joints far from the frame's others (a mis-triangulated joint
    would otherwise blow up the crop). points [T, J, 2] -> [M, 2]."""
    keep = []
    for p in points:
        p = p[np.isfinite(p).all(1)]
        if len(p) < 3:
            continue
        med = np.median(p, axis=0)
        d = np.linalg.norm(p - med, axis=1)
        keep.append(p[d <= k * max(np.median(d), 1.0)])
    return np.concatenate(keep) if keep else np.zeros((0, 2))


def crop_boxes(inp: Inputs, joints: np.ndarray, margin: float) -> list[CropBox]:
    """One square box per view (undistorted video pixels) holding the subject in every frame."""
    boxes = []
    for name, cam in zip(inp.names, inp.video_cameras):
        pts = undistorted(cam).project(joints.reshape(-1, 3), distort=False).reshape(joints.shape[0], -1, 2)
        pts = robust_points(pts)
        if not len(pts):
            raise MarionetteError(f"ingest: the subject is never in front of camera {name}")
        boxes.append(square_box(pts, margin=margin))
    return boxes


# ---------------------------------------------------------------------- 4. per-view sampling
def _sample_view(args) -> ViewSamples:
    (path, frames, video_cam, box, resolution, subject_boxes, detect, masks_dir) = args
    import cv2

    timing = {"decode": 0.0, "crop": 0.0, "detect": 0.0}
    work = max(int(resolution), 256)  # BlazePose sees 256-pixel person crops: do not feed it less
    sampler = CropSampler(video_cam, box, work)
    T = len(frames)
    images = np.zeros((T, resolution, resolution, 3), np.uint8)
    seg = np.zeros((T, resolution, resolution), np.uint8) if (detect or masks_dir) else None
    kps = np.full((T, 33, 3), np.nan) if detect else None
    detected = np.zeros(T, dtype=bool)
    detector = None
    if detect:
        from engine.capture.ingest.detector import PoseDetector

        detector = PoseDetector(static=True)
    info = VideoInfo(Path(path), 0, 0, 0.0, max(frames) + 1)
    it = read_frames(info, frames)
    s = resolution / work
    for r in range(T):
        t0 = time.perf_counter()
        _, img = next(it)
        t1 = time.perf_counter()
        crop = sampler(img)
        out = crop if work == resolution else cv2.resize(crop, (resolution, resolution), interpolation=cv2.INTER_AREA)
        images[r] = out
        t2 = time.perf_counter()
        timing["decode"] += t1 - t0
        timing["crop"] += t2 - t1
        if detector is not None:
            # grey out everything away from the subject so the one-person detector cannot pick someone else
            x0, y0, x1, y1 = subject_boxes[r] * (work / resolution)
            masked = np.full_like(crop, 127)
            xa, ya = int(max(0, np.floor(x0))), int(max(0, np.floor(y0)))
            xb, yb = int(min(work, np.ceil(x1) + 1)), int(min(work, np.ceil(y1) + 1))
            if xb > xa and yb > ya:
                masked[ya:yb, xa:xb] = crop[ya:yb, xa:xb]
            det = detector.detect(masked)
            if det is not None:
                kp = det.keypoints.copy()
                kp[:, :2] = (kp[:, :2] + 0.5) * s - 0.5  # work-crop pixels -> output-crop pixels
                kps[r] = kp
                detected[r] = True
                if det.mask is not None:
                    m = det.mask if work == resolution else cv2.resize(det.mask, (resolution, resolution),
                                                                       interpolation=cv2.INTER_AREA)
                    seg[r] = np.clip(m * 255.0 + 0.5, 0, 255).astype(np.uint8)
            timing["detect"] += time.perf_counter() - t2
    if detector is not None:
        detector.close()
    if masks_dir is not None:
        _user_masks(masks_dir, frames, sampler, resolution, seg, detected)
    return ViewSamples(images, seg, kps, detected, timing)


def _user_masks(masks_dir, frames, sampler, resolution, seg, detected):
    """A user's full-frame masks (``<dir>/<frame:06d>.png``, video pixels) cropped like the images."""
    import cv2

    masks_dir = Path(masks_dir)
    for r, f in enumerate(frames):
        p = masks_dir / f"{f:06d}.png"
        if not p.is_file():
            raise MarionetteError(f"{p}: mask missing (--masks expects <camera>/<frame:06d>.png for every frame)")
        m = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        if m is None:
            raise MarionetteError(f"{p}: not a readable image")
        crop = sampler(np.repeat(m[..., None], 3, -1))[..., 0]
        if crop.shape[0] != resolution:
            crop = cv2.resize(crop, (resolution, resolution), interpolation=cv2.INTER_AREA)
        seg[r] = crop
        detected[r] = True


def subject_boxes_2d(joints: np.ndarray, cam: Camera, grow: float = 0.3) -> np.ndarray:
    """Per frame [T, 4] box (x0, y0, x1, y1) of the subject's projected joints, grown by ``grow``."""
    T = joints.shape[0]
    out = np.zeros((T, 4))
    for t in range(T):
        p = cam.project(joints[t], distort=False)
        p = p[np.isfinite(p).all(1)]
        if len(p) == 0:
            out[t] = (0, 0, cam.width, cam.height)
            continue
        lo, hi = p.min(0), p.max(0)
        g = grow * (hi - lo).max()
        out[t] = (lo[0] - g, lo[1] - 1.5 * g, hi[0] + g, hi[1] + g)  # the head top lies above the joints
    return out


def sample_views(inp: Inputs, opt: IngestOptions, boxes: list[CropBox], joints: np.ndarray,
                 crop_cams: list[Camera]) -> list[ViewSamples]:
    detect = opt.keypoints is None or opt.masks is None  # keypoints or masks still needed from the detector
    masks_dirs = [None] * len(inp.names)
    if opt.masks:
        from engine.io.keypoints import match_cameras

        folders = sorted(p for p in Path(opt.masks).iterdir() if p.is_dir())
        if not folders:
            raise MarionetteError(f"{opt.masks}: --masks expects one sub-folder of PNG masks per camera")
        mapping, _ = match_cameras([f.name for f in folders], inp.names)
        for f, m in zip(folders, mapping):
            if m is not None:
                masks_dirs[m] = f
        lacking = [n for n, d in zip(inp.names, masks_dirs) if d is None]
        if lacking:
            raise MarionetteError(f"{opt.masks}: no mask folder for camera(s) {', '.join(lacking)}")
    jobs = []
    for c, (v, cam, box) in enumerate(zip(inp.videos, inp.video_cameras, boxes)):
        sb = subject_boxes_2d(joints, crop_cams[c])
        jobs.append((str(v.path), inp.frames, cam, box, opt.resolution, sb, detect, masks_dirs[c]))
    bar = _bar(len(jobs), f"cropping{' + detecting' if detect else ''} ({len(inp.frames)} frames per camera)",
               opt.progress, "camera")
    out = _map(_sample_view, jobs, opt.workers, bar.update)
    bar.close()
    return out


# ---------------------------------------------------------------------- 5. skeleton
def final_skeleton(inp: Inputs, opt: IngestOptions, track: SubjectTrack, subject, views: list[ViewSamples],
                   crop_cams: list[Camera]):
    """Triangulated, gap-filled, low-passed skeleton of the subject -> (SkeletonSequence, TriangulationResult,
    report lines, refined camera extrinsics [(R, t)] per camera or None)."""
    from engine.capture.filtering import butterworth, fill_gaps
    from engine.capture.ingest.subjects import subject_keypoints
    from engine.io.skeleton_file import SkeletonSequence
    from engine.body.joint_sets import BLAZEPOSE_33
    from engine.capture.triangulation import triangulate

    if opt.keypoints:
        kp = subject_keypoints(track.people, subject)
        cams, js, min_conf = track.cameras, track.joint_set, 0.3
    else:
        kp = np.stack([v.keypoints for v in views])  # [C, T, 33, 3] output-crop pixels
        kp[..., 2] = np.nan_to_num(kp[..., 2])
        cams, js, min_conf = crop_cams, BLAZEPOSE_33, DETECTOR_CONFIDENCE
    # scale the rejection threshold with the image: 25 px at 1920 is ~3 px at a 256 crop
    thr = 25.0 * max(max(c.width, c.height) for c in cams) / 1920.0
    tri = lambda k, cs: triangulate(k, cs, min_confidence=min_conf, reproj_threshold=thr)  # noqa: E731
    lines = []
    pointing = None
    if opt.refine_pointing and len(cams) >= 3:
        from engine.capture.selfcalib import correct_pointing

        corr = correct_pointing(kp, cams, tri)
        cams = corr.cameras
        pointing = [(c.R, c.t) for c in cams]
        inp.pointing_shift = {n: [round(float(v), 2) for v in s] for n, s in zip(inp.names, corr.shift_px)}
        unit = "calibration" if opt.keypoints else f"{opt.resolution}-pixel crop"
        lines.append("camera pointing refined from the subject's keypoints (" + unit + " pixels, median residual "
                     "x/y before -> after; image shift applied): " + "; ".join(
                         f"{n} {b[0]:+.1f}/{b[1]:+.1f} -> {a[0]:+.1f}/{a[1]:+.1f}, shift {s[0]:+.1f}/{s[1]:+.1f}"
                         for n, b, a, s in zip(inp.names, corr.bias_before, corr.bias_after, corr.shift_px)))
    res = tri(kp, cams)
    joints, filled = fill_gaps(res.points, max_gap=10)
    if opt.cutoff:
        if not opt.cutoff < inp.fps / 2:
            raise MarionetteError(f"--cutoff {opt.cutoff} Hz must be below half the frame rate ({inp.fps:g} fps)")
        joints = butterworth(joints, fps=inp.fps, cutoff=opt.cutoff)
    conf = np.where(filled, 0.5, res.confidence)
    seq = SkeletonSequence(joints=joints.astype(np.float32), joint_set=js, fps=inp.fps,
                           confidence=conf.astype(np.float32), up_axis=inp.up_axis,
                           extras=dict(frame_indices=np.asarray(inp.frames),
                                       reprojection_error=res.reprojection_error.astype(np.float32),
                                       views_used=res.views_used, filled=filled,
                                       camera_names=np.array(inp.names)))
    err = res.reprojection_error[np.isfinite(res.reprojection_error)]
    lines += [f"skeleton: {js.name}, {len(inp.frames)} frames from {'--keypoints' if opt.keypoints else 'the detector'}; "
             f"median reprojection error {np.median(err) if err.size else float('nan'):.2f} px "
             f"({'calibration' if opt.keypoints else f'{opt.resolution}-pixel crop'} pixels); "
             f"{int(filled.sum())} joint samples gap-filled; {int(seq.missing.sum())} still missing"]
    return seq, res, lines, pointing


# ---------------------------------------------------------------------- 6. masks
def _masks_for_view(args):
    images, seg, joints, bones, widths, cam, refine, detected = args
    from engine.capture.ingest.masks import (background_plate, bone_segments, grow_mask, person_region,
                                             plate_noise, refine_mask, view_quality)

    segs = [bone_segments(joints[r], bones, widths, cam) for r in range(len(images))]
    probs = [None if seg is None else seg[r].astype(np.float32) / 255.0 for r in range(len(images))]
    if not (refine or seg is None):
        masks = [((s > 0.5) * 255).astype(np.uint8) for s in probs]
    else:
        if refine and len(images) >= 10:
            # the crop is fixed per camera, so the frames share one background; a second plate from
            # the first pass's (tighter) masks uncovers pixels the detector's mask hid
            exclude = np.stack([person_region(images.shape[1:3], s, g) for s, g in zip(probs, segs)])
            for _ in range(2):
                bg, known = background_plate(images, exclude)
                plate = (bg, known, plate_noise(images, exclude, bg, known))
                masks = [refine_mask(images[r], probs[r], segs[r], plate=plate) for r in range(len(images))]
                exclude = np.stack([grow_mask(m, 0.02) for m in masks])
        else:
            masks = [refine_mask(images[r], probs[r], segs[r]) for r in range(len(images))]
    independent = None if seg is None else [np.asarray(x) for x in seg]
    return masks, view_quality(masks, segs, list(detected), independent)


def make_masks(opt: IngestOptions, views: list[ViewSamples], seq, crop_cams: list[Camera]):
    js = seq.joint_set
    bones = js.bones
    widths = js.default_widths
    jobs = [(v.images, v.seg, seq.joints, bones, widths, cam, opt.refine_masks and opt.masks is None, v.detected)
            for v, cam in zip(views, crop_cams)]
    bar = _bar(len(jobs), "person masks", opt.progress, "camera")
    out = _map(_masks_for_view, jobs, opt.workers, bar.update)
    bar.close()
    return out


# ---------------------------------------------------------------------- 7. output
def contact_sheet(path, names, frames, views, masks, seq, crop_cams, columns: int = 4, tile: int = 192) -> None:
    """A few frames per view: image, mask tinted, skeleton drawn. Rows are views."""
    import cv2

    from engine.capture.ingest.masks import bone_segments

    T = len(frames)
    picks = sorted(set(np.linspace(0, T - 1, min(columns, T)).round().astype(int).tolist()))
    rows = []
    for c, name in enumerate(names):
        tiles = []
        for r in picks:
            img = views[c].images[r].astype(np.float32)
            m = masks[c][0][r] > 127
            img[m] = 0.65 * img[m] + 0.35 * np.array([60, 200, 60], np.float32)
            img = img.astype(np.uint8)
            for pa, pb, _ in bone_segments(seq.joints[r], seq.joint_set.bones, seq.joint_set.default_widths,
                                           crop_cams[c]):
                cv2.line(img, tuple(int(round(v)) for v in pa), tuple(int(round(v)) for v in pb), (0, 140, 255), 1,
                         cv2.LINE_AA)
            img = cv2.resize(img, (tile, tile), interpolation=cv2.INTER_AREA)
            cv2.putText(img, f"{name} f{frames[r]}", (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1,
                        cv2.LINE_AA)
            tiles.append(img)
        rows.append(np.hstack(tiles))
    cv2.imwrite(str(path), np.vstack(rows))


def _resolve_names(given: list[str], names: list[str], what: str) -> list[str]:
    from engine.io.keypoints import match_cameras

    if not given:
        return []
    mapping, _ = match_cameras(list(given), names)
    bad = [g for g, m in zip(given, mapping) if m is None]
    if bad:
        raise MarionetteError(f"{what}: no camera named {', '.join(bad)} (cameras: {', '.join(names)})")
    return [names[m] for m in mapping]


def calibrate_colours(views: list[ViewSamples], masks, seq, crop_cams: list[Camera], names: list[str]):
    """Per-camera linear RGB gains from the subject (``photometric``), applied to the views' images
    in place -> (gains {camera: [r, g, b]}, report line)."""
    from engine.capture.ingest.photometric import apply_gain, camera_gains, subject_colours

    bones = seq.joint_set.bones
    colours = np.stack([subject_colours(v.images, m[0], seq.joints, bones, cam)
                        for v, m, cam in zip(views, masks, crop_cams)])
    gains, info = camera_gains(colours)
    for v, g in zip(views, gains):
        v.images = apply_gain(v.images, g)
    text = ", ".join(f"{n} x{g[0]:.2f}/{g[1]:.2f}/{g[2]:.2f}" for n, g in zip(names, gains))
    rms = info["residual_log_rms"]
    line = (f"colour calibration (linear RGB gains from the subject seen by every camera): {text}; "
            f"{info['pairs_used']} camera-bone pairs, residual {rms:.2f} log units" if rms is not None else
            f"colour calibration: not enough of the subject seen by two cameras; gains left at 1 ({text})")
    return {n: [round(float(x), 4) for x in g] for n, g in zip(names, gains)}, line


def write_capture(inp: Inputs, opt: IngestOptions, views, masks, seq, crop_cams, boxes, subject_note,
                  report_lines: list[str], timings: dict, colour_gains: dict | None = None) -> Path:
    import cv2

    from engine.io.capture_folder import begin_capture, finish_capture, keypoints_relpath, write_openpose_json

    out = Path(opt.out)
    heldout_cams = _resolve_names(opt.heldout_cameras, inp.names, "--heldout-cameras")
    heldout_frames = parse_frame_spec(opt.heldout_frames, max(inp.frames) + 1, "--heldout-frames") \
        if opt.heldout_frames else []
    heldout_frames = [f for f in heldout_frames if f in set(inp.frames)]
    partial = begin_capture(out, inp.names, overwrite=opt.overwrite)
    t0 = time.perf_counter()
    excluded = {}
    quality = {}
    bar = _bar(len(inp.names) * len(inp.frames), "writing", opt.progress)
    for c, name in enumerate(inp.names):
        q = masks[c][1]
        excluded[name] = [inp.frames[i] for i in q["flagged"]]
        quality[name] = {k: v for k, v in q.items() if k not in ("coverage", "flagged")}
        quality[name]["flagged_frames"] = len(q["flagged"])
        for r, f in enumerate(inp.frames):
            cv2.imwrite(str(partial / "images" / name / f"{f:06d}.png"), views[c].images[r])
            cv2.imwrite(str(partial / "masks" / name / f"{f:06d}.png"), masks[c][0][r])
            if views[c].keypoints is not None:
                write_openpose_json(partial / keypoints_relpath(name, f), views[c].keypoints[r])
            bar.update()
    bar.close()
    full = [undistorted(cam).copy(name=n) for n, cam in zip(inp.names, inp.video_cameras)]
    save_cameras(partial / "cameras_full.json", full, up_axis=inp.up_axis)
    contact_sheet(partial / "contact_sheet.png", inp.names, inp.frames, views, masks, seq, crop_cams)
    timings["write"] = time.perf_counter() - t0
    meta = {
        "fps": inp.fps, "frames": list(inp.frames), "cameras": list(inp.names),
        "train_cameras": [n for n in inp.names if n not in heldout_cams], "heldout_cameras": heldout_cams,
        "heldout_frames": heldout_frames, "joint_set": seq.joint_set.name,
        "resolution": [opt.resolution, opt.resolution], "up_axis": inp.up_axis, "seed": 0,
        "excluded_views": {k: v for k, v in excluded.items() if v},
        "generator": {
            "command": "marionette ingest", "videos": [str(v.path) for v in inp.videos],
            "calibration": str(inp.calib_path), "calibration_cameras": [c.name for c in inp.calib_cameras],
            "keypoints": str(opt.keypoints) if opt.keypoints else "mediapipe BlazePose (BLAZEPOSE_33)",
            "masks": str(opt.masks) if opt.masks else ("detector segmentation + GrabCut with skeleton seeds"
                                                       if opt.refine_masks else "detector segmentation"),
            "crop_boxes": {n: b.to_list() for n, b in zip(inp.names, boxes)},
            "full_frame_cameras": "cameras_full.json", "subject": subject_note, "notes": inp.notes,
            "quality": quality,
            "colour_gains": colour_gains,  # linear RGB gains applied to each camera's images (None: off)
            # image shift (x, y, pixels of the keypoints' images) by which each camera's pointing was refined
            "pointing_shift_px": inp.pointing_shift,
        },
    }
    (partial / "ingest_report.txt").write_text("\n".join(report_lines) + "\n")
    finish_capture(partial, out, meta, crop_cams, seq, overwrite=opt.overwrite)
    return out


# ---------------------------------------------------------------------- the whole road
@dataclass
class IngestResult:
    out: Path | None
    lines: list[str]
    timings: dict
    subjects: list[str]
    skeleton: object = None
    quality: dict | None = None


def ingest(opt: IngestOptions) -> IngestResult:
    from engine.capture.ingest.subjects import describe_subjects

    opt.validate()
    if not opt.list_subjects:
        if opt.out is None:
            raise MarionetteError("ingest: -o/--output CAPTURE_DIR is required (or pass --list-subjects)")
        from engine.validate import output_folder

        # fail before minutes of decoding and detection; begin_capture checks again when writing
        out = output_folder(opt.out, "-o")
        if out.exists() and any(out.iterdir()) and not opt.overwrite:
            raise MarionetteError(f"{out}: exists and is not empty (choose another folder or pass --overwrite)")
    timings = {}
    t = time.perf_counter()
    inp = open_inputs(opt)
    timings["probe"] = time.perf_counter() - t
    lines = [f"videos: {', '.join(f'{v.path.name} {v.width}x{v.height}' for v in inp.videos)}; "
             f"{inp.fps:g} fps; {len(inp.frames)} frames ({inp.frames[0]}-{inp.frames[-1]})"] + inp.notes
    t = time.perf_counter()
    track = find_subjects(inp, opt)
    timings["subjects"] = time.perf_counter() - t
    subject_lines = describe_subjects(track.subjects, inp.frames)
    if opt.list_subjects:
        return IngestResult(None, lines, timings, subject_lines)
    subject, note = choose_subject(track, opt)
    lines += subject_lines + [note]
    T = len(inp.frames)
    boot = np.stack([p.joints for p in subject.people])
    joints0 = interpolate_rows(boot, [p.frame for p in subject.people], T)
    boxes = crop_boxes(inp, joints0, opt.margin)
    crop_cams = [crop_camera(undistorted(cam), b, opt.resolution, name=n)
                 for n, cam, b in zip(inp.names, inp.video_cameras, boxes)]
    t = time.perf_counter()
    views = sample_views(inp, opt, boxes, joints0, crop_cams)
    timings["crop+detect"] = time.perf_counter() - t
    for k in ("decode", "crop", "detect"):
        timings[f"  {k} (CPU-s, all workers)"] = sum(v.seconds[k] for v in views)
    t = time.perf_counter()
    seq, _, sk_lines, pointing = final_skeleton(inp, opt, track, subject, views, crop_cams)
    if pointing is not None:
        # every camera of a view (calibration, video, crop) shares its extrinsics; the images are unchanged
        crop_cams = [c.copy(R=R, t=t) for c, (R, t) in zip(crop_cams, pointing)]
        inp.video_cameras = [c.copy(R=R, t=t) for c, (R, t) in zip(inp.video_cameras, pointing)]
    timings["triangulate"] = time.perf_counter() - t
    lines += sk_lines
    if not np.isfinite(seq.joints).any():
        raise MarionetteError("ingest: no joint of the subject could be triangulated; nothing written")
    t = time.perf_counter()
    masks = make_masks(opt, views, seq, crop_cams)
    timings["masks"] = time.perf_counter() - t
    quality = {}
    for name, (_, q) in zip(inp.names, masks):
        quality[name] = q
        lines.append(f"masks {name}: skeleton inside the detector's mask {q['coverage_mean']:.3f} (min "
                     f"{q['coverage_min']:.3f}), refined vs detector IoU {q['refine_iou']:.3f}, "
                     f"area variation {q['area_cv']:.3f}, detector failures {q['detector_failures']}, "
                     f"flagged {len(q['flagged'])} of {T} frames (excluded from training)")
    gains = None
    if opt.colour_calibration and len(views) >= 2:
        t = time.perf_counter()
        gains, line = calibrate_colours(views, masks, seq, crop_cams, inp.names)
        timings["colour"] = time.perf_counter() - t
        lines.append(line)
    outp = write_capture(inp, opt, views, masks, seq, crop_cams, boxes, note, lines, timings, gains)
    return IngestResult(outp, lines, timings, subject_lines, seq, quality)
