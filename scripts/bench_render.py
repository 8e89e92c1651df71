#!/usr/bin/env python
"""Benchmark the Gaussian-bone renderer (and the decoder, when it exists): ms per frame and peak memory.

    python scripts/bench_render.py                      # 256² and 512², CPU (+ CUDA when present)
    python scripts/bench_render.py --sizes 128 --repeats 2 --devices cpu

Rows: the renderer forward ("fwd", no grad) and forward+backward ("fwd+bwd", gradients w.r.t.
joints, widths, densities, features and background), per backend (the PyTorch reference,
the reference without chunking/checkpointing for comparison, and the compiled kernels when
``engine.neural.render.kernels`` is available), then the decoder alone and renderer+decoder.

Peak memory:
* CUDA: ``torch.cuda.max_memory_allocated`` above what was allocated before the step.
* CPU: the peak resident set size (``VmHWM``) above the resident size before the step, after
  resetting the high-water mark through ``/proc/self/clear_refs`` and returning freed heap
  memory with ``malloc_trim``; during the measured run glibc's mmap threshold is lowered
  (``mallopt``) so every large tensor gets fresh pages and is really released when freed
  (otherwise reused heap pages would hide allocations).  Timed runs use a high threshold
  instead.  This counts everything the step touches (tensors, allocator slack), so it is an
  upper bound of tensor memory; "n/a" where /proc or glibc is unavailable.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import re
import sys
import time

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from engine.geometry.camera import Camera  # noqa: E402
from engine.neural.render import BonePrimitives, bone_gaussians, kernel_available  # noqa: E402
from engine.neural.render.raycast import raycast, raycast_reference  # noqa: E402
from engine.neural.render.rays import cameras_to_tensors  # noqa: E402
from engine.body.joint_sets import BODY_25B  # noqa: E402

# A standing BODY_25B pose, arms slightly raised, Z up, facing -Y (metres).
POSE = {
    "Nose": (0, -0.08, 1.60), "LEye": (0.03, -0.07, 1.63), "REye": (-0.03, -0.07, 1.63), "LEar": (0.07, 0, 1.62),
    "REar": (-0.07, 0, 1.62), "LShoulder": (0.18, 0, 1.45), "RShoulder": (-0.18, 0, 1.45),
    "LElbow": (0.30, 0, 1.20), "RElbow": (-0.25, -0.05, 1.18), "LWrist": (0.45, -0.05, 1.05),
    "RWrist": (-0.28, -0.2, 1.0), "LHip": (0.1, 0, 0.95), "RHip": (-0.1, 0, 0.95), "LKnee": (0.13, -0.05, 0.52),
    "RKnee": (-0.11, 0.02, 0.52), "LAnkle": (0.12, 0, 0.1), "RAnkle": (-0.12, 0.05, 0.1), "Neck": (0, 0, 1.5),
    "HeadTop": (0, 0, 1.78), "LBigToe": (0.13, -0.15, 0.02), "LSmallToe": (0.17, -0.13, 0.02),
    "LHeel": (0.12, 0.05, 0.03), "RBigToe": (-0.13, -0.1, 0.02), "RSmallToe": (-0.17, -0.08, 0.02),
    "RHeel": (-0.12, 0.08, 0.03),
}


# ---------------------------------------------------------------------- memory probes
M_MMAP_THRESHOLD = -3  # glibc mallopt parameter
def _status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            m = re.search(rf"^{key}:\s+(\d+) kB", f.read(), re.M)
        return int(m.group(1)) if m else None
    except OSError:
        return None


class PeakMemory:
    """Peak memory (MiB) of a block above what was in use when it started."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_mib: float | None = None

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            return self
        try:
            libc = ctypes.CDLL("libc.so.6")
            libc.mallopt(M_MMAP_THRESHOLD, 128 * 1024)
            libc.malloc_trim(0)
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM to the current RSS
            self.base = _status_kb("VmRSS")
        except OSError:
            self.base = None
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mib = (torch.cuda.max_memory_allocated(self.device) - self.base) / 2 ** 20
        elif self.base is not None:
            hwm = _status_kb("VmHWM")
            self.peak_mib = None if hwm is None else (hwm - self.base) / 1024
            _fast_malloc()
        return False


