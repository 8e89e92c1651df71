"""Resampling of animation channels (Blender F-curves as plain arrays) to another frame rate, by time.

Pure numpy, testable without Blender; ``addon.ops_resample`` reads the F-curves, calls
``plan_resample`` and writes the result back.
"""

from __future__ import annotations

import re
from collections import defaultdict

import numpy as np

from engine import MarionetteError
from engine.motion.resample import resample_positions, resample_rotations

_QUAT = re.compile(r"^(.*)rotation_quaternion$")


def plan_resample(channels, fps_in: float, fps_out: float):
    """channels: {(data_path, index): (frames, values)} -> (new frames, {(path, index): new values}).

    Pure numpy (testable without Blender): groups quaternion channels by owner and uses
    ``resample_rotations``; everything else ``resample_positions``.
    """
    if not channels:
        raise MarionetteError("nothing to resample: the action has no F-curves with keys")
    starts = [f[0] for f, _ in channels.values() if len(f)]
    ends = [f[-1] for f, _ in channels.values() if len(f)]
    if not starts:
        raise MarionetteError("nothing to resample: the action's F-curves have no keys")
    f0, f1 = min(starts), max(ends)
    if f1 <= f0:
        raise MarionetteError("the action spans a single frame; nothing to resample")
    n_out = int(np.floor((f1 - f0) / fps_in * fps_out + 1e-6)) + 1
    t_out = np.arange(n_out) / fps_out
    out = {}
    groups = defaultdict(dict)
    for (path, idx), fv in channels.items():
        m = _QUAT.match(path)
        if m:
            groups[path][idx] = fv
        else:
            frames, values = fv
            if len(frames) == 1:
                out[(path, idx)] = np.full(n_out, values[0])
                continue
            t = (np.asarray(frames) - f0) / fps_in
            out[(path, idx)] = resample_positions(np.asarray(values)[:, None], t, t_out, extrapolate="hold")[:, 0]
    for path, comps in groups.items():
        if set(comps) != {0, 1, 2, 3}:
            # incomplete quaternion: treat the channels independently
            for idx, (frames, values) in comps.items():
                t = (np.asarray(frames) - f0) / fps_in
                out[(path, idx)] = resample_positions(np.asarray(values)[:, None], t, t_out, extrapolate="hold")[:, 0]
            continue
        frames = np.unique(np.concatenate([np.asarray(comps[k][0]) for k in range(4)]))
        q = np.stack([np.interp(frames, comps[k][0], comps[k][1]) for k in range(4)], -1)  # keys usually shared
        if len(frames) == 1:
            r = np.repeat(q, n_out, axis=0)
        else:
            norms = np.linalg.norm(q, axis=-1, keepdims=True)
            r = resample_rotations(q / np.maximum(norms, 1e-12), (frames - f0) / fps_in, t_out, extrapolate="hold")
            # Blender does not require unit quaternions; keep the keyed magnitude (usually 1)
            r = r * np.interp(t_out, (frames - f0) / fps_in, norms[:, 0])[:, None]
        for k in range(4):
            out[(path, k)] = r[:, k]
    new_frames = f0 + np.arange(n_out)
    return new_frames, out, (f0, f1)
