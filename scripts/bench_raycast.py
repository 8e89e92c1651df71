#!/usr/bin/env python3
"""Benchmark the compiled raycast kernels against the PyTorch reference renderer.

For every image size x bone count x channel count it renders one float32 frame of a walking
BODY_25B body (24 bones: its first 24; 64 bones: its 26 plus 38 extra bones laid along the body)
and prints forward and forward+backward milliseconds and peak memory of both implementations,
measured in the same run, with kernel/reference ratios.

Each (implementation, configuration) runs in a fresh worker process so peak memory can be read
from the process's resident set: the worker samples its RSS every ~0.5 ms during the call (with
glibc told to mmap every allocation >= 64 KiB, so freed memory leaves the RSS at once) and reports
the peak above the RSS just before the call.  That peak includes the outputs (and, for
forward+backward, the input gradients; the output gradients are allocated beforehand); "scratch"
subtracts those results and is what an implementation needs beyond them.

    python scripts/bench_raycast.py                      # 256/512 x 24/64 bones x 16/32 channels
    python scripts/bench_raycast.py --sizes 256 --bones 24 --channels 16 --reps 2

``--actor DIR`` renders a trained actor's own primitives instead (posed at the first frame of its
``reference_skeleton.npz``, its learned shapes, densities and latent codes; "bones" then reads as
its primitive count and "ch" as its latent channels), through a 40-degree camera 2.6 m in front
of the person, so the person fills most of the frame's height as in an F12 render:

    python scripts/bench_raycast.py --actor engine/data/demo_actor --sizes 512
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


# ---------------------------------------------------------------------- worker side
def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _PeakSampler:
    """Samples the process RSS in a thread; torch ops release the GIL while they compute."""

    def __init__(self):
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(0.0005)

    def __enter__(self):
        self.peak = _rss_bytes()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())


def _trim():
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def _scene(size: int, bones: int, channels: int):
    import numpy as np
    import torch

    from engine.synthetic.toy_capture import ring_cameras, walk_sequence
    from engine.neural.render import bone_gaussians
    from engine.neural.render.rays import cameras_to_tensors
    from engine.body.joint_sets import BODY_25B

    rng = np.random.default_rng(0)
    joints = walk_sequence(4)[1].astype(np.float64)  # [25, 3]
    segs = [(joints[a], joints[b]) for a, b in BODY_25B.bones]
    widths = list(BODY_25B.default_widths)
    base = list(segs)
    while len(segs) < bones:  # extra bones along the body (e.g. a denser rig)
        a, b = base[rng.integers(len(base))]
        u, v = sorted(rng.uniform(0, 1, 2))
        off = rng.normal(0, 0.03, 3)
        segs.append((a + u * (b - a) + off, a + v * (b - a) + off))
        widths.append(float(rng.uniform(0.03, 0.06)))
    segs, widths = segs[:bones], widths[:bones]
    pts = torch.tensor(np.array([p for s in segs for p in s]), dtype=torch.float32)[None]
    pairs = [(2 * i, 2 * i + 1) for i in range(bones)]
    means, precisions = bone_gaussians(pts, pairs, torch.tensor(widths, dtype=torch.float32))
    cam = ring_cameras(1, size)[0]
    K, R, t = cameras_to_tensors([cam], dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    densities = torch.full((1, bones), 30.0)
    features = torch.randn(1, bones, channels, generator=g)
    background = torch.randn(1, channels, generator=g)
    return means, precisions, densities, features, background, K, R, t


def _actor_scene(actor_dir: str, size: int):
    import numpy as np
    import torch

    from engine.geometry.camera import Camera
    from engine.neural.actor.model_file import load_actor
    from engine.neural.render.rays import cameras_to_tensors

    actor, _ = load_actor(actor_dir)
    ref = np.load(Path(actor_dir) / "reference_skeleton.npz")
    joints = torch.tensor(ref["joints"][0], dtype=torch.float32)[None]
    with torch.no_grad():
        g = actor.primitives(joints)
    lo, hi = joints[0].amin(0).numpy(), joints[0].amax(0).numpy()
    target = 0.5 * (lo + hi)
    up = np.eye(3)[{"X": 0, "Y": 1, "Z": 2}[str(ref["up_axis"])]]
    side = np.cross(up, [1.0, 0.0, 0.0] if abs(up[0]) < 0.9 else [0.0, 1.0, 0.0])
    cam = Camera.look_at("bench", target + 2.6 * side / np.linalg.norm(side), target, size, size, fov_deg=40.0,
                         up=up)
    K, R, t = cameras_to_tensors([cam], dtype=torch.float32)
    B = 1
    return (g["means"].detach(), g["precisions"].detach(), g["densities"].detach().expand(B, -1).contiguous(),
            actor.codes.detach()[None].contiguous(), actor.background.detach()[None].contiguous(), K, R, t)


def worker(impl: str, size: int, bones: int, channels: int, reps: int, ref_reps: int, threads: int,
           actor_dir: str = "-") -> dict:
    import torch

    from engine.neural.render import kernels, raycast_reference

    if threads > 0:
        torch.set_num_threads(threads)
    if impl == "kernel" and not kernels.available("cpu"):
        return {"error": kernels.unavailable_reason()}
    fn = kernels.raycast_kernel if impl == "kernel" else raycast_reference
    scene = _scene(size, bones, channels) if actor_dir == "-" else _actor_scene(actor_dir, size)
    channels = scene[3].shape[-1]
    leaves = [x.clone().requires_grad_(True) for x in scene[:5]]
    out_bytes = 4 * size * size * (channels + 2)
    grad_bytes = sum(x.numel() * x.element_size() for x in leaves)

    def fwd():
        with torch.no_grad():
            return fn(*scene, size, size)

    g = torch.Generator().manual_seed(1)
    grad_out = [torch.randn(1, channels, size, size, generator=g), torch.randn(1, 1, size, size, generator=g),
                torch.randn(1, 1, size, size, generator=g)]  # allocated up front: not part of the peak

    def fwd_bwd():
        outs = fn(*leaves, *scene[5:], size, size)
        return torch.autograd.grad(outs, leaves, grad_outputs=grad_out)

    res = {}
    n_reps = reps if impl == "kernel" else ref_reps
    for name, call, keep in (("fwd", fwd, out_bytes), ("fwdbwd", fwd_bwd, out_bytes + grad_bytes)):
        if impl == "kernel":
            call()  # warm-up (the reference's calls take seconds; its first-call overhead is noise)
        times, peaks = [], []
        for _ in range(n_reps):
            _trim()
            base = _rss_bytes()
            with _PeakSampler() as sampler:
                t0 = time.perf_counter()
                result = call()
                times.append(time.perf_counter() - t0)
            del result
            peaks.append(max(0, sampler.peak - base))
        peak = max(peaks)
        res[name] = {"ms": 1000 * min(times), "peak_mb": peak / 2**20, "scratch_mb": max(0, peak - keep) / 2**20}
    return res


# ---------------------------------------------------------------------- driver
def run_worker(impl, size, bones, channels, reps, ref_reps, threads, actor_dir="-") -> dict:
    env = dict(os.environ)
    env["MALLOC_MMAP_THRESHOLD_"] = "65536"  # large blocks straight from/to the OS: RSS tracks live memory
    env["MALLOC_TRIM_THRESHOLD_"] = "0"
    cmd = [sys.executable, __file__, "--worker", impl, str(size), str(bones), str(channels), str(reps), str(ref_reps),
           str(threads), actor_dir]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(ROOT))
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--bones", type=int, nargs="+", default=[24, 64])
    ap.add_argument("--channels", type=int, nargs="+", default=[16, 32])
    ap.add_argument("--reps", type=int, default=3, help="timed kernel repetitions (best is reported), after a warm-up")
    ap.add_argument("--ref-reps", type=int, default=1, help="timed reference repetitions (best is reported)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's default)")
    ap.add_argument("--actor", metavar="DIR", help="render this actor's own primitives (see above)")
    ap.add_argument("--worker", nargs=8, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        impl, size, bones, channels, reps, ref_reps, threads, actor_dir = args.worker
        print(json.dumps(worker(impl, int(size), int(bones), int(channels), int(reps), int(ref_reps), int(threads),
                                actor_dir)))
        return 0
    if args.actor:
        info = json.loads((Path(args.actor) / "actor.json").read_text())  # labels only; the worker loads it
        args.bones = [len(info["bones"]) * int(info.get("per_bone", 1))]
        args.channels = [int(info["latent_dim"])]

    import torch
    load = os.getloadavg()
    print(f"bench_raycast: torch {torch.__version__}, {os.cpu_count()} CPUs, torch threads "
          f"{args.threads or torch.get_num_threads()}, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, "
          f"float32, best of {args.reps} (kernel) / {args.ref_reps} (reference)")
    hdr = (f"{'size':>5} {'bones':>5} {'ch':>3} | {'fwd ms ker':>10} {'ref':>8} {'speedup':>7} | "
           f"{'f+b ms ker':>10} {'ref':>8} {'speedup':>7} | {'f+b peak MB ker':>15} {'ref':>7} {'ratio':>6} | "
           f"{'f+b scratch MB ker':>18} {'ref':>7} | {'fwd peak MB ker':>15} {'ref':>7}")
    print(hdr)
    print("-" * len(hdr))
    for size in args.sizes:
        for bones in args.bones:
            for ch in args.channels:
                actor = args.actor or "-"
                k = run_worker("kernel", size, bones, ch, args.reps, args.ref_reps, args.threads, actor)
                r = run_worker("reference", size, bones, ch, args.reps, args.ref_reps, args.threads, actor)
                if "error" in k or "error" in r:
                    print(f"{size:>5} {bones:>5} {ch:>3} | error: {k.get('error') or r.get('error')}")
                    continue
                kf, rf, kb, rb = k["fwd"], r["fwd"], k["fwdbwd"], r["fwdbwd"]
                print(f"{size:>5} {bones:>5} {ch:>3} | {kf['ms']:>10.1f} {rf['ms']:>8.1f} {rf['ms'] / kf['ms']:>6.1f}x | "
                      f"{kb['ms']:>10.1f} {rb['ms']:>8.1f} {rb['ms'] / kb['ms']:>6.1f}x | "
                      f"{kb['peak_mb']:>15.1f} {rb['peak_mb']:>7.1f} {kb['peak_mb'] / max(rb['peak_mb'], 1e-9):>6.3f} | "
                      f"{kb['scratch_mb']:>18.1f} {rb['scratch_mb']:>7.1f} | {kf['peak_mb']:>15.1f} {rf['peak_mb']:>7.1f}",
                      flush=True)
    load = os.getloadavg()
    print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
