"""Kernel and full-frame timings of the neural actor on one device (used by scripts/gpu_check.sh).

    python scripts/gpu_timings.py --device cuda [--size 512] [--actor engine/data/demo_actor]

Prints milliseconds per call of the raycast op (PyTorch reference and compiled kernel, forward and
forward+backward) for the actor's own primitives, of its bone-texture lookup (PyTorch and kernel, where
the actor has textures) and of a whole frame (renderer + decoder).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, reps: int) -> float:
    fn()
    _sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    _sync(device)
    return (time.perf_counter() - t) / reps * 1000.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--actor", default=None, help="actor folder (default: the shipped demo actor)")
    ap.add_argument("--reps", type=int, default=10)
    args = ap.parse_args()
    from engine.data import demo_actor_path
    from engine.geometry.camera import Camera
    from engine.neural.actor.model_file import load_actor
    from engine.neural.render import kernel_available, raycast

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_timings: torch has no CUDA device here (torch.cuda.is_available() is False)")
        return 1
    actor_dir = Path(args.actor) if args.actor else demo_actor_path()
    actor, _ = load_actor(actor_dir, device=device)
    ref_file = actor_dir / "reference_skeleton.npz"
    ref = np.load(ref_file)["joints"][:1] if ref_file.is_file() else None
    if ref is None or not np.isfinite(ref).all():
        print("gpu_timings: the actor has no finite reference_skeleton.npz; cannot pose it")
        return 1
    S = args.size
    cam = Camera.look_at("c", eye=(0.0, -3.0, 1.0), target=tuple(np.nanmean(ref[0], 0)), width=S, height=S)
    K, R, t = (torch.as_tensor(np.asarray(x)[None], dtype=torch.float32, device=device) for x in (cam.K, cam.R, cam.t))
    J = torch.as_tensor(ref, dtype=torch.float32, device=device)
    g = actor.primitives(J)
    N = g["means"].shape[1]
    feats = actor.codes[None].detach()
    bg = actor.background[None].detach()
    dens = g["densities"][None].detach()
    print(f"device {device} ({torch.cuda.get_device_name(0) if device.type == 'cuda' else 'cpu'}), {S}x{S}, "
          f"{N} primitives ({actor.config.per_bone} per bone), {feats.shape[-1]} channels")
    backends = ["reference"] + (["kernel"] if kernel_available(device) else [])
    for be in backends:
        def fwd():
            with torch.no_grad():
                raycast(g["means"].detach(), g["precisions"].detach(), dens, feats, bg, K, R, t, S, S, backend=be)

        f = feats.clone().requires_grad_(True)

        def fwd_bwd():
            lat, alpha, _ = raycast(g["means"].detach(), g["precisions"].detach(), dens, f, bg, K, R, t, S, S,
                                    backend=be)
            (lat.sum() + alpha.sum()).backward()
        print(f"  raycast {be:<9s} forward {timed(fwd, device, args.reps):8.2f} ms   forward+backward "
              f"{timed(fwd_bwd, device, args.reps):8.2f} ms")
    if actor.config.texture_channels:
        from bench_texture import lookup_inputs  # (scripts/ is on sys.path when this runs as a script)

        from engine.neural.render import kernels

        tex = actor.texture
        Jt, depth, w, Kt, Rt, tt = lookup_inputs(actor, J[0].cpu(), 1, S)
        impls = {"reference": lambda ww: tex.forward_reference(Jt, depth, ww, Kt, Rt, tt)}
        if kernels.texture_available(device):
            impls["kernel"] = lambda ww: tex.forward(Jt, depth, ww, Kt, Rt, tt, backend="kernel")
        for name, call in impls.items():
            wg = w.clone().requires_grad_(True)

            def tex_fwd():
                with torch.no_grad():
                    call(w)

            def tex_fwd_bwd():
                call(wg).sum().backward()
            print(f"  texture {name:<9s} forward {timed(tex_fwd, device, args.reps):8.2f} ms   forward+backward "
                  f"{timed(tex_fwd_bwd, device, args.reps):8.2f} ms")
    with torch.no_grad():
        ms = timed(lambda: actor(J, K, R, t, S, S), device, args.reps)
    print(f"  whole frame (renderer + decoder) {ms:8.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
