"""Compiled kernels of the raycast and bone-texture ops (``cuda_ext/`` -> the ``marionette_kernels`` package).

Importing this module never fails: when the extension is not installed (or its shared library
does not load) ``available()`` is False and ``engine.neural.render.raycast`` keeps using the PyTorch
reference.  When it is installed, this module registers, for the torch operators
``marionette::raycast_fwd`` / ``marionette::raycast_bwd`` defined in C++:

* a fake (meta) kernel for each, so they trace under ``torch.compile(fullgraph=True)``;
* autograd for ``raycast_fwd`` (its backward is ``raycast_bwd``), differentiable w.r.t.
  means, precisions, densities, features and background (not the camera).

    from engine.neural.render import kernels
    if kernels.available(means.device):
        latent, alpha, depth = kernels.raycast_kernel(means, precisions, densities, features,
                                                      background, K, R, t, 256, 256)

Shapes are those of ``engine.neural.render.raycast.raycast`` (features must be [B, N, C] or [1, N, C]).

The bone-texture lookup (``marionette::bone_texture_fwd`` / ``_bwd``, differentiable w.r.t. the maps and
the bones' weights) is registered the same way; ``texture_available(device)`` says whether the installed
build has it (a build from before it has only the raycast op):

    if kernels.texture_available(maps.device):
        features = kernels.bone_texture_kernel(maps, weights, depth, K, R, t, frames, mid, length, 1e-4, 0.75)
"""

from __future__ import annotations

import torch

from engine import MarionetteError

MODE_IDS = {"transmittance": 0, "rochette": 1}

try:  # the compiled extension is optional
    import marionette_kernels as _ext
    IMPORT_ERROR: Exception | None = None
except Exception as exc:  # ImportError, or OSError from a library built against another torch
    _ext = None
    IMPORT_ERROR = exc


def _device_types(op: str) -> frozenset:
    """Device types with a kernel for ``op``. Queried once at import: the dispatcher lookup is not
    traceable by torch.compile. An op an older build lacks has none."""
    if _ext is None:
        return frozenset()
    try:
        return frozenset(d for d, key in (("cpu", "CPU"), ("cuda", "CUDA"))
                         if torch._C._dispatch_has_kernel_for_dispatch_key(op, key))
    except Exception:  # the op is not registered
        return frozenset()


def _raycast_schema_is_current() -> bool:
    """Whether the installed raycast op takes primitive groups (builds before them do not: their op has
    another signature, so it is left unused and the reference renders until the extension is rebuilt)."""
    try:
        return any(arg.name == "groups" for arg in torch.ops.marionette.raycast_fwd.default._schema.arguments)
    except Exception:
        return False


_DEVICE_TYPES = _device_types("marionette::raycast_fwd")
_STALE_BUILD = bool(_DEVICE_TYPES) and not _raycast_schema_is_current()
if _STALE_BUILD:
    _DEVICE_TYPES = frozenset()
_TEXTURE_DEVICE_TYPES = _device_types("marionette::bone_texture_fwd")


def available(device=None) -> bool:
    """Whether the compiled kernels can run on ``device`` (default CPU)."""
    if _ext is None:
        return False
    device = torch.device("cpu" if device is None else device)
    return device.type in _DEVICE_TYPES


def texture_available(device=None) -> bool:
    """Whether the compiled bone-texture kernels can run on ``device`` (default CPU)."""
    device = torch.device("cpu" if device is None else device)
    return device.type in _TEXTURE_DEVICE_TYPES


def unavailable_reason() -> str:
    """Why ``available()`` is False on CPU (for messages and test skips)."""
    if _ext is None:
        return f"marionette_kernels is not installed or failed to load ({IMPORT_ERROR!r}); " \
               "build it with: pip install --no-build-isolation ./cuda_ext"
    if _STALE_BUILD:
        return "marionette_kernels was built from older sources (its raycast op has no primitive groups); " \
               "rebuild it with: pip install --no-build-isolation ./cuda_ext"
    return ""


if _DEVICE_TYPES:

    @torch.library.register_fake("marionette::raycast_fwd")
    def _raycast_fwd_fake(means, precisions, densities, features, background, K, R, t, height, width, mode, groups,
                          num_groups):
        B, C = means.shape[0], features.shape[2]
        return (means.new_empty((B, C, height, width)), means.new_empty((B, 1, height, width)),
                means.new_empty((B, 1, height, width)), means.new_empty((B, num_groups, height, width)))

    @torch.library.register_fake("marionette::raycast_bwd")
    def _raycast_bwd_fake(grad_latent, grad_alpha, grad_depth, grad_weights, means, precisions, densities, features,
                          background, K, R, t, height, width, mode, groups, num_groups):
        return (torch.empty_like(means), torch.empty_like(precisions), torch.empty_like(densities),
                torch.empty_like(features), torch.empty_like(background))

    def _setup_context(ctx, inputs, output):
        means, precisions, densities, features, background, K, R, t, height, width, mode, groups, num_groups = inputs
        ctx.save_for_backward(means, precisions, densities, features, background, K, R, t, groups)
        ctx.height, ctx.width, ctx.mode, ctx.num_groups = height, width, mode, num_groups

    def _backward(ctx, grad_latent, grad_alpha, grad_depth, grad_weights):
        means, precisions, densities, features, background, K, R, t, groups = ctx.saved_tensors
        B, C, G, H, W = means.shape[0], features.shape[2], ctx.num_groups, ctx.height, ctx.width
        zeros = lambda c: means.new_zeros((B, c, H, W))  # noqa: E731  outputs the loss did not use
        grads = torch.ops.marionette.raycast_bwd(
            zeros(C) if grad_latent is None else grad_latent, zeros(1) if grad_alpha is None else grad_alpha,
            zeros(1) if grad_depth is None else grad_depth, zeros(G) if grad_weights is None else grad_weights,
            means, precisions, densities, features, background, K, R, t, ctx.height, ctx.width, ctx.mode, groups,
            ctx.num_groups)
        return (*grads, *([None] * 8))

    torch.library.register_autograd("marionette::raycast_fwd", _backward, setup_context=_setup_context)

