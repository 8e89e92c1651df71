"""``marionette demo``: the main job on the embedded default capture, from keypoints to rendered frames."""

from __future__ import annotations

NAME = "demo"
HELP = "run the main job on the bundled real capture: triangulate, retarget, import in Blender, neural render"
ORDER = 1
DESCRIPTION = """\
Run Marionette's main job end to end on the bundled real 4-camera capture (Pose2Sim's
S01_Demo_SingleTrial, BSD-3-Clause):

  1. triangulate its OpenPose keypoints with its Qualisys calibration and clean them
       OUT/skeleton.npz, OUT/skeleton_preview.png
  2. transfer a motion onto the shipped demo actor's own skeleton (its bone lengths): by
     default a procedural walk the actor never saw (--motion capture: the capture's own)
       OUT/walk.npz, OUT/skeleton_on_actor.npz
  3. in a new Blender scene (the bpy module, no Blender install needed): import it as an
     armature, bind the demo actor — the real person of the bundled videos, learned by
     'marionette ingest' + 'marionette train' — and render a short clip through the
     Marionette neural render engine from a camera orbiting the actor
       OUT/frames/*.png, OUT/demo.gif, OUT/demo_contact_sheet.png, OUT/demo.blend

Steps 2-3 need the bpy module and the demo actor (both installed by scripts/install.sh);
--no-render stops after step 1. Re-render the saved scene with scripts/render_batch.py.

Example:
  marionette demo -o out
"""


def add_arguments(p):
    p.add_argument("-o", "--output", default="out", metavar="OUT", help="output folder (default: out)")
    p.add_argument("--no-render", action="store_true", help="only triangulate (no Blender, no neural render)")
    p.add_argument("--actor", metavar="ACTOR_DIR", help="actor to render (default: the shipped demo actor)")
    p.add_argument("--resolution", type=int, default=256, help="square frame size in pixels (default 256)")
    p.add_argument("--seconds", type=float, default=1.6, help="clip length in seconds (default 1.6)")
    p.add_argument("--fps", type=float, default=15.0, help="clip frame rate (default 15)")
    p.add_argument("--motion", choices=("walk", "capture"), default="walk",
                   help="what the actor performs: a procedural walk it never saw (default), or the bundled "
                        "capture's own triangulated motion")


def triangulate_demo(out_dir, progress: bool = True):
    """Step 1 of the demo pipeline: returns (report, skeleton path, preview path)."""
    from pathlib import Path

    from engine.data import demo_capture_paths
    from engine.scene.preview import render_preview
    from engine.io.skeleton_file import save_skeleton
    from engine.capture.reconstruct import reconstruct

    demo = demo_capture_paths()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = reconstruct(demo.pose_dir, demo.calibration, joint_set=demo.joint_set, fps=demo.fps, progress=progress)
    skel = out / "skeleton.npz"
    save_skeleton(skel, report.skeleton)
    preview = render_preview(report.skeleton, out / "skeleton_preview.png")
    return report, skel, preview


def transfer_to_actor(skeleton_path, actor_dir, out_path):
    """Step 2: retarget the motion onto the actor's reference skeleton (motion transfer).

    Returns the path rendered next: the retargeted file, or the input when the actor ships no
    reference skeleton (it is then driven by the captured person's own bone lengths).
    """
    from pathlib import Path

    from engine.motion.retarget import retarget, rig_from_skeleton
    from engine.io.skeleton_file import load_skeleton, save_skeleton

    reference = Path(actor_dir) / "reference_skeleton.npz"
    if not reference.is_file():
        return Path(skeleton_path), "no reference skeleton shipped with the actor; rendering the capture's own"
    src = load_skeleton(skeleton_path)
    res = retarget(src, rig_from_skeleton(load_skeleton(reference)), root="keep", feet=True)
    out = res.to_skeleton()
    save_skeleton(out_path, out)
    return Path(out_path), f"motion moved onto the actor's bone lengths (root scale {res.scale:.3f})"


