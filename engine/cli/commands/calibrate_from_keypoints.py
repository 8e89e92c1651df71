"""``marionette calibrate-from-keypoints``: camera extrinsics from the subject's 2D keypoints."""

from __future__ import annotations

NAME = "calibrate-from-keypoints"
HELP = "estimate camera positions/orientations from 2D keypoints of a moving person (no calibration object)"
ORDER = 11
DESCRIPTION = """\
Estimate every camera's position and orientation from the 2D keypoints of the
person in view: relative poses from essential matrices (OpenCV, cheirality
check) against a reference camera, a common scale, bundle adjustment, then a
metric scale from the subject's height (--height) or one bone (--bone) and a
Z-up world fitted to the subject (floor at the feet).

Intrinsics come from a calibration file (--intrinsics; its extrinsics are
ignored) or from a focal length guess (--focal-px with --size).
Writes a Marionette cameras.json (usable as --calib of 'marionette triangulate').

Example (bundled capture, real intrinsics, subject 1.72 m tall, compared with
the real extrinsics):
  marionette calibrate-from-keypoints engine/data/pose2sim_demo/pose \\
      --intrinsics engine/data/pose2sim_demo/Calib.qca.txt --height 1.72 \\
      -o out/cameras_selfcal.json --compare engine/data/pose2sim_demo/Calib.qca.txt
"""


def add_arguments(p):
    p.add_argument("pose_dir", metavar="POSE_DIR", help="folder with one keypoint sub-folder per camera")
    p.add_argument("-o", "--output", required=True, metavar="CAMERAS.json", help="camera file to write")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--intrinsics", metavar="CALIB", help="calibration file whose K/distortion/size to use")
    src.add_argument("--focal-px", type=float, help="focal length in pixels for every camera (with --size)")
    p.add_argument("--size", metavar="WxH", help="image size for --focal-px, e.g. 1088x1920")
    scale = p.add_mutually_exclusive_group(required=True)
    scale.add_argument("--height", type=float, help="subject's standing height in metres")
    scale.add_argument("--bone", nargs=3, metavar=("JOINT_A", "JOINT_B", "METRES"),
                       help="a known bone length, e.g. --bone LKnee LAnkle 0.42")
    p.add_argument("--joint-set", default="auto", help="joint set of the keypoints (default: auto)")
    p.add_argument("--reference", help="name of the reference camera (default: the first)")
    p.add_argument("--min-confidence", type=float, default=0.5, help="detections used (default > 0.5)")
    p.add_argument("--compare", metavar="CALIB", help="report errors against this (true) calibration")


def _intrinsics(args, folder_names):
    from engine import MarionetteError
    from engine.io.calibration import load_calibration
    from engine.geometry.camera import Camera
    from engine.io.keypoints import match_cameras

    if args.intrinsics:
        cams = load_calibration(args.intrinsics)
        mapping, how = match_cameras(folder_names, [c.name for c in cams])
        return mapping, [cams[m] if m is not None else None for m in mapping], how
    if not args.size or "x" not in args.size.lower():
        raise MarionetteError("--focal-px needs --size WxH (e.g. 1920x1080)")
    W, H = parse_size(args.size)
    cams = [Camera(name=n, K=[[args.focal_px, 0, (W - 1) / 2], [0, args.focal_px, (H - 1) / 2], [0, 0, 1]],
                   R=__import__("numpy").eye(3), t=[0, 0, 0], width=W, height=H) for n in folder_names]
    return list(range(len(cams))), cams, "cameras named after the keypoint folders (guessed intrinsics)"


def parse_size(text: str) -> tuple[int, int]:
    """``--size WxH`` -> (W, H), whole positive pixel counts."""
    from engine import MarionetteError
    from engine.validate import MAX_IMAGE_SIDE

    parts = text.lower().split("x")
    try:
        if len(parts) != 2 or not all(p.strip().isdigit() and len(p.strip()) <= 7 for p in parts):
            raise ValueError
        W, H = (int(p) for p in parts)
    except ValueError:
        raise MarionetteError(f"--size: expected WxH such as 1920x1080, got {text!r}") from None
    if not (1 <= W <= MAX_IMAGE_SIDE and 1 <= H <= MAX_IMAGE_SIDE):
        raise MarionetteError(f"--size: width and height must be 1..{MAX_IMAGE_SIDE} pixels, got {text!r}")
    return W, H


