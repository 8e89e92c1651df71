"""Batch-render a .blend through the Marionette engine, resumable and chunkable for render farms.

Inside Blender (the Marionette extension enabled):
    blender -b scene.blend --python scripts/render_batch.py -- --frames 1-100 -o DIR
With the bpy module (no Blender install needed):
    python scripts/render_batch.py scene.blend --frames 1-100 -o DIR

Every frame is written as DIR/<prefix>NNNNNN.png through a temporary file renamed into
place, so a frame file that exists is complete; a re-run skips those (resume) unless
--overwrite. --frames takes a chunk (A-B, or A-B:STEP), so a farm manager such as
Flamenco can split a job into chunks and give each machine its own range.
Frames outside the scene's frame range are refused (exit status 2).
Exit status: 0 when every requested frame exists at the end, 1 otherwise, 2 for a bad request.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def parse_frames(spec: str) -> list[int]:
    """'A-B', 'A-B:STEP' or 'A' -> frame numbers (inclusive)."""
    import re

    m = re.fullmatch(r"\s*(-?\d{1,9})(?:\s*-\s*(-?\d{1,9}))?(?::(\d{1,9}))?\s*", spec)
    if not m:
        raise ValueError(f"--frames {spec!r}: expected A-B, A-B:STEP or A")
    first = int(m.group(1))
    last = int(m.group(2)) if m.group(2) is not None else first
    step = int(m.group(3) or 1)
    if last < first or step < 1:
        raise ValueError(f"--frames {spec}: expected A <= B and STEP >= 1")
    return list(range(first, last + 1, step))


def check_in_range(frames: list[int], start: int, end: int) -> None:
    """Refuse frames outside the scene's range: past its end the animation holds its last pose
    (or the actor is unbound), so those images would look rendered but be wrong."""
    if not frames:
        raise ValueError(f"no frames to render (the scene's range is {start}-{end})")
    outside = [f for f in frames if not start <= f <= end]
    if outside:
        raise ValueError(f"--frames: {len(outside)} frame(s) ({outside[0]}..{outside[-1]}) lie outside the scene's "
                         f"frame range {start}-{end}; choose a chunk inside it")


def parse_args(argv):
    p = argparse.ArgumentParser(prog="render_batch.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("blend", nargs="?", help="the .blend to render (omit when Blender already opened it)")
    p.add_argument("--frames", help="frame chunk A-B[:STEP] (default: the scene's frame range)")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--prefix", default="frame_", help="file name prefix (default frame_)")
    p.add_argument("--engine", default="MARIONETTE", help="render engine to use (default MARIONETTE)")
    p.add_argument("--overwrite", action="store_true", help="re-render frames that already exist")
    return p.parse_args(argv)


def ensure_marionette(bpy) -> str:
    """Make the Marionette engine available: the enabled extension, else the add-on from this repo."""
    if hasattr(bpy.types, "MARIONETTE_OT_bind_actor"):  # registered classes appear in bpy.types
        return "already registered"
    import addon_utils

    for mod in addon_utils.modules():
        if mod.__name__.endswith(".marionette") or mod.__name__ == "marionette":
            addon_utils.enable(mod.__name__, default_set=False)
            return f"enabled {mod.__name__}"
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import addon

    addon.register()
    return "registered from the source tree"


def render_frames(bpy, frames, out_dir: Path, prefix: str, overwrite: bool) -> tuple[int, int, list]:
    scene = bpy.context.scene
    out_dir.mkdir(parents=True, exist_ok=True)
    done = skipped = 0
    failed = []
    for i, frame in enumerate(frames):
        path = out_dir / f"{prefix}{frame:06d}.png"
        if path.exists() and not overwrite:
            skipped += 1
            continue
        t0 = time.perf_counter()
        scene.frame_set(frame)
        tmp = path.with_name(f".{path.stem}.tmp.png")
        try:
            bpy.ops.render.render(write_still=False)
            bpy.data.images["Render Result"].save_render(filepath=str(tmp), scene=scene)
            os.replace(tmp, path)
        except (RuntimeError, KeyError) as exc:
            failed.append((frame, str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__))
            tmp.unlink(missing_ok=True)
            print(f"[{i + 1}/{len(frames)}] frame {frame}: FAILED: {failed[-1][1]}", flush=True)
            continue
        done += 1
        print(f"[{i + 1}/{len(frames)}] frame {frame} -> {path.name} ({time.perf_counter() - t0:.2f} s)", flush=True)
    return done, skipped, failed


def main(argv=None) -> int:
    if argv is None:
        argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else sys.argv[1:]
    args = parse_args(argv)
    import bpy

    if args.blend:
        blend = Path(args.blend)
        if not blend.is_file():
            print(f"render_batch: {blend}: file not found", file=sys.stderr)
            return 2
        bpy.ops.wm.open_mainfile(filepath=str(blend.resolve()))
    how = ensure_marionette(bpy)
    scene = bpy.context.scene
    if args.engine:
        scene.render.engine = args.engine
    scene.render.image_settings.file_format = "PNG"
    try:
        frames = parse_frames(args.frames) if args.frames else list(range(scene.frame_start, scene.frame_end + 1))
        check_in_range(frames, scene.frame_start, scene.frame_end)
    except ValueError as exc:
        print(f"render_batch: {exc}", file=sys.stderr)
        return 2
    print(f"render_batch: {len(frames)} frame(s) {frames[0]}..{frames[-1]} with {scene.render.engine} "
          f"({how}) -> {args.output}", flush=True)
    t0 = time.perf_counter()
    done, skipped, failed = render_frames(bpy, frames, Path(args.output), args.prefix, args.overwrite)
    print(f"render_batch: rendered {done}, skipped {skipped} already complete, failed {len(failed)} "
          f"in {time.perf_counter() - t0:.1f} s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