def render_in_blender(skeleton_path, actor_dir, out_dir, resolution: int, seconds: float, fps: float) -> None:
    """Step 3 in a subprocess on the bpy module (the engine itself never imports bpy)."""
    import subprocess
    import sys

    from engine import MarionetteError

    cmd = [sys.executable, "-m", "addon.demo_scene", "--skeleton", str(skeleton_path), "--actor", str(actor_dir),
           "-o", str(out_dir), "--resolution", str(resolution), "--seconds", str(seconds), "--fps", str(fps)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail = []
    for line in proc.stdout:
        line = line.rstrip()
        tail = (tail + [line])[-15:]
        if line.startswith("demo:"):
            print("  " + line[5:].strip(), flush=True)
    if proc.wait() != 0:
        raise MarionetteError("the Blender step failed:\n    " + "\n    ".join(tail))


RENDER_OUTPUTS = ("frames", "demo.gif", "demo_contact_sheet.png", "demo.blend")


def check_options(args):
    """Everything that can fail cheaply, before any output is written: option ranges, the output
    folder, the bpy module and the actor (loaded once to validate it). Returns the actor folder
    (None with --no-render)."""
    import importlib.util
    from pathlib import Path

    from engine import MarionetteError
    from engine.data import demo_actor_path
    from engine.validate import MAX_RENDER_SIDE, number, output_folder

    output_folder(args.output, "-o")
    if args.no_render:
        return None
    number(args.resolution, "--resolution", lo=16, hi=MAX_RENDER_SIDE, integer=True)
    number(args.seconds, "--seconds", lo=0, lo_open=True, hi=3600)
    number(args.fps, "--fps", lo=0, lo_open=True, hi=240)
    if args.seconds * args.fps < 1:
        raise MarionetteError(f"--seconds {args.seconds:g} at --fps {args.fps:g} is less than one frame")
    if importlib.util.find_spec("bpy") is None:
        raise MarionetteError("the render steps need the bpy module (pip install bpy==5.0.1, or run "
                              "scripts/install.sh); use --no-render to stop after triangulation")
    actor = Path(args.actor) if args.actor else demo_actor_path()
    from engine.neural.actor.model_file import load_actor

    try:
        load_actor(actor)
    except MarionetteError as exc:
        raise MarionetteError(f"--actor: {exc}") from None
    return actor


def run(args) -> int:
    from pathlib import Path

    out = Path(args.output)
    actor = check_options(args)
    print("Marionette demo: bundled Pose2Sim capture (S01_Demo_SingleTrial, 4 cameras, 60 fps)")
    report, skel, preview = triangulate_demo(out)
    for line in report.lines:
        print("  " + line)
    print(f"wrote {skel}")
    print(f"wrote {preview}")
    if args.no_render:
        return 0
    source = skel if args.motion == "capture" else walk_motion(out / "walk.npz", args.seconds)
    driven, how = transfer_to_actor(source, actor, out / "skeleton_on_actor.npz")
    print(f"motion transfer: {how}; wrote {driven}")
    print(f"rendering {args.seconds:g} s at {args.fps:g} fps, {args.resolution}x{args.resolution}, actor {actor}")
    render_staged(driven, actor, out, args.resolution, args.seconds, args.fps)
    print(f"wrote {out / 'frames'}/*.png, {out / 'demo.gif'}, {out / 'demo_contact_sheet.png'}, {out / 'demo.blend'}")
    return 0


def walk_motion(path, seconds: float):
    """A procedural BODY_25B walk in place (turning slowly), 30 fps, long enough for ``seconds``.

    The shipped actor learned from a person balancing on a platform; a walk is a motion it never
    saw, moved onto its own bone lengths by the motion transfer like any other skeleton.
    """
    from engine.body.joint_sets import get_joint_set
    from engine.io.skeleton_file import SkeletonSequence, save_skeleton
    from engine.synthetic.toy_capture import walk_sequence

    frames = max(2, int(round(seconds * 30.0)) + 1)
    seq = SkeletonSequence(joints=walk_sequence(frames, fps=30.0), joint_set=get_joint_set("BODY_25B"), fps=30.0)
    save_skeleton(path, seq)
    return path


def render_staged(skeleton_path, actor_dir, out, resolution: int, seconds: float, fps: float) -> None:
    """Step 3 into ``OUT/.demo-render.partial``, moved into ``OUT`` only when the Blender step succeeded,
    so a failed render leaves no partial ``frames/`` or ``demo.blend``."""
    import os
    import shutil
    from pathlib import Path

    out = Path(out)
    stage = out / ".demo-render.partial"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    try:
        render_in_blender(skeleton_path, actor_dir, stage, resolution, seconds, fps)
        for name in RENDER_OUTPUTS:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
            if (stage / name).exists():
                os.replace(stage / name, target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
