"""Made-up skeleton motions with exact bone lengths, for tests and benchmarks."""

from __future__ import annotations

import numpy as np

from engine.body.joint_sets import JointSet
from engine.geometry.rotations import axis_angle_to_matrix


def synthetic_skeleton_motion(joint_set: JointSet, num_frames: int, fps: float = 30.0, seed: int = 0,
                              amplitude: float = 0.6) -> np.ndarray:
    """A smooth made-up motion [T, J, 3] (metres, Z-up) with exactly constant bone lengths.

    For tests and benchmarks: a standing layout (limbs down/sideways, head up), every
    joint swinging on sines of random frequency and phase, the root walking forward.
    """
    rng = np.random.default_rng(seed)
    J = joint_set.num_joints
    parents = np.asarray(joint_set.parents)
    rest = np.zeros((J, 3))
    rest[joint_set.root] = (0.0, 0.0, 1.0)
    for j in joint_set.topological_order():
        p = parents[j]
        if p < 0:
            continue
        name = joint_set.canonical[j]
        side = 1.0 if name.startswith("left") or name.startswith("smpl_left") else (-1.0 if name.startswith("right") or name.startswith("smpl_right") else 0.0)
        up = any(k in name for k in ("neck", "nose", "eye", "ear", "head", "spine", "thorax", "shoulder", "collar"))
        d = np.array([0.35 * side, 0.05 * rng.standard_normal(), 1.0 if up else -1.0])
        if "toe" in name or name.endswith("foot"):
            d = np.array([0.1 * side, -1.0, -0.3])
        d /= np.linalg.norm(d)
        rest[j] = rest[p] + rng.uniform(0.08, 0.4) * d
    t = np.arange(num_frames) / fps
    freq = rng.uniform(0.2, 1.5, size=(J, 3))
    phase = rng.uniform(0, 2 * np.pi, size=(J, 3))
    aa = amplitude * np.sin(2 * np.pi * freq[None] * t[:, None, None] + phase[None])  # [T, J, 3]
    Rl = axis_angle_to_matrix(aa)
    G = np.empty((num_frames, J, 3, 3))
    X = np.empty((num_frames, J, 3))
    root_path = np.stack([0.3 * np.sin(0.5 * t), 0.8 * t, 0.03 * np.sin(4 * t)], -1)
    for j in joint_set.topological_order():
        p = parents[j]
        if p < 0:
            G[:, j] = Rl[:, j]
            X[:, j] = rest[j] + root_path
        else:
            G[:, j] = G[:, p] @ Rl[:, j]
            X[:, j] = X[:, p] + np.einsum("tij,j->ti", G[:, p], rest[j] - rest[p])
    return X