if _TEXTURE_DEVICE_TYPES:

    @torch.library.register_fake("marionette::bone_texture_fwd")
    def _texture_fwd_fake(maps, weights, depth, K, R, t, frames, mid, length, min_weight, extent):
        B, _, H, W = weights.shape
        return maps.new_empty((B, maps.shape[1], H, W))

    @torch.library.register_fake("marionette::bone_texture_bwd")
    def _texture_bwd_fake(grad, maps, weights, depth, K, R, t, frames, mid, length, min_weight, extent):
        return torch.empty_like(maps), torch.empty_like(weights)

    def _texture_setup_context(ctx, inputs, output):
        *tensors, min_weight, extent = inputs
        ctx.save_for_backward(*tensors)
        ctx.min_weight, ctx.extent = min_weight, extent

    def _texture_backward(ctx, grad):
        grad_maps, grad_weights = torch.ops.marionette.bone_texture_bwd(grad, *ctx.saved_tensors, ctx.min_weight,
                                                                        ctx.extent)
        return grad_maps, grad_weights, *([None] * 9)

    torch.library.register_autograd("marionette::bone_texture_fwd", _texture_backward,
                                    setup_context=_texture_setup_context)


def raycast_kernel(means, precisions, densities, features, background, K, R, t, height: int, width: int,
                   mode: str = "transmittance", groups: torch.Tensor | None = None, num_groups: int = 0,
                   check_groups: bool = True):
    """The raycast op on the compiled kernels -> (latent [B,C,H,W], alpha [B,1,H,W], depth [B,1,H,W]),
    and group weights [B,G,H,W] as a fourth result when ``groups`` is given.

    Same arguments and results as ``engine.neural.render.raycast.raycast_reference`` without ``ray_dirs``
    (pinhole cameras only).  K, R, t are cast to the dtype of ``means``. ``groups`` (int64 [N], values in
    [0, num_groups)) assigns each primitive to a group; the weights are what a one-hot feature of each
    primitive's group would render (zero background), without G extra channels in the per-pixel loops.
    ``check_groups=False`` skips the range check on CUDA (one device sync) for groups the caller checked.
    """
    if _ext is None or _STALE_BUILD:
        raise MarionetteError("renderer kernels: " + unavailable_reason())
    if mode not in MODE_IDS:
        raise MarionetteError(f"renderer kernels: mode must be one of {tuple(MODE_IDS)}, got {mode!r}")
    if not available(means.device):
        raise MarionetteError(f"renderer kernels: marionette_kernels was built without support for {means.device}")
    dtype = means.dtype
    if features.dim() == 3 and features.shape[0] == 1 and means.shape[0] != 1:
        features = features.expand(means.shape[0], -1, -1)
    grouped = groups is not None
    if grouped:
        groups = groups.to(device=means.device, dtype=torch.long)
        if groups.is_cuda and check_groups:  # the CPU op checks itself; a CUDA check there would sync per call
            from engine.neural.render.raycast import check_group_range

            check_group_range(groups, num_groups, "renderer kernels")
    else:
        groups, num_groups = means.new_empty((0,), dtype=torch.long), 0
    out = torch.ops.marionette.raycast_fwd(means, precisions, densities.to(dtype), features.to(dtype),
                                           background.to(dtype), K.to(dtype), R.to(dtype), t.to(dtype),
                                           int(height), int(width), MODE_IDS[mode], groups, int(num_groups))
    return out if grouped else out[:3]


def bone_texture_kernel(maps, weights, depth, K, R, t, frames, mid, length, min_weight: float, extent: float):
    """The bone-texture lookup on the compiled kernels -> features [B, C, H, W].

    maps [N, C, A, S] (per bone: channels x along x around), weights [B, N, H, W] (the bones' compositing
    weights), the rendered depth [B, 1, H, W] and cameras K, R, t (the surface point a pixel sees lies at
    that depth along its ray), the bones' frames [B, N, 3, 3], midpoints [B, N, 3] and lengths [B, N]; pairs with weight <= ``min_weight`` are left out. The same
    lookup as ``engine.neural.render.texture.BoneTexture.forward_reference``; gradients reach ``maps``
    and ``weights``. Everything is cast to the dtype of ``weights``.
    """
    if _ext is None:
        raise MarionetteError("bone-texture kernels: " + unavailable_reason())
    if not texture_available(weights.device):
        raise MarionetteError(f"bone-texture kernels: the installed marionette_kernels has no bone-texture op for "
                              f"{weights.device}; rebuild it: pip install --no-build-isolation ./cuda_ext")
    dtype = weights.dtype
    return torch.ops.marionette.bone_texture_fwd(maps.to(dtype), weights, *(x.to(dtype) for x in (depth, K, R, t)),
                                                 frames.to(dtype), mid.to(dtype), length.to(dtype),
                                                 float(min_weight), float(extent))
