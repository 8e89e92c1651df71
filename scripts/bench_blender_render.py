"""Milliseconds per neural frame rendered through Blender, and the share of each stage.

    python scripts/bench_blender_render.py [--actor ACTOR_DIR] [--size 512] [--frames 5] [--device cpu]

Builds the demo scene on the bpy module (the bundled real capture's skeleton, the
shipped demo actor unless --actor, a camera orbiting it), renders --frames frames
through the Marionette engine with bpy.ops.render.render and prints, per frame:
camera/pose read, actor load (cache hit after the first), renderer+decoder, compositing +
buffer conversion, writing into Blender, and the whole F12 call. The renderer/decoder split is
measured separately with the same actor, joints and camera in the engine.
Targets: <= 1 s per 512x512 frame on 2 CPU cores; <= 10 ms on one modern GPU.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--actor", help="actor folder (default: the shipped demo actor)")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--frames", type=int, default=5)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    args = p.parse_args(argv)

    os.environ["MARIONETTE_DEVICE"] = args.device  # read by the render engine when run outside an add-on
    import numpy as np
    import torch

    from engine.data import demo_actor_path
    from engine.cli.commands.demo import triangulate_demo

    actor_path = Path(args.actor) if args.actor else demo_actor_path()
    work = Path(tempfile.mkdtemp(prefix="marionette-bench-"))
    _, skel, _ = triangulate_demo(work, progress=False)

    import bpy

    from addon import demo_scene, render_engine

    frames = demo_scene.build_scene(bpy, str(skel), str(actor_path), resolution=args.size, fps=30.0,
                                    seconds=max(1, args.frames + 1) / 30.0)
    scene = bpy.context.scene
    rows = []
    for i, f in enumerate(frames[: args.frames + 1]):
        scene.frame_set(f)
        t0 = time.perf_counter()
        bpy.ops.render.render(write_still=False)
        total = time.perf_counter() - t0
        stats = dict(render_engine.LAST_STATS)
        if i == 0:
            continue  # warm-up: loads the actor and allocates
        row = {k: v for k, v in stats.items() if isinstance(v, float)}
        row["overhead"] = total - sum(row.values())  # Blender's own work around the engine, this frame
        row["f12"] = total
        rows.append(row)

    # renderer vs decoder split, same actor/camera/joints, in the engine
    from engine.neural.actor.model import latent_intrinsics
    from engine.scene.shot import _CACHE, resolve_device

    depsgraph = bpy.context.evaluated_depsgraph_get()
    cam = render_engine.camera_from_scene(scene, depsgraph)
    actors, _ = render_engine.gather_actors(scene, depsgraph)
    dev = resolve_device(args.device)
    actor = _CACHE.get(actors[0].actor_path, dev)
    from engine.scene.shot import joints_for_actor

    J = torch.as_tensor(joints_for_actor(actors[0].joints, actors[0].joint_set, actor.joint_set.name, "bench")[None])
    K = torch.as_tensor(cam.K[None], dtype=torch.float32)
    R = torch.as_tensor(cam.R[None], dtype=torch.float32)
    t = torch.as_tensor(cam.t[None], dtype=torch.float32)
    J, K, R, t = (x.to(dev) for x in (J, K, R, t))
    s = actor.upsample
    lh, lw = -(-cam.height // s), -(-cam.width // s)
    split = {"renderer": [], "decoder": []}
    with torch.no_grad():
        for _ in range(args.frames):
            t0 = time.perf_counter()
            latent, lat_alpha, _ = actor.render_latent(J, latent_intrinsics(K, s), R, t, lh, lw)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t1 = time.perf_counter()
            actor.decoder(torch.cat([latent, lat_alpha], 1), actor.actor_code)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            split["renderer"].append(t1 - t0)
            split["decoder"].append(time.perf_counter() - t1)

    med = {k: float(np.median([r[k] for r in rows])) for k in rows[0]}
    total = med["f12"]
    print(f"Marionette neural render through Blender {bpy.app.version_string}: {args.size}x{args.size}, "
          f"device {dev}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"actor {actor_path.name} ({actor.config.decoder.base_channels}-channel decoder, upsample {s}), "
          f"median of {len(rows)} frames")
    print(f"{'stage':<34}{'ms':>10}{'share':>9}")
    labels = [("read", "camera + pose read"), ("load", "actor load (cached)"),
              ("render_decode", "renderer + decoder"), ("composite", "composite + to Blender buffer"),
              ("write", "write into render result")]
    for key, label in labels:
        print(f"{label:<34}{1000 * med[key]:>10.1f}{100 * med[key] / total:>8.1f}%")
    other = med["overhead"]
    print(f"{'Blender overhead (F12 call)':<34}{1000 * other:>10.1f}{100 * other / total:>8.1f}%")
    print(f"{'total per frame (F12)':<34}{1000 * total:>10.1f}")
    r_ms, d_ms = 1000 * float(np.median(split["renderer"])), 1000 * float(np.median(split["decoder"]))
    print(f"split measured in the engine: renderer {r_ms:.1f} ms, decoder {d_ms:.1f} ms")
    target = 1000.0 if dev.type == "cpu" else 10.0
    verdict = "meets" if 1000 * total <= target else "misses"
    print(f"target {target:.0f} ms per {args.size}^2 frame on {dev.type}: {verdict} ({1000 * total:.0f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