def _fast_malloc():
    """Serve tensors up to 32 MiB from the reusable heap (what glibc converges to by itself)."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024)
    except OSError:
        pass


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, repeats: int) -> tuple[float, float | None]:
    """Median milliseconds of ``fn()`` over ``repeats`` runs, and the peak memory of a first (warm-up) run."""
    _sync(device)
    with PeakMemory(device) as mem:
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - t0) * 1000)
    return float(np.median(times)), mem.peak_mib


# ---------------------------------------------------------------------- the scene
def make_scene(size: int, channels: int, batch: int, device, dtype=torch.float32):
    joints = torch.tensor([POSE[n] for n in BODY_25B.names], dtype=dtype, device=device)[None].repeat(batch, 1, 1)
    cams = [Camera.look_at(f"cam{i}", eye=(3.2 * np.sin(0.6 * i), -3.2 * np.cos(0.6 * i), 1.1),
                           target=(0.0, 0.0, 0.9), width=size, height=size, fov_deg=40) for i in range(batch)]
    K, R, t = cameras_to_tensors(cams, device=device, dtype=dtype)
    prims = BonePrimitives(BODY_25B).to(device)
    n = prims.num_bones
    g = torch.Generator().manual_seed(0)
    features = torch.randn(1, n, channels, generator=g, dtype=dtype).to(device).requires_grad_(True)
    background = torch.zeros(channels, dtype=dtype, device=device, requires_grad=True)
    return joints, K, R, t, prims, features, background


def renderer_step(scene, size, mode, backend, backward, unchunked=False):
    joints, K, R, t, prims, features, background = scene
    B = joints.shape[0]

    def run():
        with torch.set_grad_enabled(backward):
            j = joints.clone().requires_grad_(backward)
            means, P = bone_gaussians(j, prims.bones, prims.widths())
            dens = prims.densities()[None].expand(B, -1)
            bg = background[None].expand(B, -1)
            if unchunked:
                out = raycast_reference(means, P, dens, features, bg, K, R, t, size, size, mode=mode,
                                        chunk_rays=B * size * size, use_checkpoint=False)
            else:
                out = raycast(means, P, dens, features, bg, K, R, t, size, size, mode=mode, backend=backend)
            if backward:
                loss = out[0].square().mean() + out[1].mean() + 1e-3 * out[2].mean()
                loss.backward()
            return out
    return run


def load_decoder(channels: int, device):
    """The team's decoder if it exists in this checkout (it is written separately)."""
    try:
        from engine.neural.actor.decoder import Decoder, DecoderConfig
    except Exception as exc:  # not written yet, or broken: the renderer rows still stand
        return None, f"decoder unavailable ({type(exc).__name__}: {exc})"
    try:
        cfg = DecoderConfig.preset("small", in_channels=channels + 1)
        dec = Decoder(cfg).to(device).to(memory_format=torch.channels_last)
        code = torch.randn(cfg.code_dim, device=device)
        return (dec, code), f"decoder: engine.neural.actor.decoder preset 'small' ({cfg.base_channels} base channels, " \
                            f"{cfg.levels} levels, upsample {cfg.upsample})"
    except Exception as exc:
        return None, f"decoder could not be built ({type(exc).__name__}: {exc})"


def decoder_step(decoder, latent_shape, device, backward):
    dec, code = decoder
    x = torch.randn(latent_shape, device=device)

    def run():
        amp = torch.autocast(device_type="cuda", dtype=torch.bfloat16) if device.type == "cuda" else _Null()
        with torch.set_grad_enabled(backward), amp:
            rgb, alpha = dec(x, code)
        if backward:
            (rgb.float().mean() + alpha.float().mean()).backward()
    return run