def check_options(args):
    """Ranges of the numeric options, the --bone joints and the output path, before any work;
    returns the parsed --bone (or None)."""
    from engine import MarionetteError
    from engine.validate import number, optional_number, output_file

    optional_number(args.focal_px, "--focal-px", lo=0, lo_open=True, hi=1e7)
    optional_number(args.height, "--height", lo=0, lo_open=True, hi=100)
    number(args.min_confidence, "--min-confidence", lo=0, hi=1, hi_open=True)
    output_file(args.output, "-o")
    if not args.bone:
        return None
    a, b, length = args.bone
    try:
        length = float(length)
    except ValueError:
        raise MarionetteError(f"--bone: length must be a number, got {length!r}") from None
    number(length, "--bone: length (metres)", lo=0, lo_open=True, hi=100)
    if a.strip().lower() == b.strip().lower():
        raise MarionetteError(f"--bone {a} {b}: the two joints must differ (a bone joins two joints)")
    return a, b, length


def run(args) -> int:
    import numpy as np

    from engine import MarionetteError
    from engine.io.calibration import load_calibration
    from engine.geometry.camera import save_cameras
    from engine.capture.association import select_subject
    from engine.io.keypoints import match_cameras, read_keypoints
    from engine.capture.selfcalib import calibrate_from_keypoints, compare_cameras

    bone = check_options(args)
    kp = read_keypoints(args.pose_dir, joint_set=None if args.joint_set == "auto" else args.joint_set, progress=True)
    mapping, intr, how = _intrinsics(args, kp.camera_names)
    keep = [i for i, c in enumerate(intr) if c is not None]
    if len(keep) < 2:
        raise MarionetteError(f"only {len(keep)} keypoint folder(s) have intrinsics; need at least 2")
    kp = kp.subset(keep)
    cams = [intr[i] for i in keep]
    ref = 0
    if args.reference:
        names = [c.name for c in cams]
        if args.reference not in names:
            raise MarionetteError(f"--reference {args.reference!r}: not one of {names}")
        ref = names.index(args.reference)
    kp = select_subject(kp, cams, progress=True)
    print(how)
    result = calibrate_from_keypoints(kp.data, cams, kp.joint_set, height=args.height, bone=bone, reference=ref,
                                      min_confidence=args.min_confidence)
    for line in result.lines:
        print(line)
    save_cameras(args.output, result.cameras, up_axis="Z")
    print(f"wrote {args.output}")
    if args.compare:
        truth_all = load_calibration(args.compare)
        m, _ = match_cameras([c.name for c in result.cameras], [c.name for c in truth_all])
        if any(x is None for x in m):
            raise MarionetteError(f"--compare: cameras {[c.name for c in result.cameras]} not all in {args.compare}")
        truth = [truth_all[x] for x in m]
        rigid = compare_cameras(result.cameras, truth)
        sim = compare_cameras(result.cameras, truth, fit_scale=True)
        print(f"against {args.compare} (rigid alignment of the camera centres):")
        for c, r, d, d2 in zip(result.cameras, rigid["rotation_deg"], rigid["centre_m"], sim["centre_m"]):
            print(f"  {c.name}: rotation {r:.2f} deg, centre {d * 1000:.0f} mm "
                  f"({d2 * 1000:.0f} mm after also fitting scale)")
        print(f"  scale error {100 * (1 / sim['scale'] - 1):+.1f}% (estimated / true)")
        from engine.capture.triangulation import triangulate

        for label, cs in (("self-calibrated", result.cameras), ("true", truth)):
            res = triangulate(kp.data, cs, reproj_threshold=None)
            print(f"  median reprojection error with {label} cameras: {np.nanmedian(res.reprojection_error):.2f} px")
    return 0
