"""Training-time view augmentation: new views made from the captured ones, cameras changed to match.

* ``crop_views``: a window of each view around a random point of the person (training on views
  loaded at a higher resolution than the window spends the pixels of a step on the person, at a
  finer scale);
* ``augment_views``: a random zoom and shift of each image (the decoder cannot memorise where things
  sit on screen);
* ``roll_views``: a random turn of each camera about its optical axis, the image turned to match
  (limbs then cross the screen at angles the training cameras never showed them at);
* ``mirror_views``: a left-right mirror of each image together with the person (the skeleton is
  reflected and its left and right joints swapped). A person is nearly symmetric, so a camera that
  saw the person's left side also teaches what the right side looks like from the mirrored place:
  a sparse rig gains a virtual camera for each real one.
"""

from __future__ import annotations

import math

import torch

from engine import MarionetteError
from engine.body.joint_sets import JointSet
from engine.neural.actor.model import scale_intrinsics


def _resample(x: torch.Tensor, source_px: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of images ``x`` [B, C, H, W] at source pixel positions ``source_px``
    [B, H', W', 2] (x, y; integer pixel centres); outside the image reads 0 (background)."""
    H, W = x.shape[-2:]
    size = torch.tensor([W, H], dtype=x.dtype, device=x.device)
    grid = (2 * source_px.to(device=x.device, dtype=x.dtype) + 1) / size - 1
    return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _resample_views(b: dict, source_px: torch.Tensor) -> dict:
    """The batch's images, masks and validity [B, 1, H, W] resampled at ``source_px``.

    ``valid`` is 1 where an output pixel came wholly from inside the captured image and 0 elsewhere
    (a border pixel blends the person with the zeros outside, so it is not trusted either). Outside the image the mask reads 0 although the person
    may well continue there, so the silhouette losses must not count those pixels (``ActorLoss``,
    ``silhouette_loss``); colour losses compare masked colours, which read 0 on both sides there.
    """
    valid = b.get("valid")
    if valid is None:
        valid = torch.ones_like(b["mask"])
    return {**b, "rgb": _resample(b["rgb"], source_px), "mask": _resample(b["mask"], source_px),
            "valid": (_resample(valid, source_px) > 0.999).to(valid.dtype)}


def crop_views(b: dict, gen: torch.Generator, size: int) -> dict:
    """A ``size`` x ``size`` window of every view, centred on a random point of the person's box
    (``b["box"]``, [B, 4] x0, y0, x1, y1) and moved inside the image, the camera shifted to match
    (cx' = cx - x0, cy' = cy - y0). Views no larger than ``size`` are kept whole."""
    rgb, K = b["rgb"], b["K"]
    B, _, H, W = rgb.shape
    if H <= size and W <= size:
        return b
    ch, cw = min(size, H), min(size, W)
    box = b["box"].cpu()
    u = torch.rand(B, 2, generator=gen)
    cx = box[:, 0] + u[:, 0] * (box[:, 2] - box[:, 0])
    cy = box[:, 1] + u[:, 1] * (box[:, 3] - box[:, 1])
    x0 = (cx - cw / 2).round().clamp(0, W - cw).long()
    y0 = (cy - ch / 2).round().clamp(0, H - ch).long()
    out = dict(b)
    for key in ("rgb", "mask", "valid"):
        if key in b:
            out[key] = torch.stack([b[key][i, :, y0[i]:y0[i] + ch, x0[i]:x0[i] + cw] for i in range(B)])
    on_k = dict(device=K.device, dtype=K.dtype)
    out["K"] = scale_intrinsics(K, 1.0, ox=-x0.to(**on_k), oy=-y0.to(**on_k))
    out["box"] = box.to(b["box"].device) - torch.stack([x0, y0, x0, y0], dim=1).to(b["box"])
    return out


def augment_views(b: dict, gen: torch.Generator, zoom=(0.85, 1.15), shift: float = 0.08) -> dict:
    """Randomly zoom and shift every view of a batch, changing its camera to match.

    Output pixel u' (integer centres) shows source pixel u = (u' + 0.5 - o) / s - 0.5, i.e. the
    camera becomes fx' = s fx, cx' = s (cx + 0.5) - 0.5 + o (the same for y). Pixels from outside
    the source image read mask 0 and colour 0, with ``valid`` 0 (``_resample_views``).
    """
    rgb, K = b["rgb"], b["K"]
    B, _, H, W = rgb.shape
    s = torch.empty(B).uniform_(zoom[0], zoom[1], generator=gen)
    # shift so the zoom is about the image centre, plus a random offset
    ox = (1 - s) * W / 2 + torch.empty(B).uniform_(-shift, shift, generator=gen) * W
    oy = (1 - s) * H / 2 + torch.empty(B).uniform_(-shift, shift, generator=gen) * H
    up = torch.arange(W, dtype=rgb.dtype)
    vp = torch.arange(H, dtype=rgb.dtype)
    u = (up[None] + 0.5 - ox[:, None]) / s[:, None] - 0.5          # [B, W] source x
    v = (vp[None] + 0.5 - oy[:, None]) / s[:, None] - 0.5          # [B, H] source y
    grid = torch.stack([u[:, None, :].expand(B, H, W), v[:, :, None].expand(B, H, W)], dim=-1)
    on_k = dict(device=K.device, dtype=K.dtype)  # the draws come from a CPU generator
    K2 = scale_intrinsics(K, s.to(**on_k), ox=ox.to(**on_k), oy=oy.to(**on_k))
    return {**_resample_views(b, grid), "K": K2}


def roll_views(b: dict, gen: torch.Generator, max_degrees: float) -> dict:
    """Turn every view's camera about its optical axis by a random angle in +-``max_degrees``, the
    image resampled to match.

    With R' = Rz R and t' = Rz t (K unchanged) a pixel u (homogeneous, integer centres) moves to
    K Rz K^-1 u, an affine map because Rz keeps the depth axis, so the image is warped exactly.
    Pixels from outside the source image read mask 0 and colour 0, with ``valid`` 0.
    """
    rgb, K, R, t = b["rgb"], b["K"], b["R"], b["t"]
    B, _, H, W = rgb.shape
    angle = (torch.rand(B, generator=gen) * 2 - 1) * math.radians(max_degrees)
    c, s = torch.cos(angle), torch.sin(angle)
    Rz = torch.zeros(B, 3, 3)
    Rz[:, 0, 0], Rz[:, 0, 1], Rz[:, 1, 0], Rz[:, 1, 1], Rz[:, 2, 2] = c, -s, s, c, 1.0
    Rz = Rz.to(device=K.device, dtype=K.dtype)
    Kd = K.double()
    # output pixel -> source pixel: K Rz^T K^-1
    to_source = (Kd @ Rz.double().transpose(1, 2) @ torch.linalg.inv(Kd)).to(rgb.dtype)
    vv, uu = torch.meshgrid(torch.arange(H, dtype=rgb.dtype, device=rgb.device),
                            torch.arange(W, dtype=rgb.dtype, device=rgb.device), indexing="ij")
    pix = torch.stack([uu, vv, torch.ones_like(uu)], dim=-1).reshape(1, H * W, 3)
    src = pix @ to_source[:, :2].transpose(1, 2)                     # [B, HW, 2]; affine: no divide
    R2 = Rz.to(R.dtype) @ R
    t2 = (Rz.to(t.dtype) @ t[..., None])[..., 0]
    grid = src.reshape(B, H, W, 2)
    return {**_resample_views(b, grid), "R": R2, "t": t2}


def mirror_permutation(joint_set: JointSet) -> list[int]:
    """Index of each joint's mirror image (left <-> right by canonical name; centre joints map to
    themselves). A joint set with a side joint whose opposite is missing cannot be mirrored."""
    index = {name: i for i, name in enumerate(joint_set.canonical)}
    perm = []
    for name in joint_set.canonical:
        other = name
        for a, b in (("left", "right"), ("right", "left")):
            if name.startswith(a + "_"):
                other = b + name[len(a):]
        if other not in index:
            raise MarionetteError(f"joint set {joint_set.name}: joint {name!r} has no mirror {other!r}; "
                                  "mirror augmentation needs both sides")
        perm.append(index[other])
    return perm


def mirror_images(b: dict, flip: torch.Tensor) -> dict:
    """Flip left-right the images and masks of a batch where ``flip`` [B] (bool) is set, with the
    camera's principal point mirrored (cx' = W - 1 - cx, skew negated; integer pixel centres).
    ``b["mirror"]`` records which views were flipped; their skeletons must go through
    ``mirror_joints`` (after any pose refinement) before rendering."""
    W = b["rgb"].shape[-1]
    K = b["K"].clone()
    K[flip, 0, 2] = (W - 1) - K[flip, 0, 2]
    K[flip, 0, 1] = -K[flip, 0, 1]
    out = {**b, "K": K, "mirror": flip}
    for key in ("rgb", "mask", "valid"):
        if key not in b:
            continue
        out[key] = torch.where(flip[:, None, None, None], b[key].flip(-1), b[key])
    return out


def mirror_reflections(R: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """[B, 3, 3]: the world-direction part of ``mirror_joints``' reflection where ``flip`` [B] is set (the
    reflection across the camera's y-z plane, R^T diag(-1, 1, 1) R; its own inverse), identity elsewhere."""
    sign = torch.ones(3, dtype=R.dtype, device=R.device)
    sign[0] = -1
    reflect = R.transpose(1, 2) @ (sign[:, None] * R)
    eye = torch.eye(3, dtype=R.dtype, device=R.device).expand_as(reflect)
    return torch.where(flip.to(R.device)[:, None, None], reflect, eye)


def mirror_joints(joints: torch.Tensor, R: torch.Tensor, t: torch.Tensor, flip: torch.Tensor,
                  perm: list[int]) -> torch.Tensor:
    """Reflect the skeletons [B, J, 3] (world) where ``flip`` [B] is set across their camera's y-z
    plane (x_cam -> -x_cam) and swap left and right joints (``perm``).

    The camera (R, t) is unchanged, so with its principal point mirrored (``mirror_images``) it
    projects the reflected skeleton exactly onto the flipped image. Reflection turns a left arm into
    a right one; swapping the names makes a proper body again. Differentiable in ``joints``.
    """
    R, t = R.to(joints.dtype), t.to(joints.dtype)
    cam = joints @ R.transpose(1, 2) + t[:, None]
    sign = torch.ones(3, dtype=joints.dtype, device=joints.device)
    sign[0] = -1
    reflected = ((cam * sign - t[:, None]) @ R)[:, perm]
    return torch.where(flip.to(joints.device)[:, None, None], reflected, joints)
