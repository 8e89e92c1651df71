"""The neural viewport's responsiveness, measured through its scheduler (no Blender needed).

    python scripts/bench_viewport.py [--actor ACTOR_DIR] [--sizes 320x180,640x360] [--seconds 4]
                                     [--repeats 8] [--device cpu] [--scrub-hz 30]

Drives ``engine.scene.viewport.ProgressiveRenderer`` exactly as the Blender viewport does
(``addon/viewport.py``): one ``ViewRequest`` per change, latest request wins, coarse pass
first, refinement once the view settles. The actor is the shipped demo actor unless --actor,
posed by its reference skeleton (interpolated between frames), seen by a camera framing it
(the person about 3/4 of the picture's height) at each size. For each size it prints

* time to the first (coarse) picture after a pose change, from idle (median and worst of
  --repeats), and while a refinement of the previous pose is still running;
* pictures per second while scrubbing (a new pose every 1/--scrub-hz s for --seconds), with
  the sizes the pictures were made at and their latency; and, for comparison, the rate when
  every picture is made at the full size (no coarse pass);
* the time until the full-size picture once the pose stops changing;
* CPU seconds used by the process over 2 s of idling after the last picture (should be ~0).

Targets (issue 15, 2 CPU cores, demo actor): coarse picture within 150 ms of a pose change,
>= 8 pictures per second at 320x180 while scrubbing, no CPU use when nothing changes.
Figures on a shared machine are noisy: the load average is printed with them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _size(text: str) -> tuple[int, int]:
    w, _, h = text.lower().partition("x")
    return int(w), int(h)


def _poses(skeleton, count: int):
    """``count`` poses interpolated along the skeleton's frames (a smooth scrub of its motion)."""
    import numpy as np

    J = skeleton.joints
    t = np.linspace(0, len(J) - 1, count)
    i0 = np.floor(t).astype(int)
    i1 = np.minimum(i0 + 1, len(J) - 1)
    w = (t - i0)[:, None, None]
    return (1 - w) * J[i0] + w * J[i1]


def _framing_camera(joints, width: int, height: int):
    """A camera in front of the actor (the person about 3/4 of the image height)."""
    import numpy as np

    from engine.geometry.camera import Camera

    pts = joints.reshape(-1, 3)
    pts = pts[np.isfinite(pts).all(1)]
    lo, hi = pts.min(0), pts.max(0)
    centre = 0.5 * (lo + hi)
    tall = float(hi[2] - lo[2]) or 1.7
    fov = 40.0
    f_px = 0.5 * height / np.tan(np.radians(fov) / 2)
    dist = f_px * tall / (0.75 * height)
    eye = centre + np.array([0.35, -1.0, 0.15]) / np.linalg.norm([0.35, -1.0, 0.15]) * dist
    return Camera.look_at("view", eye=eye, target=centre, width=width, height=height, f_px=f_px)


def _wait_idle(renderer, timeout: float = 60.0) -> None:
    deadline = time.perf_counter() + timeout
    while renderer.busy and time.perf_counter() < deadline:
        time.sleep(0.005)


def _scrub(renderer, request, seconds: float, hz: float, published: list) -> tuple[int, list, float]:
    """Submit a new pose every 1/hz s for ``seconds``; (submits, pictures published meanwhile, stop time)."""
    _wait_idle(renderer)
    published.clear()
    t_end = time.perf_counter() + seconds
    next_t = time.perf_counter()
    submits = 0
    while time.perf_counter() < t_end:
        renderer.submit(request())
        submits += 1
        next_t += 1.0 / hz
        time.sleep(max(0.0, next_t - time.perf_counter()))
    t_stop = time.perf_counter()
    return submits, [f for f in published if f.ready <= t_stop and f.error is None], t_stop


