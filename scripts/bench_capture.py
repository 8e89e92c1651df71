"""Benchmark ``marionette make-capture``: seconds per rendered view at 256x256 on this machine.

    python scripts/bench_capture.py                 # 2 cameras x 4 frames, extrapolated to 4 x 60
    python scripts/bench_capture.py --full          # render the real 4-camera x 60-frame capture

Prints the measured seconds per view (Cycles CPU, default samples + OpenImageDenoise), the
set-up time, and the time a 4-camera x 60-frame 256x256 capture takes (target: <= 10 minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

from engine.cli import main as cli


def run(out: Path, cameras: int, frames: int, resolution: int, samples: int) -> tuple[float, float, dict]:
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    rc = cli(["make-capture", "-o", str(out), "--cameras", str(cameras), "--frames", str(frames),
              "--resolution", str(resolution), "--samples", str(samples), "--seed", "0"])
    wall = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"make-capture failed with status {rc}")
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)  # the Blender subprocess
    return wall, cpu, json.loads((out / "capture.json").read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cameras", type=int, default=2)
    p.add_argument("--frames", type=int, default=4)
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--full", action="store_true", help="render the whole 4 x 60 capture instead of extrapolating")
    a = p.parse_args()
    cams, frames = (4, 60) if a.full else (a.cameras, a.frames)
    with tempfile.TemporaryDirectory() as tmp:
        wall, cpu, meta = run(Path(tmp) / "bench", cams, frames, a.resolution, a.samples)
    gen = meta["generator"]
    views = cams * frames
    per_view = gen["render_seconds"] / views
    setup = wall - gen["render_seconds"]
    print(f"machine: {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f} (shared machines inflate this)")
    print(f"renderer: {gen['render']['engine']} on {gen['render']['device']}, {gen['render']['samples']} samples, "
          f"denoiser {gen['render']['denoiser']}, Blender {gen['blender']}")
    print(f"rendered {cams} cameras x {frames} frames at {a.resolution}x{a.resolution}: {wall:.1f} s wall, "
          f"{per_view:.2f} s per view (render loop incl. posing, mask, keypoints), set-up {setup:.1f} s")
    cores = len(os.sched_getaffinity(0))
    print(f"CPU time of the Blender process: {cpu:.1f} s in all, {cpu / views:.2f} CPU-s per view "
          f"(upper bound, includes set-up); on {cores} idle cores ~{cpu / views / cores:.2f} s per view")
    est = setup + 4 * 60 * per_view
    label = "actual" if a.full else "extrapolated"
    print(f"4 cameras x 60 frames at {a.resolution}x{a.resolution}: {label} {est / 60:.1f} min at this load "
          f"({'within' if est <= 600 else 'OVER'} the 10 minute target); "
          f"from CPU time on {cores} idle cores: {cpu / views * 240 / cores / 60:.1f} min")


if __name__ == "__main__":
    main()
