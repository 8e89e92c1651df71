"""marionette evaluate: score an actor on a capture's held-out cameras and frames."""

NAME = "evaluate"
HELP = "score an actor on held-out cameras/frames (PSNR, SSIM, mask IoU); optionally write metrics and a comparison grid"
ORDER = 61
DESCRIPTION = """Render the held-out views of a capture with a trained actor and compare them with
the real images: novel_view (held-out cameras), novel_pose (held-out frames) and
novel_both. Prints the metrics (as JSON with --json). Files are written only where asked,
never into the actor folder by default: -o DIR writes DIR/metrics.json (with per-view rows)
and DIR/grid.png (truth | render | error x4, --grid-views per split); --grid PNG puts the grid there and
metrics.json next to it.

Example:
  marionette evaluate actors/me --capture captures/train8 --json -o evals/me
"""


def add_arguments(p):
    p.add_argument("actor", metavar="ACTOR_DIR", help="actor folder written by 'marionette train'")
    p.add_argument("--capture", required=True, metavar="DIR", help="capture folder with held-out views")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.add_argument("--resolution", type=int, help="longer image side to evaluate at (default: training's)")
    p.add_argument("--max-views", type=int, default=64, metavar="N", help="views per split (0 = all; default 64)")
    p.add_argument("-o", "--output", metavar="DIR", help="folder for metrics.json and grid.png (default: none)")
    p.add_argument("--grid", metavar="PNG", help="comparison grid path (default DIR/grid.png with -o); "
                                                 "metrics.json goes next to it unless -o is given")
    p.add_argument("--grid-views", type=int, default=3, metavar="N",
                   help="views per split in the grid, spread over the split (default 3)")
    p.add_argument("--capture-poses", action="store_true",
                   help="drive the actor with the capture's skeleton even where training refined it "
                        "(an actor trained with --refine-pose on this capture uses its refined poses by default)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def output_paths(args):
    """(grid PNG or None, metrics.json or None), checked before the evaluation runs."""
    from pathlib import Path

    from engine.validate import output_file, output_folder

    out = output_folder(args.output, "-o") if args.output else None
    grid = output_file(args.grid, "--grid", suffix=".png") if args.grid else (out / "grid.png" if out else None)
    metrics = out / "metrics.json" if out else (Path(grid).parent / "metrics.json" if grid else None)
    if metrics is not None:
        output_file(metrics, "metrics file")
    return grid, metrics


def run(args) -> int:
    import json

    from engine.neural.actor.dataset import open_capture
    from engine.neural.actor.evaluate import METRICS, evaluate_actor
    from engine.neural.actor.model_file import load_actor, write_json
    from engine.neural.actor.train import resolve_device
    from engine.validate import MAX_RENDER_SIDE, mkdir, number, optional_number

    number(args.max_views, "--max-views", lo=0, integer=True)
    number(args.grid_views, "--grid-views", lo=1, hi=64, integer=True)
    optional_number(args.resolution, "--resolution", lo=16, hi=MAX_RENDER_SIDE, integer=True)
    grid, metrics = output_paths(args)
    device = resolve_device(args.device)
    actor, doc = load_actor(args.actor, device=device)
    cap = open_capture(args.capture)
    res = evaluate_actor(actor, cap, resolution=args.resolution, max_views=args.max_views or None, device=device,
                         grid_path=grid, progress=not (args.quiet or args.json), refined_poses=not args.capture_poses,
                         grid_views=args.grid_views)
    res["actor"] = str(args.actor)
    res["capture"] = str(args.capture)
    res["mode"] = actor.config.mode
    if metrics is not None:
        mkdir(metrics.parent, "folder for metrics.json")
        write_json(metrics, res)
        res["metrics"] = str(metrics)
    if args.json:
        print(json.dumps({k: v for k, v in res.items() if k != "per_view"}, indent=1))
        return 0
    cols = list(METRICS) + (["lpips"] if "lpips" in res["overall"] else [])
    print(f"{'split':<12}" + "".join(f"{c:>13}" for c in cols) + f"{'views':>7}")
    for name, s in list(res["splits"].items()) + [("overall", res["overall"])]:
        print(f"{name:<12}" + "".join(f"{s.get(c, float('nan')):>13.4f}" for c in cols) + f"{s['views']:>7d}")
    print(f"poses: {res['poses']}")
    if grid is not None:
        print(f"grid: {grid}")
    if metrics is not None:
        print(f"metrics: {metrics}")
    else:
        print("(no files written; -o DIR writes metrics.json and grid.png)")
    return 0
