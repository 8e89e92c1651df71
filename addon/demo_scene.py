"""The Blender half of ``marionette demo``: skeleton -> armature -> bound actor -> orbiting neural render.

Runs on the ``bpy`` module in a subprocess started by ``engine/cli/commands/demo.py`` (the
engine never imports bpy)::

    python -m addon.demo_scene --skeleton out/skeleton.npz --actor ACTOR_DIR -o out

It builds a new scene with the add-on's own operators (import_skeleton, bind_actor,
setup_render), adds a camera orbiting the actor, renders every frame through the
Marionette engine into OUT/frames/, assembles OUT/demo.gif and saves OUT/demo.blend
(re-render it with scripts/render_batch.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def _register_addon(bpy) -> None:
    if hasattr(bpy.types, "MARIONETTE_OT_import_skeleton"):  # registered classes appear in bpy.types
        return
    import addon

    addon.register()


def actor_centre(bpy, obj, frames) -> tuple:
    """Mean pelvis-ish position of the armature over the clip (where the camera looks)."""
    from .pose_read import evaluated_joints

    scene = bpy.context.scene
    pts = []
    for f in frames[:: max(1, len(frames) // 8)]:
        scene.frame_set(f)
        j = evaluated_joints(obj)
        pts.append(j.mean(axis=0))
    import numpy as np

    c = np.nanmean(np.array(pts), axis=0)
    return float(c[0]), float(c[1]), float(c[2])


def build_scene(bpy, skeleton: str, actor: str, resolution: int = 256, fps: float = 30.0, seconds: float = 2.0,
                radius: float = 3.6, height: float = 1.3, transparent: bool = False):
    """A fresh scene with the skeleton imported, the actor bound and an orbiting camera; returns frames."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    _register_addon(bpy)
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = int(round(fps)), 1.0
    res = bpy.ops.marionette.import_skeleton(filepath=str(skeleton), target_fps=fps, start_frame=1,
                                             object_name="Performer")
    if res != {"FINISHED"}:
        raise RuntimeError(f"importing {skeleton} failed")
    arm = bpy.context.active_object
    res = bpy.ops.marionette.bind_actor(filepath=str(actor))
    if res != {"FINISHED"}:
        raise RuntimeError(f"binding {actor} failed")
    bpy.ops.marionette.setup_render()
    last = min(scene.frame_end, scene.frame_start + int(round(seconds * fps)) - 1)
    scene.frame_end = last
    frames = list(range(scene.frame_start, last + 1))
    cx, cy, cz = actor_centre(bpy, arm, frames)

    target = bpy.data.objects.new("OrbitTarget", None)
    scene.collection.objects.link(target)
    target.location = (cx, cy, cz)
    cam_data = bpy.data.cameras.new("OrbitCamera")
    cam_data.lens = 50.0
    cam = bpy.data.objects.new("OrbitCamera", cam_data)
    scene.collection.objects.link(cam)
    track = cam.constraints.new("TRACK_TO")
    track.target = target
    track.track_axis = "TRACK_NEGATIVE_Z"
    track.up_axis = "UP_Y"
    from engine.scene.camera_ring import orbit_path

    # a quarter orbit over the clip
    for f, eye in zip(frames, orbit_path((cx, cy), radius, height + 0.3 * (cz - 1.0), len(frames))):
        cam.location = tuple(eye)
        cam.keyframe_insert("location", frame=f)
    scene.camera = cam
    scene.render.resolution_x = scene.render.resolution_y = int(resolution)
    scene.render.resolution_percentage = 100
    scene.render.film_transparent = transparent
    if scene.world is None:
        scene.world = bpy.data.worlds.new("World")
    scene.world.color = (0.05, 0.05, 0.06)
    if scene.world.node_tree is not None:
        for node in scene.world.node_tree.nodes:
            if node.type == "BACKGROUND":
                node.inputs["Color"].default_value = (0.05, 0.05, 0.06, 1.0)
    return frames


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m addon.demo_scene", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--skeleton", required=True)
    p.add_argument("--actor", required=True)
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--fps", type=float, default=15.0)
    args = p.parse_args(argv)

    import bpy
    import numpy as np
    from PIL import Image

    out = Path(args.output)
    frames_dir = out / "frames"
    frames_dir.mkdir(parents=True, exist_ok=True)
    frames = build_scene(bpy, args.skeleton, args.actor, args.resolution, args.fps, args.seconds)
    bpy.ops.wm.save_as_mainfile(filepath=str((out / "demo.blend").resolve()))
    scene = bpy.context.scene
    images = []
    t0 = time.perf_counter()
    for i, f in enumerate(frames):
        scene.frame_set(f)
        path = frames_dir / f"frame_{f:04d}.png"
        tmp = frames_dir / f".frame_{f:04d}.tmp.png"
        bpy.ops.render.render(write_still=False)
        bpy.data.images["Render Result"].save_render(filepath=str(tmp), scene=scene)
        os.replace(tmp, path)
        images.append(Image.open(path).convert("RGB"))
        print(f"demo: rendered frame {i + 1}/{len(frames)} ({time.perf_counter() - t0:.1f} s)", flush=True)
    gif = out / "demo.gif"
    images[0].save(gif, save_all=True, append_images=images[1:], duration=int(1000 / args.fps), loop=0)
    sheet = np.concatenate([np.asarray(im) for im in images[:: max(1, len(images) // 4)][:4]], axis=1)
    Image.fromarray(sheet).save(out / "demo_contact_sheet.png")
    print(f"demo: wrote {len(images)} frames to {frames_dir}, {gif} and {out / 'demo.blend'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