def bench_size(args, actor_path: str, joint_set: str, poses, size) -> dict:
    from engine.scene.shot import BoundActor
    from engine.scene.viewport import ProgressiveRenderer, ViewRequest

    W, H = size
    cam = _framing_camera(poses, W, H)
    published = []
    renderer = ProgressiveRenderer(on_frame=published.append)
    k = [0]

    def request():
        k[0] = (k[0] + 1) % len(poses)
        actors = (BoundActor(name="actor", actor_path=actor_path, joints=poses[k[0]], joint_set=joint_set),)
        return ViewRequest(camera=cam, actors=actors, background=None, device=args.device)

    out = {"size": f"{W}x{H}"}
    try:
        # warm-up: torch import, actor load, first allocations, cost estimate
        for _ in range(3):
            renderer.submit(request())
            f = renderer.wait(final=True, timeout=120)
            if f is None or f.error:
                raise SystemExit(f"viewport render failed: {f.error if f else 'timeout'}")
            _wait_idle(renderer)

        # time to the first picture after a pose change, from idle
        lat, coarse_sizes = [], []
        for _ in range(args.repeats):
            _wait_idle(renderer)
            gen = renderer.submit(request())
            f = renderer.wait(gen, timeout=60)
            lat.append(f.latency_s)
            coarse_sizes.append(f"{f.width}x{f.height}")
        out["first_ms"] = [1000 * v for v in lat]
        out["coarse_sizes"] = sorted(set(coarse_sizes))

        # the same while a refinement of the previous pose runs
        lat_busy = []
        for _ in range(max(3, args.repeats // 2)):
            _wait_idle(renderer)
            gen = renderer.submit(request())
            renderer.wait(gen, timeout=60)
            deadline = time.perf_counter() + 5
            while not renderer._refine_busy and time.perf_counter() < deadline:  # noqa: SLF001 (bench probe)
                time.sleep(0.002)
            refining = renderer._refine_busy
            gen = renderer.submit(request())
            f = renderer.wait(gen, timeout=60)
            if refining:
                lat_busy.append(f.latency_s)
        out["first_during_refine_ms"] = [1000 * v for v in lat_busy]

        # scrubbing: a new pose every 1/scrub_hz seconds
        submits, scrub, t_stop = _scrub(renderer, request, args.seconds, args.scrub_hz, published)
        out["scrub_submits"] = submits
        out["scrub_pictures_per_s"] = len(scrub) / args.seconds
        out["scrub_latency_ms"] = [1000 * f.latency_s for f in scrub]
        out["scrub_sizes"] = {s: sum(1 for f in scrub if f"{f.width}x{f.height}" == s)
                              for s in sorted({f"{f.width}x{f.height}" for f in scrub})}
        # after the last pose: time until the full-size picture
        final = renderer.wait(final=True, timeout=120)
        out["final_after_stop_ms"] = 1000 * (final.ready - t_stop) if final is not None else float("nan")
        out["final_size"] = f"{final.width}x{final.height}" if final is not None else "?"

        # idle: no CPU once the full-size picture is shown
        _wait_idle(renderer)
        passes = renderer.passes
        c0, t0 = time.process_time(), time.perf_counter()
        time.sleep(2.0)
        out["idle_cpu_s"] = time.process_time() - c0
        out["idle_wall_s"] = time.perf_counter() - t0
        out["idle_passes"] = renderer.passes - passes
    finally:
        renderer.close(timeout=30)
    # for comparison: scrubbing with every picture at the full size (no coarse passes)
    published = []
    renderer = ProgressiveRenderer(on_frame=published.append, coarse_budget_s=1e9)
    try:
        renderer.submit(request())
        renderer.wait(final=True, timeout=120)
        _, full, _ = _scrub(renderer, request, args.seconds, args.scrub_hz, published)
        out["scrub_full_pictures_per_s"] = len(full) / args.seconds
        out["scrub_full_ms"] = [1000 * f.render_s for f in full]
    finally:
        renderer.close(timeout=30)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--actor", help="actor folder (default: the shipped demo actor)")
    p.add_argument("--sizes", default="320x180,640x360", help="viewport render sizes, comma-separated WxH")
    p.add_argument("--seconds", type=float, default=4.0, help="scrubbing time per size")
    p.add_argument("--repeats", type=int, default=8, help="pose changes timed from idle")
    p.add_argument("--scrub-hz", type=float, default=30.0, help="pose changes per second while scrubbing")
    p.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda", "mps"))
    args = p.parse_args(argv)

    import torch

    from engine.data import demo_actor_path
    from engine.io.skeleton_file import load_skeleton
    from engine.scene.shot import read_actor_header

    actor_path = Path(args.actor) if args.actor else demo_actor_path()
    header = read_actor_header(actor_path)
    ref = actor_path / "reference_skeleton.npz"
    if not ref.is_file():
        raise SystemExit(f"{ref}: the actor has no reference skeleton to pose it with")
    skel = load_skeleton(ref)
    poses = _poses(skel, 240)
    load = os.getloadavg()
    print(f"Marionette viewport benchmark: actor {actor_path.name} ({header['joint_set']}), device {args.device}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} torch threads, {os.cpu_count()} CPU cores")
    print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (other jobs on the machine slow every "
          "figure below)")
    results = []
    for text in args.sizes.split(","):
        r = bench_size(args, str(actor_path), skel.joint_set.name, poses, _size(text))
        results.append(r)
        first = r["first_ms"]
        busy = r["first_during_refine_ms"]
        print(f"\n{r['size']} viewport (full-size picture {r['final_size']}):")
        print(f"  first picture after a pose change, from idle: median {statistics.median(first):.0f} ms, "
              f"worst {max(first):.0f} ms over {len(first)} (coarse {', '.join(r['coarse_sizes'])}; target 150 ms)")
        if busy:
            print(f"  ... while a refinement runs: median {statistics.median(busy):.0f} ms, worst {max(busy):.0f} ms "
                  f"over {len(busy)}")
        lat = r["scrub_latency_ms"]
        print(f"  scrubbing ({r['scrub_submits']} pose changes in {args.seconds:g} s): "
              f"{r['scrub_pictures_per_s']:.1f} pictures/s (target 8), latency median "
              f"{statistics.median(lat) if lat else float('nan'):.0f} ms, sizes {r['scrub_sizes']}")
        full_ms = r["scrub_full_ms"]
        print(f"  scrubbing with full-size pictures only (no coarse pass): {r['scrub_full_pictures_per_s']:.1f} "
              f"pictures/s, {statistics.median(full_ms) if full_ms else float('nan'):.0f} ms each (median)")
        print(f"  full-size picture {r['final_after_stop_ms']:.0f} ms after the last pose change")
        print(f"  idle: {r['idle_cpu_s'] * 1000:.0f} ms of CPU in {r['idle_wall_s']:.1f} s, "
              f"{r['idle_passes']} passes")
    load = os.getloadavg()
    print(f"\nload average at end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
