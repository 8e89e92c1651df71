#!/usr/bin/env python3
"""Benchmark the bone-texture lookup: compiled kernel vs the PyTorch sparse lookup vs the dense reference.

An actor with bone textures (default: the shipped demo actor) is posed at the first frame of its
reference skeleton and rendered from cameras round the person (a 40-degree lens 2.6 m away, so the
person fills most of the frame's height); the renderer's depth and per-bone compositing weights of
those views are the lookup's inputs, as in training and F12. For each configuration it prints
forward and forward+backward milliseconds (best of ``--reps``) of

* ``kernel``: ``marionette::bone_texture_fwd/bwd`` (cuda_ext, CPU here);
* ``sparse``: ``BoneTexture.forward_reference`` (PyTorch, only the (bone, pixel) pairs with weight);
* ``dense``: ``BoneTexture.forward_dense`` (``grid_sample`` at every bone and pixel: the reference),

measured in the same run, the ratios against the kernel, the share of (bone, pixel) pairs that are
looked up, and the largest difference of each implementation's features and gradients from the
dense reference (float32).

A second table times what produces the lookup's bone weights, the raycast of the actor's primitives
(kernel backend): with its latent codes plus one one-hot channel per bone (how the weights were rendered
before primitive groups) against with the codes only and the primitives grouped by bone (each adds its
weight to its bone's map), and the whole actor forward and forward+backward for scale.

    python scripts/bench_texture.py                          # 4 views at 128² (a training batch), 1 at 512² (F12)
    python scripts/bench_texture.py --threads 1 --reps 5
    python scripts/bench_texture.py --actor path/to/actor --configs 2x256
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEMO_ACTOR = ROOT / "engine" / "data" / "demo_actor"


def lookup_inputs(actor, joints, views: int, size: int):
    """(joints [V,J,3], depth, bone weights, K, R, t) the renderer hands the texture for ``views`` cameras
    spread round the person at ``size``²."""
    import numpy as np
    import torch

    from engine.geometry.camera import Camera
    from engine.neural.render.rays import cameras_to_tensors

    lo, hi = joints.amin(0).cpu().numpy(), joints.amax(0).cpu().numpy()
    target = 0.5 * (lo + hi)
    up = np.eye(3)[int(np.argmax(hi - lo))]  # the person's longest extent is up
    a = np.cross(up, [1.0, 0.0, 0.0] if abs(up[0]) < 0.9 else [0.0, 1.0, 0.0])
    a /= np.linalg.norm(a)
    b = np.cross(up, a)
    cams = []
    for i in range(views):
        ang = 2 * math.pi * i / views
        eye = target + 2.6 * (math.cos(ang) * a + math.sin(ang) * b)
        cams.append(Camera.look_at(f"v{i}", eye, target, size, size, fov_deg=40.0, up=up))
    dev = actor.texture.maps.device
    K, R, t = (x.to(dev) for x in cameras_to_tensors(cams, dtype=torch.float32))
    J = joints[None].expand(views, -1, -1).contiguous().to(dev)
    seen = {}
    tex = actor.texture
    tex.forward = lambda *a, **k: seen.setdefault("args", a) and type(tex).forward(tex, *a, **k)
    try:
        with torch.no_grad():
            actor.render_latent(J, K, R, t, size, size)
    finally:
        del tex.forward
    _, depth, weights, *_ = seen["args"]
    return J, depth.contiguous(), weights.contiguous(), K, R, t


def table_rows(hdr: str, configs):
    """Print a table's header and rule, then yield (config, views, size) for every VIEWSxSIZE config."""
    print(hdr)
    print("-" * len(hdr))
    for cfg in configs:
        views, size = (int(x) for x in cfg.lower().split("x"))
        yield cfg, views, size


