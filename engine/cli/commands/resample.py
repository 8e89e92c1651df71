"""``marionette resample``: change the frame rate of a skeleton sequence and fill its gaps."""

from __future__ import annotations

NAME = "resample"
HELP = "resample a skeleton .npz to another frame rate (quaternion splines, exact bone lengths) and fill gaps"
ORDER = 40
DESCRIPTION = """\
Resample a skeleton sequence (.npz from 'marionette triangulate') to any frame rate,
up or down, by time. Bone directions follow C1 quaternion splines, the root a cubic
spline, and bones keep their lengths exactly: each bone's length moves linearly
between its lengths at the input frames (--lengths median: one constant length per
bone, which also removes triangulation noise from the lengths). Gaps (missing
joints) up to --max-gap seconds are bridged; longer ones stay missing.

Example:
  marionette resample capture.npz --fps 60 -o capture_60fps.npz
  marionette resample capture.npz --fps 30 --lengths median -o capture_30fps_rigid.npz
  marionette resample capture.npz --fill-only --max-gap 1.0 -o filled.npz
"""


def add_arguments(parser):
    parser.add_argument("input", help="skeleton sequence .npz")
    parser.add_argument("-o", "--output", required=True, help="output .npz (written atomically)")
    parser.add_argument("--fps", type=float, default=None,
                        help="target frames per second (required unless --fill-only)")
    parser.add_argument("--max-gap", type=float, default=0.5,
                        help="longest missing stretch in seconds to bridge (default 0.5; negative = any length)")
    parser.add_argument("--lengths", choices=("keys", "median"), default="keys",
                        help="keys: each bone's length moves linearly between its lengths at the input frames "
                             "(input frames reproduced exactly); median: one constant length per bone, a clean-up "
                             "for noisy triangulations (default keys)")
    parser.add_argument("--fill-only", action="store_true",
                        help="keep the frame rate and every observed joint; only fill missing joints")


def run(args) -> int:
    from engine import MarionetteError
    from engine.motion.resample import fill_gaps, resample_skeleton
    from engine.io.skeleton_file import load_skeleton, save_skeleton
    from engine.validate import MAX_FPS, number, optional_number, output_file

    optional_number(args.fps, "--fps", lo=0, lo_open=True, hi=MAX_FPS)
    number(args.max_gap, "--max-gap", lo=None)  # negative = bridge any gap
    output_file(args.output, "-o", suffix=".npz")
    seq = load_skeleton(args.input)
    max_gap = None if args.max_gap is not None and args.max_gap < 0 else args.max_gap
    before = int(seq.missing.sum())
    if args.fill_only:
        out = fill_gaps(seq, max_gap=max_gap, lengths=args.lengths)
        what = f"filled {before - int(out.missing.sum())} of {before} missing joints"
    else:
        if args.fps is None:
            raise MarionetteError("--fps is required (e.g. --fps 60), unless --fill-only is given")
        try:
            out = resample_skeleton(seq, args.fps, max_gap=max_gap, lengths=args.lengths)
        except MarionetteError as exc:
            raise MarionetteError(f"{args.input}: {exc}") from None
        what = (f"{seq.num_frames} frames at {seq.fps:g} fps -> {out.num_frames} frames at {out.fps:g} fps, "
                f"{int(out.missing.sum())} joints missing (input had {before})")
    save_skeleton(args.output, out)
    print(f"{args.output}: {what}")
    return 0
