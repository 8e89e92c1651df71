"""Differentiable Gaussian-bone renderer: skeleton + camera -> latent image, alpha, depth.

The contract is ``/work/notes/renderer_spec.md`` (summarised in ``docs/sections/40-renderer.md``).

    from engine.neural.render import BonePrimitives, render_latent
    prims = BonePrimitives(BODY_25B)                    # learnable widths + densities
    out = render_latent(joints, BODY_25B, cameras, features, primitives=prims,
                        height=256, width=256)           # dict(latent, alpha, depth)
"""

from __future__ import annotations

import numpy as np
import torch

from engine import MarionetteError
from engine.geometry.camera import Camera
from engine.neural.render.primitives import DEFAULT_DENSITY, BonePrimitives, bone_gaussians
from engine.neural.render.raycast import (BACKENDS, ENV_BACKEND, MODES, kernel_available, raycast, raycast_reference,
                                   resolve_backend)
from engine.neural.render.rays import camera_ray_directions, cameras_to_tensors, fit_camera, pixel_directions

__all__ = [
    "BonePrimitives", "bone_gaussians", "render_latent", "raycast", "raycast_reference", "check_joints_finite",
    "cameras_to_tensors", "pixel_directions", "camera_ray_directions", "fit_camera", "kernel_available",
    "resolve_backend", "MODES", "BACKENDS", "ENV_BACKEND", "DEFAULT_DENSITY",
]


def check_joints_finite(joints: torch.Tensor, joint_set, frame_offset: int = 0) -> None:
    """Raise a MarionetteError naming the first frame/joint whose position is NaN or infinite."""
    bad = ~torch.isfinite(joints).all(-1)
    if bool(bad.any()):
        frames, joints_idx = torch.nonzero(bad, as_tuple=True)
        f, j = int(frames[0]), int(joints_idx[0])
        name = joint_set.names[j] if j < len(joint_set.names) else str(j)
        raise MarionetteError(
            f"render: joint {name!r} (index {j}) of frame {f + frame_offset} is NaN or infinite "
            f"({int(bad.sum())} bad joint positions in {int(bad.any(-1).sum())} frame(s)); "
            "a skeleton with missing joints cannot be rendered: fill the gaps or drop those frames first")


def _per_bone(value, n: int, batch: int, name: str, device, dtype, default: float | np.ndarray) -> torch.Tensor:
    """A per-bone quantity as [B, N]: None -> default, scalar, [N] or [B, N]."""
    if value is None:
        value = torch.as_tensor(np.broadcast_to(np.asarray(default, dtype=np.float64), (n,)).copy())
    value = torch.as_tensor(value).to(device=device, dtype=dtype)
    if value.dim() == 0:
        value = value.expand(n)
    if value.dim() == 1:
        value = value[None]
    if value.dim() != 2 or value.shape[1] != n or value.shape[0] not in (1, batch):
        raise MarionetteError(f"render: {name} must have shape [{n}] or [{batch}, {n}], got {list(value.shape)}")
    return value.expand(batch, n)


