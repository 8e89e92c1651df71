#!/usr/bin/env python
"""Actor quality benchmark: variants x splits x training time, on held-out views only.

Variants (same data, seed, decoder and CPU budget; only the named choice differs):

  surface     several Gaussians per bone in the bone's frame (--per-bone 4) + per-camera colour
              correction (--colour-correction)
  nocolour    surface without the colour correction — the default actor (plain `marionette train`)
  bone        one Gaussian per bone, one latent vector per bone (the actor before issue 14)
  rochette    bone, with the seed paper's soft depth weighting instead of compositing
  silaug      surface + a silhouette loss on the Gaussians' own alpha + random zoom/shift of views
  silaugnc    silaug without the colour correction
  surfacerp   nocolour + per-frame skeleton refinement (--refine-pose; evaluated with the refined
              poses on training frames, i.e. the novel-view split) — the main runs since the
              colour-calibrated captures
  texturerp   surfacerp + a learned feature map wrapped around each bone (--texture-channels 8)
  tinytexrp   texturerp with the tiny decoder (4-5x more steps in the same time)
  augrp       surfacerp + random zoom/shift of the training views (--augment), against overfitting
  tinyrp      surfacerp with the tiny decoder (5-6x more steps in the same time)
  tinyaug     tinyrp + --augment
  tinyema     tinyaug + a running average of the weights saved as the actor (--ema 0.995)
  tinysil     tinyema + a silhouette loss on the Gaussians' own alpha (--silhouette-weight 0.5)
  tinycol     tinysil + a colour loss on the Gaussians' own latent image (--latent-colour-weight 0.5)
  tinysil2    tinysil with a four times stronger silhouette loss (--silhouette-weight 2)
  tinymir     tinysil + mirrored views (--mirror 0.5: half the training views flipped left-right
              with the skeleton, left and right joints swapped)
  tinyroll    tinymir + cameras turned about their optical axes by up to 10 degrees (--roll 10)
  medmir      tinymir with the medium decoder
  tinytexmir  tinymir + bone textures (--texture-channels 8)
  tinymir8    tinymir with 8 Gaussians per bone (--per-bone 8)
  tinytexroll tinytexmir + --roll 10
  tinytex32   tinytexmir with 32x32 texels per bone map (--texture-size 32)
  tinytex16c  tinytexmir with 16 texture channels (--texture-channels 16)
  tinytexcrop tinytexmir trained on 128² windows round the person of the 256² views (--resolution 256
              --crop 128: the same cost per step, twice the detail); scored like every variant at
              --resolution, rendered supersampled (Actor.forward_supersampled)
  tinytexcrop32 tinytexcrop with 32x32 texels per bone map: detail that needs the 256² views
              (the synthetic person's striped shirt) gets the texels to hold it
  tinytexcrop32nm tinytexcrop32 without mirrored views (a mirrored view is lit from the mirrored side)
  tinytexcrop64 tinytexcrop with 64x64 texels (2.6 cm per texel along the trunk's bones at 32: under two per
              period of the synthetic shirt's 6-cm stripes)
  tinytexcrop32parts tinytexcrop32 with a map per body part (--texture-charts parts: the trunk's, the head's
              and each foot's bones share one map round the part's axis)
  tinytexparts tinytexpose (the CPU recipe) with a map per body part
  tinytexcrop32nmlight tinytexcrop32nm + light-dependent codes (--light-conditioning: each Gaussian's latent
              vector linear in its bone frame's world axes)
  tinytexcrop32light tinytexcrop32 + light-dependent codes (mirrored views read them with the light mirrored back)
  tinytexlight tinytexpose (the CPU recipe) + light-dependent codes
  medtexlight tinytexlight with the medium decoder
  tinytexcrop32nmlightpose tinytexcrop32nmlight + pose-dependent codes
  medtexcrop32nmlight tinytexcrop32nmlight with the medium decoder
  medtexcrop32 tinytexcrop32 with the medium decoder (base 16 channels, 3 levels)
  tinytexpose tinytexmir + pose-dependent codes (--pose-conditioning: each Gaussian's latent vector
              linear in its bone's direction in the body's frame)
  medema      tinyema with the medium decoder (base 16 channels, 3 levels)
  medsil      tinysil with the medium decoder
  medtexsil   medsil + bone textures (--texture-channels 8): the interpolation setting with textures

Splits are captures made by ``marionette ingest`` with different held-out sets, e.g.
``nv`` (camera cam02 held out), ``np`` (frames 80-99 held out), ``ip`` (every 10th frame);
``syn`` is a synthetic capture from ``marionette make-capture`` scored over all its held-out views.
For each (variant, split) the script trains for ``--minutes`` (snapshots at ``--curve``
minutes give the learning curve), then prints person PSNR, box PSNR / SSIM (subject box +10 %,
over black), mask IoU, the flat-colour silhouette baseline, the share of the person the render
covers with the person PSNR over those pixels only, training steps and steps/s, and
milliseconds per 512² frame. ``--references`` prints what the held-out truth itself scores
when flattened to one colour or blurred inside the person (the scale the model figures sit
on). ``--evaluate`` skips training and scores actors already trained into ``--out`` (how the
figures in docs/sections/50-neural-actor.md were made: the trainings
ran as separate background commands, recorded in each actor.json).

    python scripts/bench_quality.py --capture nv=captures/real_nv np=captures/real_np \\
        --variants surface bone --minutes 15 --curve 5 --resolution 128 --out bench/quality
    python scripts/bench_quality.py --capture nv=captures/real_nv --out bench/quality --evaluate
    python scripts/bench_quality.py --capture nv=captures/real_nv --resolution 128 --references
    python scripts/bench_quality.py --capture np=captures/real_np --variants tinytexmir --out bench/quality \
        --resolution 128 --evaluate --diagnose   # + how much each kind of fix could gain (per-view oracles)
    python scripts/bench_quality.py            # a procedural stick-figure capture, two variants, 1 minute
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# surfacerp's settings, which the tiny/medium decoder variants build on
_RP = dict(per_bone=4, colour_correction=False, mode="transmittance", refine_pose=True)
# the CPU recipe's settings before bone textures joined it (tinysil + mirrored views), which later variants extend
_MIR = {**_RP, "preset": "tiny", "augment": True, "ema": 0.995, "silhouette_weight": 0.5, "mirror": 0.5}
VARIANTS = {
    "surface": dict(per_bone=4, colour_correction=True, mode="transmittance"),
    "nocolour": dict(per_bone=4, colour_correction=False, mode="transmittance"),
    "bone": dict(per_bone=1, colour_correction=False, mode="transmittance"),
    "rochette": dict(per_bone=1, colour_correction=False, mode="rochette"),
    "silaug": dict(per_bone=4, colour_correction=True, mode="transmittance", silhouette_weight=0.5, augment=True),
    "silaugnc": dict(per_bone=4, colour_correction=False, mode="transmittance", silhouette_weight=0.5, augment=True),
    "surfacerp": dict(per_bone=4, colour_correction=False, mode="transmittance", refine_pose=True),
    "texturerp": dict(per_bone=4, colour_correction=False, mode="transmittance", texture_channels=8, refine_pose=True),
    "tinytexrp": dict(per_bone=4, colour_correction=False, mode="transmittance", texture_channels=8, refine_pose=True,
                      preset="tiny"),
    "tinyrp": {**_RP, "preset": "tiny"},
    "tinyaug": {**_RP, "preset": "tiny", "augment": True},
    "tinyema": {**_RP, "preset": "tiny", "augment": True, "ema": 0.995},
    "tinysil": {**_RP, "preset": "tiny", "augment": True, "ema": 0.995, "silhouette_weight": 0.5},
    "tinycol": {**_RP, "preset": "tiny", "augment": True, "ema": 0.995, "silhouette_weight": 0.5,
                "latent_colour_weight": 0.5},
    "tinysil2": {**_RP, "preset": "tiny", "augment": True, "ema": 0.995, "silhouette_weight": 2.0},
    "tinymir": _MIR,
    "tinyroll": {**_MIR, "roll": 10.0},
    "tinytexmir": {**_MIR, "texture_channels": 8},
    "tinytexroll": {**_MIR, "texture_channels": 8, "roll": 10.0},
    "tinymir8": {**_MIR, "per_bone": 8},
    "tinytex32": {**_MIR, "texture_channels": 8, "texture_size": 32},
    "tinytex16c": {**_MIR, "texture_channels": 16},
    "tinytexcrop": {**_MIR, "texture_channels": 8, "resolution": 256, "crop": 128},
    "tinytexcrop32": {**_MIR, "texture_channels": 8, "texture_size": 32, "resolution": 256, "crop": 128},
    "tinytexpose": {**_MIR, "texture_channels": 8, "pose_conditioning": True},
    "tinytexcrop64": {**_MIR, "texture_channels": 8, "texture_size": 64, "resolution": 256, "crop": 128},
    "tinytexcrop32parts": {**_MIR, "texture_channels": 8, "texture_size": 32, "texture_charts": "parts",
                           "resolution": 256, "crop": 128},
    "tinytexcrop32nmlight": {**_MIR, "mirror": 0.0, "texture_channels": 8, "texture_size": 32, "resolution": 256,
                             "crop": 128, "light_conditioning": True},
    "tinytexcrop32light": {**_MIR, "texture_channels": 8, "texture_size": 32, "resolution": 256, "crop": 128,
                           "light_conditioning": True},
    "tinytexcrop32nmlightpose": {**_MIR, "mirror": 0.0, "texture_channels": 8, "texture_size": 32, "resolution": 256,
                                 "crop": 128, "light_conditioning": True, "pose_conditioning": True},
    "medtexcrop32nmlight": {**_MIR, "preset": "medium", "mirror": 0.0, "texture_channels": 8, "texture_size": 32,
                            "resolution": 256, "crop": 128, "light_conditioning": True},
    "tinytexlight": {**_MIR, "texture_channels": 8, "pose_conditioning": True, "light_conditioning": True},
    "medtexlight": {**_MIR, "preset": "medium", "texture_channels": 8, "pose_conditioning": True,
                    "light_conditioning": True},
    "tinytexparts": {**_MIR, "texture_channels": 8, "pose_conditioning": True, "texture_charts": "parts"},
    "medtexcrop32": {**_MIR, "preset": "medium", "texture_channels": 8, "texture_size": 32, "resolution": 256,
                     "crop": 128},
    "tinytexcrop32nm": {**_MIR, "mirror": 0.0, "texture_channels": 8, "texture_size": 32, "resolution": 256,
                        "crop": 128},
    "medmir": {**_RP, "preset": "medium", "augment": True, "ema": 0.995, "silhouette_weight": 0.5, "mirror": 0.5},
    "medtexsil": {**_RP, "preset": "medium", "augment": True, "ema": 0.995, "silhouette_weight": 0.5,
                  "texture_channels": 8},
    "medema": {**_RP, "preset": "medium", "augment": True, "ema": 0.995},
    "medsil": {**_RP, "preset": "medium", "augment": True, "ema": 0.995, "silhouette_weight": 0.5},
    "augrp": dict(per_bone=4, colour_correction=False, mode="transmittance", refine_pose=True, augment=True),
}
# capture name -> the evaluation split scored; None = every held-out split, the overall figure
# (``syn``: a synthetic capture from ``marionette make-capture`` with held-out cameras and frames)
SPLIT_OF = {"nv": "novel_view", "np": "novel_pose", "ip": "novel_pose", "syn": None}


def render_ms(actor, size: int = 512, reps: int = 3) -> float:
    """Milliseconds per size² frame (renderer + decoder) of the actor in a standing pose."""
    import numpy as np
    import torch

    from engine.geometry.camera import Camera

    js = actor.joint_set
    rng = np.random.default_rng(0)
    J = torch.as_tensor((rng.normal(size=(1, js.num_joints, 3)) * 0.3 + [0, 0, 1.0]).astype(np.float32))
    cam = Camera.look_at("c", eye=(0, -3, 1), target=(0, 0, 1), width=size, height=size)
    K, R, t = (torch.as_tensor(np.asarray(x)[None], dtype=torch.float32) for x in (cam.K, cam.R, cam.t))
    with torch.no_grad():
        actor(J, K, R, t, size, size)
        t0 = time.perf_counter()
        for _ in range(reps):
            actor(J, K, R, t, size, size)
    return (time.perf_counter() - t0) / reps * 1000.0


def score(actor_dir: Path, capture, split: str | None, max_views: int, resolution: int | None = None) -> dict:
    from engine.neural.actor.evaluate import SPLITS, evaluate_actor
    from engine.neural.actor.model_file import load_actor

    actor, doc = load_actor(actor_dir)
    ev = evaluate_actor(actor, capture, resolution=resolution, max_views=max_views,
                        splits=(split,) if split else SPLITS)
    tr = doc.get("training", {})
    row = dict(ev["splits"].get(split, {}) if split else ev["overall"])
    row.update(steps=tr.get("steps"), time_s=tr.get("time_s"))
    return row


def reference_scores(capture, split: str | None, max_views: int, resolution: int | None) -> dict:
    """Person PSNR of the held-out truth itself, flattened or blurred inside the person: the scale
    that model figures sit on (a render with a perfect silhouette and colours but no detail finer
    than sigma pixels scores ``blur<sigma>``)."""
    import torch

    from engine.neural.actor.dataset import ViewSet, split_views
    from engine.neural.actor.evaluate import SPLITS, _pick, blurred_truth_psnr, flat_colour_psnr

    views = [v for s in ((split,) if split else SPLITS) for v in _pick(split_views(capture, s), max_views)]
    ds = ViewSet(capture, views, resolution=resolution)
    out: dict[str, list] = {}
    for start in range(0, len(ds), 8):
        b = ds.batch(range(start, min(len(ds), start + 8)))
        out.setdefault("flat", []).append(flat_colour_psnr(b["rgb"], b["mask"]))
        for sigma in (0.5, 1.0, 2.0):
            out.setdefault(f"blur{sigma:g}", []).append(blurred_truth_psnr(b["rgb"], b["mask"], sigma))
    return {k: float(torch.cat(v).mean()) for k, v in out.items()}


def diagnose(actor_dir: Path, capture, split: str | None, max_views: int, resolution: int | None) -> dict:
    """Where the held-out person error comes from: person PSNR after per-view oracles that use the truth
    (they bound what a fix of that kind could gain, they are not results): the best per-channel gain and
    the best affine colour map (3x3 + offset) per view; the best whole-pixel shift within +-2 px; the
    render blurred by a 1 px Gaussian."""
    import numpy as np
    import torch

    from engine.neural.actor.dataset import ViewSet, split_views
    from engine.neural.actor.evaluate import SPLITS, _pick, refined_poses_apply
    from engine.neural.actor.model_file import load_actor

    actor, _ = load_actor(actor_dir)
    refine = refined_poses_apply(actor, capture)
    views = [v for s in ((split,) if split else SPLITS) for v in _pick(split_views(capture, s), max_views)]
    ds = ViewSet(capture, views, resolution=resolution, joint_set=actor.joint_set)
    x = torch.arange(-3, 4, dtype=torch.float32)
    kernel = torch.exp(-x ** 2 / 2)
    kernel = kernel / kernel.sum()
    rows: dict[str, list] = {}
    with torch.no_grad():
        for start in range(0, len(ds), 4):
            b = ds.batch(range(start, min(len(ds), start + 4)))
            H, W = b["rgb"].shape[-2:]
            J = actor.refine_joints(b["joints"], b["row"]) if refine else b["joints"]
            rgb = actor.forward_supersampled(J, b["K"], b["R"], b["t"], H, W)["rgb"].clamp(0, 1)
            blurred = torch.nn.functional.conv2d(rgb.reshape(-1, 1, H, W), kernel.view(1, 1, 1, 7), padding=(0, 3))
            blurred = torch.nn.functional.conv2d(blurred, kernel.view(1, 1, 7, 1), padding=(3, 0)).reshape(rgb.shape)
            for k in range(len(rgb)):
                m = b["mask"][k, 0] > 0.5
                r, t = rgb[k][:, m].T, b["rgb"][k][:, m].T                        # [P, 3]
                mse = {"plain": ((r - t) ** 2).mean()}
                gain = (r * t).sum(0) / (r * r).sum(0).clamp_min(1e-8)
                mse["gain"] = ((r * gain - t) ** 2).mean()
                X = torch.cat([r, torch.ones(len(r), 1)], 1)
                mse["affine"] = ((X @ torch.linalg.lstsq(X, t).solution - t) ** 2).mean()
                mse["shift"] = min(((torch.roll(rgb[k], (dy, dx), (1, 2))[:, m].T - t) ** 2).mean()
                                   for dy in range(-2, 3) for dx in range(-2, 3))
                mse["blur1"] = ((blurred[k][:, m].T - t) ** 2).mean()
                for key, v in mse.items():
                    rows.setdefault(key, []).append(-10 * float(torch.log10(v.clamp_min(1e-10))))
    return {k: float(np.mean(v)) for k, v in rows.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--capture", nargs="*", default=[], metavar="SPLIT=DIR",
                    help="captures by split name (nv, np, ip; syn = a synthetic capture scored over all its "
                         "held-out views); default: a procedural capture")
    ap.add_argument("--variants", nargs="*", default=["surface", "bone"], choices=list(VARIANTS))
    ap.add_argument("--minutes", type=float, default=1.0, help="training time per (variant, split)")
    ap.add_argument("--curve", type=float, nargs="*", default=[], help="snapshot minutes for the learning curve")
    ap.add_argument("--steps", type=int, default=3000, help="step budget for the LR schedule (time stops first)")
    ap.add_argument("--resolution", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0, help="training seed (a second seed measures run-to-run noise)")
    ap.add_argument("--max-views", type=int, default=40, help="held-out views scored per split")
    ap.add_argument("--out", help="keep actors here (default: a temp folder)")
    ap.add_argument("--evaluate", action="store_true", help="only score actors already in --out")
    ap.add_argument("--references", action="store_true",
                    help="only print each split's reference scores: the truth filled with one flat colour, and "
                         "blurred by 0.5, 1 and 2 px inside the person (what a perfect silhouette with no finer "
                         "detail would score)")
    ap.add_argument("--diagnose", action="store_true",
                    help="with --evaluate: also print, per final actor, person PSNR after per-view oracles (best "
                         "colour gain, best affine colour map, best shift within 2 px, the render blurred by 1 px): "
                         "how much of the error each kind of fix could remove")
    ap.add_argument("--json", help="also write the table to this JSON file")
    args = ap.parse_args()

    import torch

    from engine.neural.actor.dataset import open_capture
    from engine.neural.actor.model_file import load_actor
    from engine.neural.actor.train import TrainConfig, train

    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = tempfile.TemporaryDirectory(prefix="bench_quality_")
    work = Path(args.out or tmp.name)
    captures = {}
    for item in args.capture:
        name, _, path = item.partition("=")
        if name not in SPLIT_OF or not path:
            ap.error(f"--capture {item!r}: expected nv=DIR, np=DIR, ip=DIR or syn=DIR")
        captures[name] = Path(path)
    if not captures:
        from engine.synthetic.toy_capture import make_toy_capture

        captures["nv"] = make_toy_capture(work / "toy_capture", cameras=6, frames=24, size=64, heldout_cameras=1,
                                          heldout_every=4, overwrite=True)
    rows = []
    for split, cap_dir in captures.items():
        cap = open_capture(cap_dir)
        if args.references:
            r = reference_scores(cap, SPLIT_OF[split], args.max_views, args.resolution)
            print(f"reference {split:3s} person PSNR of the truth: flat colour {r['flat']:6.2f}  blurred inside the "
                  f"person by 0.5 / 1 / 2 px {r['blur0.5']:6.2f} / {r['blur1']:6.2f} / {r['blur2']:6.2f}", flush=True)
            rows.append({"split": split, "references": r})
            continue
        for variant in args.variants:
            out = work / f"{variant}_{split}"
            if not args.evaluate:
                cfg = TrainConfig(capture=str(cap_dir), out=str(out), steps=args.steps,
                                  max_minutes=args.minutes, snapshot_minutes=tuple(args.curve), eval_views=0,
                                  overwrite=True, progress=False, threads=args.threads, seed=args.seed,
                                  command=f"bench_quality {variant} {split}",
                                  **{"resolution": args.resolution, **VARIANTS[variant]})
                train(cfg)
            if not (out / "actor.json").is_file():
                print(f"  (no actor in {out}; skipped)")
                continue
            actor, _ = load_actor(out)
            ms = render_ms(actor)
            snaps = sorted((out / "snapshots").glob("*min"), key=lambda p: float(p.name[:-3])) \
                if (out / "snapshots").is_dir() else []
            for d in snaps + [out]:
                r = score(d, cap, SPLIT_OF[split], args.max_views, args.resolution)
                r.update(variant=variant, split=split, at=d.name if d != out else "final", render_ms_512=round(ms, 1))
                rows.append(r)
                steps_s = (r["steps"] / r["time_s"]) if r.get("time_s") else float("nan")
                print(f"{variant:9s} {split:3s} {r['at']:>7s} steps {r.get('steps', 0):5d} ({steps_s:.2f}/s)  "
                      f"person PSNR {r.get('psnr_person', float('nan')):6.2f}  box PSNR {r.get('psnr_box', float('nan')):6.2f}  "
                      f"box SSIM {r.get('ssim_box', float('nan')):.3f}  IoU {r.get('mask_iou', float('nan')):.3f}  "
                      f"flat-colour {r.get('psnr_flat', float('nan')):6.2f}  covered {r.get('person_coverage', float('nan')):.3f} "
                      f"({r.get('psnr_person_covered', float('nan')):5.2f} dB)  render {ms:.0f} ms/512²", flush=True)
            if args.diagnose:
                dg = diagnose(out, cap, SPLIT_OF[split], args.max_views, args.resolution)
                rows.append({"variant": variant, "split": split, "diagnose": dg})
                print(f"{variant:9s} {split:3s}  oracles, person PSNR: as rendered {dg['plain']:6.2f}  best gain "
                      f"{dg['gain']:6.2f}  best affine colour {dg['affine']:6.2f}  best shift {dg['shift']:6.2f}  "
                      f"blurred 1 px {dg['blur1']:6.2f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
