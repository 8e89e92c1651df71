"""marionette evaluate: score an actor on a capture's held-out cameras and frames."""

NAME = "evaluate"
HELP = "score an actor on held-out cameras/frames (PSNR, SSIM, mask IoU) and write a comparison grid"
ORDER = 61
DESCRIPTION = """Render the held-out views of a capture with a trained actor and compare them with
the real images: novel_view (held-out cameras), novel_pose (held-out frames) and
novel_both. Writes a PNG grid (truth | render | error x4) next to the actor.

Example:
  marionette evaluate actors/me --capture captures/train8 --json
"""


def add_arguments(p):
    p.add_argument("actor", metavar="ACTOR_DIR", help="actor folder written by 'marionette train'")
    p.add_argument("--capture", required=True, metavar="DIR", help="capture folder with held-out views")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.add_argument("--resolution", type=int, help="longer image side to evaluate at (default: training's)")
    p.add_argument("--max-views", type=int, default=64, metavar="N", help="views per split (0 = all; default 64)")
    p.add_argument("--grid", metavar="PNG", help="comparison grid path (default ACTOR_DIR/eval/grid.png)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    import json
    from pathlib import Path

    from engine.neural.actor.dataset import open_capture
    from engine.neural.actor.evaluate import METRICS, evaluate_actor
    from engine.neural.actor.model_file import load_actor, write_json
    from engine.neural.actor.train import resolve_device

    device = resolve_device(args.device)
    actor, doc = load_actor(args.actor, device=device)
    cap = open_capture(args.capture)
    grid = Path(args.grid) if args.grid else Path(args.actor) / "eval" / "grid.png"
    res = evaluate_actor(actor, cap, resolution=args.resolution, max_views=args.max_views or None, device=device,
                         grid_path=grid, progress=not (args.quiet or args.json))
    res["actor"] = str(args.actor)
    res["capture"] = str(args.capture)
    res["mode"] = actor.config.mode
    write_json(Path(args.actor) / "eval" / "metrics.json", res)
    if args.json:
        print(json.dumps({k: v for k, v in res.items() if k != "per_view"}, indent=1))
        return 0
    cols = list(METRICS) + (["lpips"] if "lpips" in res["overall"] else [])
    print(f"{'split':<12}" + "".join(f"{c:>13}" for c in cols) + f"{'views':>7}")
    for name, s in list(res["splits"].items()) + [("overall", res["overall"])]:
        print(f"{name:<12}" + "".join(f"{s.get(c, float('nan')):>13.4f}" for c in cols) + f"{s['views']:>7d}")
    print(f"grid: {grid}")
    return 0
