"""``marionette triangulate``: 2D keypoints + calibration -> 3D skeleton .npz."""

from __future__ import annotations

NAME = "triangulate"
HELP = "triangulate multi-view 2D keypoints (OpenPose/COCO JSON) into a 3D skeleton .npz"
ORDER = 10
DESCRIPTION = """\
Triangulate 2D keypoints seen by several calibrated cameras into a 3D skeleton sequence.

POSE_DIR holds one sub-folder per camera with one OpenPose JSON per frame
(e.g. cam01_json/cam01.0000.json), or one COCO keypoint JSON per camera.
Folders are matched to the calibration's camera names (cam01_json ~ cam_01);
if none match, they are paired in sorted order and the command says so.
CALIB is a Pose2Sim .toml, a Qualisys .qca.txt, a CMU Panoptic calibration
.json or a Marionette cameras.json (detected from the content).

The output .npz holds joints [T, J, 3] in metres (NaN = missing), confidence
[T, J], joint_names, parents, fps, up_axis, plus reprojection_error and
views_used per joint (see docs/sections/10-triangulation.md).

Example (the bundled real capture, 4 cameras, 60 fps):
  marionette triangulate engine/data/pose2sim_demo/pose \\
      --calib engine/data/pose2sim_demo/Calib.qca.txt --fps 60 \\
      -o out/skeleton.npz --preview out/skeleton_preview.png
"""


def add_arguments(p):
    p.add_argument("pose_dir", metavar="POSE_DIR", help="folder with one keypoint sub-folder (or COCO file) per camera")
    p.add_argument("--calib", required=True, metavar="CALIB", help="calibration file (.toml, .qca.txt, .json)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.npz", help="skeleton file to write")
    p.add_argument("--joint-set", default="auto",
                   help="joint set of the keypoints: auto (default), BODY_25B, BODY_25, COCO_17, PANOPTIC_19")
    p.add_argument("--fps", type=float, default=30.0, help="frame rate of the capture (default 30; the demo is 60)")
    p.add_argument("--cutoff", type=float, default=6.0,
                   help="low-pass cut-off in Hz of the zero-phase Butterworth filter; 0 disables (default 6)")
    p.add_argument("--max-gap", type=int, default=10,
                   help="fill gaps of at most this many frames by cubic interpolation; 0 disables (default 10)")
    p.add_argument("--reproj-threshold", type=float, default=25.0,
                   help="pixels: drop the worst camera of a joint while its mean reprojection error is above "
                        "this; 0 disables (default 25)")
    p.add_argument("--min-confidence", type=float, default=0.3,
                   help="ignore 2D detections with confidence at or below this (default 0.3)")
    p.add_argument("--preview", metavar="PNG", help="also write a preview image of the skeleton")


def check_options(args) -> None:
    """Every option's range, and that the outputs can be written, before any work."""
    from engine.validate import MAX_FPS, MAX_FRAMES, number, output_file

    number(args.fps, "--fps", lo=0, lo_open=True, hi=MAX_FPS)
    number(args.cutoff, "--cutoff", lo=0)
    number(args.max_gap, "--max-gap", lo=0, hi=MAX_FRAMES, integer=True)
    number(args.reproj_threshold, "--reproj-threshold", lo=0)
    number(args.min_confidence, "--min-confidence", lo=0, hi=1, hi_open=True)
    output_file(args.output, "-o", suffix=".npz")
    if args.preview:
        output_file(args.preview, "--preview")


def run(args) -> int:
    from engine.io.skeleton_file import save_skeleton
    from engine.capture.reconstruct import reconstruct

    check_options(args)
    report = reconstruct(args.pose_dir, args.calib, joint_set=args.joint_set, fps=args.fps,
                         cutoff=args.cutoff or None, max_gap=args.max_gap,
                         reproj_threshold=args.reproj_threshold or None, min_confidence=args.min_confidence,
                         progress=True)
    save_skeleton(args.output, report.skeleton)
    for line in report.lines:
        print(line)
    print(f"wrote {args.output}")
    if args.preview:
        from engine.scene.preview import render_preview

        render_preview(report.skeleton, args.preview)
        print(f"wrote {args.preview}")
    return 0