def total_step(scene, decoder, size, mode, backend, device, backward):
    joints, K, R, t, prims, features, background = scene
    dec, code = decoder
    B = joints.shape[0]

    def run():
        with torch.set_grad_enabled(backward):
            means, P = bone_gaussians(joints, prims.bones, prims.widths())
            latent, alpha, _ = raycast(means, P, prims.densities()[None].expand(B, -1), features,
                                       background[None].expand(B, -1), K, R, t, size, size, mode=mode,
                                       backend=backend)
            amp = torch.autocast(device_type="cuda", dtype=torch.bfloat16) if device.type == "cuda" else _Null()
            with amp:
                rgb, a = dec(torch.cat([latent, alpha], 1), code)
            if backward:
                (rgb.float().mean() + a.float().mean()).backward()
    return run


def agreement(device) -> list[str]:
    """Max abs differences vs a float64 reference render (kernels and float32), 2 frames at 64x48."""
    lines = []
    joints = torch.tensor([POSE[n] for n in BODY_25B.names], dtype=torch.float64, device=device)[None].repeat(2, 1, 1)
    cams = [Camera.look_at(f"c{i}", eye=eye, target=(0.0, 0.0, 0.9), width=48, height=64, fov_deg=40)
            for i, eye in enumerate([(0.6, -3.2, 1.2), (3.0, 0.8, 1.4)])]
    K, R, t = cameras_to_tensors(cams, device=device, dtype=torch.float64)
    prims = BonePrimitives(BODY_25B).to(device)
    n = prims.num_bones
    feats = torch.randn(1, n, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64).to(device)
    bg = torch.tensor([[0.1, 0.2, 0.3, 0.4]], dtype=torch.float64, device=device).expand(2, -1)
    backends = ["reference"] + (["kernel"] if kernel_available(device) else [])
    for mode in ("transmittance", "rochette"):
        def render(dtype, backend):
            means, P = bone_gaussians(joints.to(dtype), prims.bones, prims.widths().detach().to(dtype))
            dens = prims.densities().detach().to(dtype)[None].expand(2, -1)
            return raycast(means, P, dens, feats.to(dtype), bg.to(dtype), K, R, t, 64, 48, mode=mode,
                           backend=backend)
        truth = render(torch.float64, "reference")
        for backend in backends:
            for dtype in (torch.float64, torch.float32):
                if backend == "reference" and dtype == torch.float64:
                    continue
                out = render(dtype, backend)
                diffs = ", ".join(f"{name} {float((o.double() - r).abs().max()):.1e}"
                                  for name, o, r in zip(("latent", "alpha", "depth"), out, truth))
                lines.append(f"{mode:13} {backend:9} {str(dtype).replace('torch.', ''):7}: {diffs}")
    return lines


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="example: python scripts/bench_render.py --sizes 256 512 --repeats 3")
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512], help="square image sizes (pixels)")
    ap.add_argument("--devices", nargs="+", default=None, help="cpu and/or cuda (default: cpu, plus cuda if present)")
    ap.add_argument("--modes", nargs="+", default=["transmittance", "rochette"], choices=["transmittance", "rochette"])
    ap.add_argument("--channels", type=int, default=16, help="latent channels (default 16)")
    ap.add_argument("--batch", type=int, default=1, help="frames per call; times are reported per frame")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per row (median), after one warm-up")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--no-agreement", action="store_true", help="skip the kernel/float32 agreement check")
    ap.add_argument("--no-unchunked", action="store_true", help="skip the unchunked reference comparison rows")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    _fast_malloc()
    devices = args.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))

    load = ", load average %.1f on %d cores" % (os.getloadavg()[0], os.cpu_count() or 0) \
        if hasattr(os, "getloadavg") else ""
    print(f"torch {torch.__version__}, CPU threads {torch.get_num_threads()}{load}, "
          f"CUDA: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}")
    print(f"scene: BODY_25B standing pose, {len(BODY_25B.bones)} bones, {args.channels} channels, "
          f"batch {args.batch}, float32; times are medians of {args.repeats} runs after a warm-up, per frame")
    header = f"| {'device':6} | {'size':>4} | {'mode':13} | {'stage':32} | {'fwd ms':>8} | {'fwd+bwd ms':>10} " \
             f"| {'peak MiB fwd':>12} | {'peak MiB fwd+bwd':>16} |"
    print()
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|", flush=True)

    def mem(x):
        return "n/a" if x is None else f"{x:8.1f}"

    def row(dev, size, mode, stage, fwd, bwd):
        (f, fm), (b, bm) = fwd, bwd
        print(f"| {dev:6} | {size:4d} | {mode:13} | {stage:32} | {f / args.batch:8.1f} | {b / args.batch:10.1f} "
              f"| {mem(fm):>12} | {mem(bm):>16} |", flush=True)

    notes = set()
    for dev_name in devices:
        device = torch.device(dev_name)
        if device.type == "cuda" and not torch.cuda.is_available():
            notes.add("cuda requested but not available; skipped")
            continue
        decoder, note = load_decoder(args.channels, device)
        notes.add(note)
        backends = ["reference"] + (["kernel"] if kernel_available(device) else [])
        if not kernel_available(device):
            notes.add(f"compiled kernels not available on {dev_name} (engine.neural.render.kernels missing or not built)")
        best = backends[-1]  # what backend="auto" picks for a pinhole camera
        # one-time initialisation (lazy kernels, autograd machinery) must not count as a step's memory
        tiny = make_scene(16, args.channels, args.batch, device)
        for mode in args.modes:
            for backend in backends:
                for bwd in (False, True):
                    renderer_step(tiny, 16, mode, backend, bwd, False)()
                    renderer_step(tiny, 16, mode, backend, bwd, True)()
                    if decoder is not None:
                        total_step(tiny, decoder, 16, mode, backend, device, bwd)()
        for size in args.sizes:
            scene = make_scene(size, args.channels, args.batch, device)
            for mode in args.modes:
                variants = [(b, False) for b in backends] + ([] if args.no_unchunked else [("reference", True)])
                for backend, unchunked in variants:
                    label = "reference, unchunked" if unchunked else backend
                    row(dev_name, size, mode, f"renderer ({label})",
                        timed(renderer_step(scene, size, mode, backend, False, unchunked), device, args.repeats),
                        timed(renderer_step(scene, size, mode, backend, True, unchunked), device, args.repeats))
                if decoder is not None:
                    row(dev_name, size, mode, f"total ({best} + decoder)",
                        timed(total_step(scene, decoder, size, mode, best, device, False), device, args.repeats),
                        timed(total_step(scene, decoder, size, mode, best, device, True), device, args.repeats))
            if decoder is not None:  # the decoder does not depend on the renderer's mode
                shape = (args.batch, args.channels + 1, size, size)
                row(dev_name, size, "-", "decoder",
                    timed(decoder_step(decoder, shape, device, False), device, args.repeats),
                    timed(decoder_step(decoder, shape, device, True), device, args.repeats))

    rows_agree = []
    for dev_name in ([] if args.no_agreement else devices):
        if dev_name == "cuda" and not torch.cuda.is_available():
            continue
        for line in agreement(torch.device(dev_name)):
            rows_agree.append(f"{dev_name}: {line}")

    print()
    print("agreement with a float64 reference render (2 frames, 64x48, max abs difference):")
    for line in rows_agree:
        print("  " + line)
    print()
    for n in sorted(notes):
        print(f"note: {n}")
    if hasattr(os, "getloadavg"):
        print(f"note: load average at the end {os.getloadavg()[0]:.1f} (other processes slow the CPU timings)")
    print("note: CPU peak memory = peak RSS increase during one step (see the script's docstring); "
          "CUDA = max_memory_allocated increase")
    return 0


if __name__ == "__main__":
    sys.exit(main())
