#!/usr/bin/env python
"""Quality benchmark: transmittance compositing vs the seed paper's soft weighting ("rochette").

Trains two actors on the same capture with the same decoder, seed, step budget and
resolution, differing only in the renderer mode, then scores both on the capture's
held-out cameras and frames and prints the two rows side by side.

    python scripts/bench_quality.py --capture /work/captures/train8 --steps 600 --resolution 128
    python scripts/bench_quality.py               # procedural stick-figure capture (no Blender), quick

Prints wall time per run too, so the numbers can be extrapolated to other budgets.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--capture", help="capture folder (default: a procedural one made in a temp folder)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--decoder", default="small", choices=("tiny", "small", "large"))
    ap.add_argument("--upsample", type=int, default=1, choices=(1, 2))
    ap.add_argument("--max-views", type=int, default=24, help="held-out views per split")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="keep the two actors here (default: a temp folder)")
    ap.add_argument("--json", help="also write the results to this JSON file")
    args = ap.parse_args()

    import torch

    from engine.neural.actor.dataset import open_capture
    from engine.neural.actor.evaluate import evaluate_actor
    from engine.neural.actor.model_file import load_actor
    from engine.neural.actor.train import TrainConfig, resolve_device, train

    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = tempfile.TemporaryDirectory(prefix="bench_quality_")
    work = Path(args.out or tmp.name)
    if args.capture:
        capture = Path(args.capture)
        source = str(capture)
    else:
        from engine.synthetic.toy_capture import make_toy_capture

        capture = make_toy_capture(work / "toy_capture", cameras=6, frames=24, size=args.resolution,
                                   heldout_cameras=1, heldout_every=4, overwrite=True)
        source = "procedural stick figure (engine.synthetic.toy_capture), 6 cams x 24 frames"
    cap = open_capture(capture)
    device = resolve_device(args.device)
    rows = {}
    for mode in ("transmittance", "rochette"):
        out = work / f"actor_{mode}"
        cfg = TrainConfig(capture=str(capture), out=str(out), steps=args.steps, resolution=args.resolution,
                          batch=args.batch, mode=mode, device=args.device, seed=args.seed, overwrite=True,
                          preset=args.decoder, upsample=args.upsample, eval_views=0, threads=args.threads,
                          checkpoint_every=max(args.steps, 1), command=f"bench_quality.py mode={mode}")
        t0 = time.time()
        summary = train(cfg)
        train_s = time.time() - t0
        actor, _ = load_actor(out, device=device)
        ev = evaluate_actor(actor, cap, resolution=args.resolution, max_views=args.max_views, device=device)
        rows[mode] = {"train_s": round(train_s, 1), "train_psnr": summary["train_psnr"], **ev["overall"],
                      "splits": ev["splits"]}

    from engine.neural.render.raycast import kernel_available, resolve_backend

    backend = resolve_backend()
    if backend == "auto":
        backend = "kernel" if kernel_available(device) else "reference"
    print(f"\ncapture: {source}")
    print(f"renderer backend: {backend}")
    print(f"budget: {args.steps} steps, batch {args.batch}, {args.resolution}px, decoder {args.decoder}, "
          f"upsample {args.upsample}, device {device}, torch threads {torch.get_num_threads()}")
    cols = ["psnr", "psnr_person", "ssim", "mask_iou", "train_psnr", "train_s"]
    print(f"{'mode':<15}" + "".join(f"{c:>13}" for c in cols) + f"{'views':>7}")
    for mode, r in rows.items():
        print(f"{mode:<15}" + "".join(f"{r[c]:>13.4f}" if isinstance(r[c], float) else f"{str(r[c]):>13}"
                                      for c in cols) + f"{r['views']:>7}")
    print("\nper split (psnr / ssim / mask_iou):")
    for split in rows["transmittance"]["splits"]:
        line = f"  {split:<11}"
        for mode, r in rows.items():
            s = r["splits"][split]
            line += f"  {mode}: {s['psnr']:.2f} / {s['ssim']:.3f} / {s['mask_iou']:.3f}"
        print(line)
    if args.json:
        Path(args.json).write_text(json.dumps({"capture": source, "steps": args.steps, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