def best_ms(call, reps: int) -> float:
    call()  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return 1000 * min(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--actor", default=str(DEMO_ACTOR), help="an actor folder with bone textures (default: the demo actor)")
    ap.add_argument("--configs", nargs="+", default=["4x128", "1x512"], help="VIEWSxSIZE, e.g. 4x128")
    ap.add_argument("--reps", type=int, default=3, help="timed repetitions after a warm-up (best is reported)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's default)")
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    from engine.neural.actor.model_file import load_actor
    from engine.neural.render import kernels
    from engine.neural.render.texture import MIN_WEIGHT

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if not kernels.texture_available("cpu"):
        print(f"bench_texture: the bone-texture kernel is not built ({kernels.unavailable_reason() or 'old build'}); "
              "pip install --no-build-isolation ./cuda_ext", file=sys.stderr)
        return 1
    actor, _ = load_actor(args.actor)
    if not actor.config.texture_channels:
        print(f"bench_texture: {args.actor} has no bone textures (trained with --texture-channels 0)", file=sys.stderr)
        return 1
    ref = np.load(Path(args.actor) / "reference_skeleton.npz")
    joints = torch.tensor(ref["joints"][0], dtype=torch.float32)
    tex = actor.texture
    load = os.getloadavg()
    print(f"bench_texture: torch {torch.__version__}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
          f"load average {load[0]:.2f}, float32, best of {args.reps}; actor {args.actor}: "
          f"{tex.maps.shape[0]} bones x {tex.channels} channels x {tex.maps.shape[2]}x{tex.maps.shape[3]} texels")
    hdr = (f"{'views x size':>12} {'pairs':>6} | {'fwd ms kernel':>13} {'sparse':>7} {'dense':>7} {'vs sparse':>9} "
           f"{'vs dense':>8} | {'f+b ms kernel':>13} {'sparse':>7} {'dense':>7} {'vs sparse':>9} {'vs dense':>8} | "
           f"{'max |diff| kernel':>17} {'sparse':>8}")
    for cfg, views, size in table_rows(hdr, args.configs):
        J, depth, weights, K, R, t = lookup_inputs(actor, joints, views, size)
        pairs = float((weights > MIN_WEIGHT).float().mean())
        grad_out = torch.randn(views, tex.channels, size, size, generator=torch.Generator().manual_seed(1))
        impls = {"kernel": lambda w: tex.forward(J, depth, w, K, R, t, backend="kernel"),
                 "sparse": lambda w: tex.forward_reference(J, depth, w, K, R, t),
                 "dense": lambda w: tex.forward_dense(J, depth, w, K, R, t)}
        fwd, fb, results = {}, {}, {}
        for name, f in impls.items():
            with torch.no_grad():
                fwd[name] = best_ms(lambda: f(weights), args.reps)
            w = weights.clone().requires_grad_(True)

            def step():
                tex.maps.grad, w.grad = None, None
                f(w).backward(grad_out)
            fb[name] = best_ms(step, args.reps)
            kept = weights > MIN_WEIGHT  # the sparse lookups leave the rest out by design
            results[name] = (f(weights).detach(), tex.maps.grad.clone(), torch.where(kept, w.grad, 0))
        diff = {n: max(float((a - b).abs().max()) for a, b in zip(results[n], results["dense"])) for n in ("kernel", "sparse")}
        print(f"{cfg:>12} {100 * pairs:>5.1f}% | {fwd['kernel']:>13.2f} {fwd['sparse']:>7.1f} {fwd['dense']:>7.1f} "
              f"{fwd['sparse'] / fwd['kernel']:>8.1f}x {fwd['dense'] / fwd['kernel']:>7.1f}x | "
              f"{fb['kernel']:>13.2f} {fb['sparse']:>7.1f} {fb['dense']:>7.1f} {fb['sparse'] / fb['kernel']:>8.1f}x "
              f"{fb['dense'] / fb['kernel']:>7.1f}x | {diff['kernel']:>17.2e} {diff['sparse']:>8.2e}", flush=True)
    bone_weights_table(actor, joints, args)
    load = os.getloadavg()
    print(f"load average at the end: {load[0]:.2f}")
    return 0


def bone_weights_table(actor, joints, args) -> None:
    """Raycast with one-hot bone channels vs grouped primitives (both kernel), and the whole actor."""
    import torch

    from engine.neural.render.raycast import raycast

    nb = len(actor.bones)
    onehot = torch.nn.functional.one_hot(actor.bone_of_primitive, nb).to(actor.codes.dtype)
    hdr = (f"{'views x size':>12} | {'fwd ms one-hot':>14} {'groups':>7} {'ratio':>6} | {'f+b ms one-hot':>14} "
           f"{'groups':>7} {'ratio':>6} | {'actor fwd ms':>12} {'f+b ms':>7} | {'max |diff|':>10}")
    print(f"\nbone weights: raycast of {actor.codes.shape[0]} primitives, {actor.codes.shape[1]} code channels "
          f"+ {nb} one-hot vs grouped by bone (kernel)")
    for cfg, views, size in table_rows(hdr, args.configs):
        J, _, _, K, R, t = lookup_inputs(actor, joints, views, size)
        with torch.no_grad():
            g = actor.primitives(J)
        dens = g["densities"].expand(views, -1)
        codes = actor.codes.detach()
        bg = actor.background.detach()[None].expand(views, -1)

        def one_hot_call(c):
            feats = torch.cat([c, onehot], dim=1)[None]
            back = torch.cat([bg, bg.new_zeros(views, nb)], dim=1)
            lat, alpha, depth = raycast(g["means"], g["precisions"], dens, feats, back, K, R, t, size, size,
                                        backend="kernel")
            return lat[:, :c.shape[1]], alpha, depth, lat[:, c.shape[1]:]

        def grouped_call(c):
            return raycast(g["means"], g["precisions"], dens, c[None], bg, K, R, t, size, size, backend="kernel",
                           groups=actor.bone_of_primitive, num_groups=nb)

        fwd, fb, outs = {}, {}, {}
        for name, f in (("one-hot", one_hot_call), ("groups", grouped_call)):
            with torch.no_grad():
                fwd[name] = best_ms(lambda: f(codes), args.reps)
                outs[name] = f(codes)
            c = codes.clone().requires_grad_(True)
            fb[name] = best_ms(lambda: sum(o.sum() for o in f(c)).backward(), args.reps)
        diff = max(float((a - b).abs().max()) for a, b in zip(outs["one-hot"], outs["groups"]))
        with torch.no_grad():
            actor_fwd = best_ms(lambda: actor(J, K, R, t, size, size), args.reps)
        actor_fb = best_ms(lambda: actor(J, K, R, t, size, size)["rgb"].sum().backward(), args.reps)
        print(f"{cfg:>12} | {fwd['one-hot']:>14.2f} {fwd['groups']:>7.2f} {fwd['one-hot'] / fwd['groups']:>5.2f}x | "
              f"{fb['one-hot']:>14.2f} {fb['groups']:>7.2f} {fb['one-hot'] / fb['groups']:>5.2f}x | "
              f"{actor_fwd:>12.1f} {actor_fb:>7.1f} | {diff:>10.2e}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
