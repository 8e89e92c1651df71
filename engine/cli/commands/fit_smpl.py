"""``marionette fit-smpl``: 3D skeleton .npz -> SMPL pose and shape (AMASS-style .npz)."""

from __future__ import annotations

NAME = "fit-smpl"
HELP = "fit SMPL pose and shape to a 3D skeleton sequence (writes an AMASS-style .npz)"
ORDER = 30
DESCRIPTION = """\
Fit the SMPL body model to a 3D joint sequence written by 'marionette triangulate'
(BODY_25, BODY_25B, COCO_17, PANOPTIC_19, H36M_17 or SMPL_24 joints), all frames at once.

MODEL_FILE is your own SMPL model (neutral, male or female) as .npz, or the official
.pkl (read by a restricted unpickler: arrays only, nothing in the file is executed).
Marionette ships no SMPL data.

The output FIT.npz holds poses [T, 72] (axis-angle, global orientation first), trans [T, 3],
betas [10], gender, mocap_framerate, up_axis (AMASS conventions, readable by
'Import SMPL motion' in Blender), plus fit_error [T] (mean distance in metres of the fitted to
the observed joints), failed [T] and failure_reason [T], joints [T, 24, 3] and keypoints [T, J, 3].
Frames with too few joints or whose fit diverged are marked failed and hold the previous good
frame's solution.

Example:
  marionette fit-smpl out/skeleton.npz --model ~/models/smpl/SMPL_NEUTRAL.pkl -o out/fit.npz
  marionette fit-smpl out/skeleton.npz --model SMPL_FEMALE.npz --gender female \\
      --silhouettes out/capture -o out/fit.npz      # add the mask term (slower)
Try it without a model file: 'python scripts/bench_smpl_fit.py --write-demo out/demo' writes a
synthetic SMPL-format model and skeleton you can pass here.
"""


def add_arguments(p):
    p.add_argument("skeleton", metavar="SKELETON.npz", help="skeleton sequence (marionette triangulate output)")
    p.add_argument("--model", required=True, metavar="MODEL_FILE", help="SMPL model .npz or .pkl (or a folder with SMPL_<GENDER>.pkl)")
    p.add_argument("-o", "--output", required=True, metavar="FIT.npz", help="file to write")
    p.add_argument("--gender", choices=("neutral", "male", "female"), default=None,
                   help="model gender (default: from the model file or its name, else neutral)")
    p.add_argument("--device", default="cpu", help="torch device: cpu (default), cuda, cuda:1, ...")
    p.add_argument("--iters", type=int, default=12, help="Levenberg-Marquardt iterations (default 12)")
    p.add_argument("--num-betas", type=int, default=10, help="shape components to fit (default 10)")
    p.add_argument("--smooth", type=float, default=0.05,
                   help="weight of keypoint-acceleration smoothing (default 0.05; 0 disables, larger for noisier input)")
    p.add_argument("--gmm", metavar="FILE", default=None,
                   help="optional GMM pose prior (.npz or .pkl with means [K,69], covars [K,69,69], weights [K])")
    p.add_argument("--silhouettes", metavar="CAPTURE_DIR", default=None,
                   help="capture folder with masks/ (marionette make-capture layout): refine with a silhouette term")
    p.add_argument("--silhouette-iters", type=int, default=30,
                   help="refinement iterations with the silhouette term (default 30)")
    p.add_argument("--silhouette-frames", type=int, default=8,
                   help="frames (evenly spread) whose masks are compared (default 8)")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads for torch during the fit (default 1: its small batched ops lose to threading)")


def run(args) -> int:
    from pathlib import Path

    import numpy as np
    import torch
    from tqdm import tqdm

    from engine import MarionetteError
    from engine.io.skeleton_file import load_skeleton
    from engine.body.smpl.fit import FitOptions, fit_smpl, save_fit
    from engine.body.smpl.model import load_smpl_model
    from engine.validate import MAX_THREADS, number, output_file

    if args.threads < 0:
        raise MarionetteError(f"--threads must be >= 0, got {args.threads}")
    if args.iters < 0:
        raise MarionetteError(f"--iters must be >= 0, got {args.iters}")
    number(args.threads, "--threads", lo=0, hi=MAX_THREADS, integer=True)
    number(args.iters, "--iters", lo=0, hi=100_000, integer=True)
    number(args.smooth, "--smooth", lo=0)
    number(args.silhouette_iters, "--silhouette-iters", lo=0, hi=100_000, integer=True)
    number(args.silhouette_frames, "--silhouette-frames", lo=1, hi=100_000, integer=True)
    try:
        device = torch.device(args.device)
    except RuntimeError as exc:
        raise MarionetteError(f"--device {args.device!r}: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MarionetteError(f"--device {args.device}: CUDA is not available on this machine")
    out = Path(args.output)
    if out.suffix != ".npz":
        raise MarionetteError(f"{out}: output must end in .npz")
    output_file(out, "-o", suffix=".npz")
    seq = load_skeleton(args.skeleton)
    model = load_smpl_model(args.model, gender=args.gender)
    if not (1 <= args.num_betas <= model.num_betas):
        raise MarionetteError(f"--num-betas must be 1..{model.num_betas} for this model, got {args.num_betas}")
    if args.smooth < 0 or args.silhouette_iters < 0 or args.silhouette_frames < 1:
        raise MarionetteError("--smooth and --silhouette-iters must be >= 0, --silhouette-frames >= 1")
    opts = FitOptions(iters=args.iters, device=str(device), num_betas=args.num_betas, w_smooth=args.smooth,
                      cpu_threads=args.threads, refine_iters=args.silhouette_iters)
    if args.gmm:
        from engine.body.smpl.prior import GMMPosePrior

        opts.gmm = GMMPosePrior.load(args.gmm, device=device)
    if args.silhouettes:
        from engine.io.capture_folder import load_capture
        from engine.body.smpl.silhouette import SilhouetteTerm

        capture = load_capture(args.silhouettes, require_masks=True)
        opts.extra_terms.append(SilhouetteTerm.from_capture(capture, seq.num_frames, device=device,
                                                            max_frames=args.silhouette_frames))

    T = seq.num_frames
    print(f"fitting SMPL ({model.gender}, {model.num_vertices} vertices) to {T} frames of {seq.joint_set.name} "
          f"on {device}")
    bar = tqdm(total=max(args.iters, 1), desc="fit-smpl", unit="it")
    # (the bar restarts for the silhouette refinement, whose total differs)

    def progress(done, total):
        bar.total = total
        bar.n = done
        bar.refresh()

    try:
        result = fit_smpl(seq.joints, seq.joint_set, model, seq.confidence, opts, progress=progress)
    finally:
        bar.close()
    extras = {}
    if "frame_indices" in seq.extras:
        extras["frame_indices"] = np.asarray(seq.extras["frame_indices"])
    save_fit(out, result, model, seq, extras)
    ok = ~result.failed
    err = result.fit_error[ok & np.isfinite(result.fit_error)]
    print(f"wrote {out}: mean joint error {np.mean(err) * 1000:.1f} mm over {int(ok.sum())} frames"
          if err.size else f"wrote {out}")
    for msg in result.messages:
        print(f"note: {msg}")
    if result.failed.any():
        print(f"{int(result.failed.sum())} of {T} frames failed (see failed / failure_reason in the file)")
    return 0
