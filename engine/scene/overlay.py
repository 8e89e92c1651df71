"""Wireframe ellipsoids of an actor's Gaussians, for the Blender primitive overlay (no Blender here).

``addon/primitive_overlay.py`` draws, in the viewport's Solid shading, every bound actor's
Gaussian primitives as ellipsoids at one or two standard deviations, so an artist sees the
widths and how the primitives sit on the bones without rendering. The geometry is made here:

    segments, bones = actor_wireframe(actor, joints, "BODY_25", sigma=2.0)   # [S, 2, 3], [S]

Each Gaussian (mean ``m``, precision ``P``) is drawn as its three principal ellipses: the
points ``x`` with ``(x - m)^T P (x - m) = sigma^2`` in the planes spanned by two of its axes.
``actor.primitives(joints)`` gives the means [B, N, 3] and precisions [B, N, 3, 3] for one or
several Gaussians per bone (primitive ``n * k + i`` is Gaussian ``i`` of bone ``n``).
"""

from __future__ import annotations

import numpy as np

from engine import MarionetteError

DEFAULT_SEGMENTS = 24   # line segments per ellipse


def ellipsoid_wireframe(means, precisions, sigma: float = 1.0, segments: int = DEFAULT_SEGMENTS) -> np.ndarray:
    """Line segments of the three principal ellipses of each Gaussian.

    means [N, 3], precisions [N, 3, 3] (symmetric positive definite) -> segments [N, 3 * segments, 2, 3]:
    for Gaussian n, ellipse e (axes (0, 1), (1, 2), (0, 2) of its eigenvectors, largest axis first)
    and step s, the segment from point s to point s + 1 of that ellipse. Every point lies at
    Mahalanobis distance ``sigma`` from the mean.

    >>> seg = ellipsoid_wireframe(np.zeros((1, 3)), np.eye(3)[None] / 0.25, sigma=2.0, segments=8)
    >>> seg.shape, bool(np.allclose(np.linalg.norm(seg, axis=-1), 1.0))
    ((1, 24, 2, 3), True)
    """
    means = np.asarray(means, dtype=np.float64)
    precisions = np.asarray(precisions, dtype=np.float64)
    if means.ndim != 2 or means.shape[1] != 3:
        raise MarionetteError(f"ellipsoid_wireframe: means must be [N, 3], got {list(means.shape)}")
    if precisions.shape != (means.shape[0], 3, 3):
        raise MarionetteError(f"ellipsoid_wireframe: precisions must be [{means.shape[0]}, 3, 3], "
                              f"got {list(precisions.shape)}")
    if not (np.isfinite(sigma) and sigma > 0):
        raise MarionetteError(f"ellipsoid_wireframe: sigma must be positive, got {sigma}")
    segments = int(segments)
    if segments < 3:
        raise MarionetteError(f"ellipsoid_wireframe: at least 3 segments per ellipse, got {segments}")
    n = means.shape[0]
    if n == 0:
        return np.zeros((0, 3 * segments, 2, 3))
    if not (np.isfinite(means).all() and np.isfinite(precisions).all()):
        raise MarionetteError("ellipsoid_wireframe: means and precisions must be finite")
    sym = 0.5 * (precisions + np.swapaxes(precisions, -1, -2))
    kappa, vecs = np.linalg.eigh(sym)                    # ascending precision = descending axis length
    if (kappa <= 0).any():
        raise MarionetteError("ellipsoid_wireframe: precisions must be positive definite")
    axes = vecs * (sigma / np.sqrt(kappa))[:, None, :]   # [N, 3, 3]: column j = semi-axis j
    theta = np.linspace(0.0, 2 * np.pi, segments + 1)
    c, s = np.cos(theta), np.sin(theta)                  # [S + 1]
    rings = []
    for a, b in ((0, 1), (1, 2), (0, 2)):
        pts = means[:, None, :] + c[None, :, None] * axes[:, None, :, a] + s[None, :, None] * axes[:, None, :, b]
        rings.append(np.stack([pts[:, :-1], pts[:, 1:]], axis=2))   # [N, S, 2, 3]
    return np.concatenate(rings, axis=1)


def primitive_bones(num_primitives: int, num_bones: int) -> np.ndarray:
    """[N] bone index of each primitive (``per_bone`` Gaussians per bone, bone-major)."""
    if num_bones <= 0 or num_primitives % num_bones:
        raise MarionetteError(f"{num_primitives} primitives do not split evenly over {num_bones} bones")
    return np.repeat(np.arange(num_bones), num_primitives // num_bones)


def actor_gaussians(actor, joints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Means [N, 3] and precisions [N, 3, 3] of ``actor``'s Gaussians for joints [J, 3] in the
    actor's own joint set (``actor.primitives(joints)``, no gradients, on the actor's device)."""
    import torch

    param = next(actor.parameters())
    with torch.no_grad():
        J = torch.as_tensor(np.asarray(joints, dtype=np.float32)[None], dtype=torch.float32, device=param.device)
        g = actor.primitives(J)
        means = g["means"][0].double().cpu().numpy()
        precisions = g["precisions"][0].double().cpu().numpy()
    return means, precisions


def actor_wireframe(actor, joints: np.ndarray, joint_set: str, sigma: float = 1.0,
                    segments: int = DEFAULT_SEGMENTS, where: str = "armature") -> tuple[np.ndarray, np.ndarray]:
    """Line segments [S, 2, 3] (world metres) of ``actor``'s Gaussians posed by ``joints`` [J, 3] of
    joint set ``joint_set`` (mapped onto the actor's joint set as rendering does), and the bone
    index [S] of each segment. A MarionetteError (naming ``where``) when the joints cannot drive it."""
    from engine.scene.shot import joints_for_actor

    J = joints_for_actor(joints, joint_set, actor.joint_set.name, where)
    means, precisions = actor_gaussians(actor, J)
    wire = ellipsoid_wireframe(means, precisions, sigma=sigma, segments=segments)   # [N, E, 2, 3]
    bones = primitive_bones(means.shape[0], len(actor.bones))
    return wire.reshape(-1, 2, 3), np.repeat(bones, wire.shape[1])


def bone_sides(joint_set) -> np.ndarray:
    """[B] -1 for a bone on the subject's left, +1 on the right, 0 in the middle (for colours)."""
    out = []
    for a, b in joint_set.bones:
        names = (joint_set.canonical[a], joint_set.canonical[b])
        left = sum(n.startswith(("left_", "smpl_left_")) for n in names)
        right = sum(n.startswith(("right_", "smpl_right_")) for n in names)
        out.append(-1 if left > right else (1 if right > left else 0))
    return np.asarray(out, dtype=np.int64)
