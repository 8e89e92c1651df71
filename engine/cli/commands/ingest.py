"""``marionette ingest``: synchronised videos + calibration -> capture folder for training."""

from __future__ import annotations

NAME = "ingest"
HELP = "turn synchronised multi-view videos + a calibration into a training capture folder"
ORDER = 15
DESCRIPTION = """\
Turn synchronised videos of one person (several cameras) and their calibration into
a capture folder that 'marionette train' accepts: undistorted square crops around the
person per camera, person masks, crop cameras, the triangulated 3D skeleton and a
contact sheet to look at before training. No manual step.

Videos are paired with calibration cameras by name (cam01.mp4 ~ cam_01), else in
sorted order (the command says so). A video whose size differs from the calibration
by a uniform scale with black bars (a re-encode) gets adapted intrinsics; see
docs/sections/35-ingest.md.

2D keypoints come from MediaPipe BlazePose run on the crops (weights inside the
mediapipe 0.10.14 wheel; scripts/install.sh installs it), or from your own keypoint
files with --keypoints DIR (what 'marionette triangulate' reads, in the calibration's
pixels). Masks come from the detector's segmentation refined with the 3D skeleton
(GrabCut), or from --masks DIR (<camera>/<frame:06d>.png, video pixels).

With several people in view, --list-subjects prints who was found; --subject K keeps
one (default: the one present in most frames).

Example (the bundled real clip: 4 cameras, 100 frames at 60 fps):
  marionette ingest engine/data/pose2sim_demo/videos \\
      --calib engine/data/pose2sim_demo/Calib.qca.txt \\
      --heldout-cameras cam02 --resolution 256 -o captures/pose2sim
"""


def add_arguments(p):
    p.add_argument("videos", nargs="+", metavar="VIDEO_DIR|VIDEO", help="a folder of videos, or the video files")
    p.add_argument("--calib", required=True, metavar="CALIB",
                   help="calibration file (.qca.txt, Pose2Sim .toml, Panoptic .json, cameras.json)")
    p.add_argument("-o", "--output", metavar="CAPTURE_DIR", help="capture folder to write")
    p.add_argument("--keypoints", metavar="DIR", help="use these 2D keypoint files (OpenPose/COCO JSON per camera) "
                   "instead of the detector")
    p.add_argument("--masks", metavar="DIR", help="use these person masks (<camera>/<frame:06d>.png, full video "
                   "frames) instead of the detector's")
    p.add_argument("--frames", metavar="A-B[:STEP]", help="video frames to ingest, e.g. 0-99 or 0-99:2 (default all)")
    p.add_argument("--resolution", type=int, default=256, help="side of the square crops in pixels (default 256)")
    p.add_argument("--margin", type=float, default=0.18,
                   help="crop margin around the subject, as a fraction of its box (default 0.18)")
    p.add_argument("--list-subjects", action="store_true", help="print the people found and stop")
    p.add_argument("--subject", type=int, help="index of the subject to keep (see --list-subjects; default: the "
                   "one present in most frames)")
    p.add_argument("--heldout-cameras", nargs="*", default=[], metavar="NAME",
                   help="cameras kept out of training for evaluation (e.g. cam02)")
    p.add_argument("--heldout-frames", metavar="SPEC", help="frames kept out of training, e.g. 80-99 or 9-99:10")
    p.add_argument("--allow-trim", action="store_true", help="accept videos of different lengths, keeping the "
                   "first N frames of each (N = the shortest)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing capture folder")
    p.add_argument("--no-refine-masks", action="store_true", help="keep the detector's masks as they are")
    p.add_argument("--no-refine-pointing", action="store_true",
                   help="keep the calibration's camera orientations (default: each camera is turned by a "
                        "fraction of a degree so the subject's keypoints reproject without a per-camera bias)")
    p.add_argument("--no-colour-calibration", action="store_true",
                   help="keep each camera's own exposure and white balance (default: per-camera gains "
                        "estimated from the subject seen by every camera are applied to the images)")
    p.add_argument("--cutoff", type=float, default=6.0, help="low-pass cut-off of the skeleton in Hz; 0 disables "
                   "(default 6)")
    p.add_argument("--bootstrap-stride", type=int, default=10,
                   help="find people on every N-th frame before cropping (default 10)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")


def run(args) -> int:
    from engine.capture.ingest.pipeline import IngestOptions, ingest

    opt = IngestOptions(videos=args.videos, calib=args.calib, out=args.output, keypoints=args.keypoints,
                        masks=args.masks, frames=args.frames, resolution=args.resolution, subject=args.subject,
                        list_subjects=args.list_subjects, heldout_cameras=args.heldout_cameras,
                        heldout_frames=args.heldout_frames, allow_trim=args.allow_trim, overwrite=args.overwrite,
                        margin=args.margin, bootstrap_stride=args.bootstrap_stride, workers=args.workers,
                        cutoff=args.cutoff, refine_masks=not args.no_refine_masks,
                        colour_calibration=not args.no_colour_calibration,
                        refine_pointing=not args.no_refine_pointing)
    res = ingest(opt)
    for line in res.lines:
        print(line)
    if opt.list_subjects:
        for line in res.subjects:
            print(line)
        return 0
    print("time per stage: " + ", ".join(f"{k.strip()} {v:.1f} s" for k, v in res.timings.items()))
    print(f"wrote {res.out} (look at {res.out}/contact_sheet.png before training)")
    return 0