def render_latent(joints: torch.Tensor, joint_set, cameras, features: torch.Tensor, widths=None, densities=None,
                  background=None, height: int | None = None, width: int | None = None,
                  mode: str = "transmittance", backend: str | None = None,
                  primitives: BonePrimitives | None = None, chunk_rays: int | None = None) -> dict:
    """Render one latent image per frame.

    joints      [B, J, 3] world positions in metres (NaN anywhere is an error)
    joint_set   the JointSet the joints follow (its ``bones`` become the primitives)
    cameras     a Camera, a list of B (or 1) Cameras, or (K [B,3,3], R [B,3,3], t [B,3]) tensors
    features    [B or 1, N, C] per-bone latent vectors (N = len(joint_set.bones))
    widths      [N] or [B, N] metres; densities [N] or [B, N] per metre.  Default: from
                ``primitives`` (a BonePrimitives) if given, else the joint set's default
                widths and ``DEFAULT_DENSITY``.
    background  [C] or [B, C] latent background (default zeros)
    height, width  render size; Cameras are rescaled to it (same aspect), default the camera's size
    mode        "transmittance" (front-to-back compositing) or "rochette" (the seed paper's weighting)
    backend     "auto" | "reference" | "kernel"; None reads $MARIONETTE_RENDER_BACKEND
    returns dict(latent [B,C,H,W], alpha [B,1,H,W], depth [B,1,H,W])

    Cameras with lens distortion are rendered with undistorted per-pixel rays (reference backend).
    """
    if not isinstance(joints, torch.Tensor):
        joints = torch.as_tensor(np.asarray(joints))
    if joints.dim() == 2:
        joints = joints[None]
    if joints.dim() != 3 or joints.shape[-1] != 3 or joints.shape[1] != joint_set.num_joints:
        raise MarionetteError(f"render: joints must be [B, {joint_set.num_joints}, 3] for joint set "
                              f"{joint_set.name}, got {list(joints.shape)}")
    if not joints.dtype.is_floating_point:
        joints = joints.float()
    check_joints_finite(joints, joint_set)
    B, device, dtype = joints.shape[0], joints.device, joints.dtype
    n = len(joint_set.bones)
    if primitives is not None:
        if primitives.num_bones != n:
            raise MarionetteError(f"render: primitives hold {primitives.num_bones} bones but joint set "
                                  f"{joint_set.name} has {n}")
        if widths is None:
            widths = primitives.widths()
        if densities is None:
            densities = primitives.densities()
    widths = _per_bone(widths, n, B, "widths", device, dtype, joint_set.default_widths)
    densities = _per_bone(densities, n, B, "densities", device, dtype, DEFAULT_DENSITY)
    if not isinstance(features, torch.Tensor):
        features = torch.as_tensor(np.asarray(features))
    features = features.to(device=device, dtype=dtype)
    if features.dim() == 2:
        features = features[None]
    if features.dim() != 3 or features.shape[1] != n or features.shape[0] not in (1, B):
        raise MarionetteError(f"render: features must be [B or 1, {n}, C] for joint set {joint_set.name}, "
                              f"got {list(features.shape)}")
    C = features.shape[2]
    if background is None:
        background = torch.zeros(C, device=device, dtype=dtype)
    background = torch.as_tensor(background).to(device=device, dtype=dtype)
    if background.dim() == 1:
        background = background[None]
    if background.dim() != 2 or background.shape[1] != C or background.shape[0] not in (1, B):
        raise MarionetteError(f"render: background must be [{C}] or [B, {C}], got {list(background.shape)}")
    background = background.expand(B, C)

    # cameras -> K, R, t (+ explicit undistorted rays for cameras with lens distortion)
    ray_dirs = None
    if isinstance(cameras, Camera):
        cameras = [cameras]
    if isinstance(cameras, (list, tuple)) and cameras and all(isinstance(c, Camera) for c in cameras):
        cams = [fit_camera(c, height, width) for c in cameras]
        sizes = {(c.height, c.width) for c in cams}
        if len(sizes) != 1:
            raise MarionetteError(f"render: cameras have different image sizes {sorted(sizes)}; "
                                  "give height and width to render them together")
        height, width = sizes.pop()
        if len(cams) not in (1, B):
            raise MarionetteError(f"render: got {len(cams)} cameras for {B} frames (give one per frame, or one)")
        if any(c.has_distortion for c in cams):
            ray_dirs = torch.stack([camera_ray_directions(c, device, dtype) for c in cams])
        K, R, t = cameras_to_tensors(cams, batch=B, device=device, dtype=dtype)
    else:
        if height is None or width is None:
            raise MarionetteError("render: height and width are required when cameras are given as tensors")
        K, R, t = cameras_to_tensors(cameras, batch=B, device=device, dtype=dtype)

    means, precisions = bone_gaussians(joints, joint_set.bones, widths)
    kwargs = {} if chunk_rays is None else {"chunk_rays": chunk_rays}
    latent, alpha, depth = raycast(means, precisions, densities, features, background, K, R, t, height, width,
                                   mode=mode, backend=backend, ray_dirs=ray_dirs, **kwargs)
    return {"latent": latent, "alpha": alpha, "depth": depth}
