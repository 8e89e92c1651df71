"""``marionette demo``: the main job on the embedded default capture."""

from __future__ import annotations

NAME = "demo"
HELP = "run the main job on the bundled real capture (triangulate, write skeleton + preview)"
ORDER = 1
DESCRIPTION = """\
Run Marionette's main job on the bundled real 4-camera capture (Pose2Sim's
S01_Demo_SingleTrial, BSD-3-Clause): triangulate its OpenPose keypoints with its
Qualisys calibration, clean the trajectories and write

  OUT/skeleton.npz          the 3D skeleton sequence (metres, Z-up)
  OUT/skeleton_preview.png  front/side/top views of a few frames

Example:
  marionette demo -o out
"""


def add_arguments(p):
    p.add_argument("-o", "--output", default="out", metavar="OUT", help="output folder (default: out)")


def triangulate_demo(out_dir, progress: bool = True):
    """Step 1 of the demo pipeline: returns (report, skeleton path, preview path)."""
    from pathlib import Path

    from engine.data import demo_capture_paths
    from engine.preview import render_preview
    from engine.skeleton_io import save_skeleton
    from engine.triangulation import reconstruct

    demo = demo_capture_paths()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = reconstruct(demo.pose_dir, demo.calibration, joint_set=demo.joint_set, fps=demo.fps, progress=progress)
    skel = out / "skeleton.npz"
    save_skeleton(skel, report.skeleton)
    preview = render_preview(report.skeleton, out / "skeleton_preview.png")
    return report, skel, preview


def run(args) -> int:
    report, skel, preview = triangulate_demo(args.output)
    print("Marionette demo: bundled Pose2Sim capture (S01_Demo_SingleTrial, 4 cameras, 60 fps)")
    for line in report.lines:
        print("  " + line)
    print(f"wrote {skel}")
    print(f"wrote {preview}")
    return 0
