"""The raycast op: bone Gaussians seen from a camera -> latent image, alpha, depth.

This module holds the pure-PyTorch *reference* (``raycast_reference``) of the op
specified in ``/work/notes/renderer_spec.md`` and the dispatch (``raycast``) to the
compiled kernels in ``engine.neural.render.kernels`` when they are installed.

Per pixel ray ``o + s d`` and primitive k (precision P, mean mu, density rho),
with ``m = mu - o``: ``a = d^T P d``, ``b = d^T P m``, ``c = m^T P m``; the density
peaks at ``s* = b/a``; ``h = max(c - b^2/a, 0)``; the optical depth over the
half-line s >= 0 is ``tau = rho sqrt(2 pi/a) exp(-h/2) erfc(-s* sqrt(a/2))/2``.

* ``transmittance``: primitives sorted by ``s*`` per pixel, ``alpha_k = 1 - exp(-tau_k)``,
  front-to-back compositing, the background gets the remaining transmittance.
* ``rochette``: the seed paper's soft weighting ``tau/(1 + s*^4)`` normalised
  against a constant background weight 1e-3.

Memory: rays are processed in chunks, and when gradients are needed each chunk
runs under ``torch.utils.checkpoint`` so its [rays, primitives] intermediates
are recomputed in backward instead of being kept for the whole image.
"""

from __future__ import annotations

import math
import os

import torch
from torch.utils.checkpoint import checkpoint

from engine import MarionetteError
from engine.neural.render.rays import camera_origins, pixel_directions

MODES = ("transmittance", "rochette")
BACKENDS = ("auto", "reference", "kernel")
ENV_BACKEND = "MARIONETTE_RENDER_BACKEND"
DEFAULT_CHUNK_RAYS = 8192
ROCHETTE_BACKGROUND_WEIGHT = 1e-3
DEPTH_EPS = 1e-6

_SQRT_2PI = math.sqrt(2.0 * math.pi)
_SQRT_HALF = math.sqrt(0.5)
# exp/expm1 arguments are clamped at -40: e^-40 ~ 4e-18 is far below anything visible, and
# underflowing arguments and denormal products take a ~10-40x slower path on CPUs
_EXP_FLOOR = 40.0


# ---------------------------------------------------------------------- per-chunk math
def _shade_chunk(dirs, origins, means, precisions, densities, features, background, mode: str):
    """Shade a chunk of rays.

    dirs [B,P,3] unit world directions, origins [B,3], means [B,N,3], precisions [B,N,3,3],
    densities [B,N], features [B|1,N,C], background [B,C]
    -> latent [B,P,C], alpha [B,P], depth [B,P]
    """
    B, P, _ = dirs.shape
    N = means.shape[1]
    m = means - origins[:, None, :]                                  # [B,N,3]
    Pm = torch.einsum("bnij,bnj->bni", precisions, m)                # [B,N,3]
    c = (m * Pm).sum(-1)                                             # [B,N]  ray independent
    b = torch.bmm(dirs, Pm.transpose(1, 2))                          # [B,P,N] d^T P m
    dd = (dirs[..., :, None] * dirs[..., None, :]).reshape(B, P, 9)
    a = torch.bmm(dd, precisions.reshape(B, N, 9).transpose(1, 2))  # [B,P,N] d^T P d
    s = b / a
    h = (c[:, None, :] - b * s).clamp_min(0.0)
    sqrt_a = torch.sqrt(a)
    # tau = rho sqrt(2 pi / a) exp(-h/2) erfc(-s sqrt(a/2)) / 2, with one sqrt per pair
    tau = (densities * (0.5 * _SQRT_2PI))[:, None, :] * torch.exp((h * -0.5).clamp_min(-_EXP_FLOOR)) \
        * torch.erfc(s * sqrt_a * -_SQRT_HALF) / sqrt_a              # [B,P,N]

    if mode == "transmittance":
        s_sorted, order = torch.sort(s, dim=-1, stable=True)           # ties: lower index first
        tau_sorted = torch.gather(tau, -1, order)
        cum = torch.cumsum(tau_sorted, dim=-1)
        # T_k = prod_{j<k} (1 - alpha_j) = exp(-sum_{j<k} tau_j): shift exp(-cumsum) by one
        t_incl = torch.exp(cum.clamp_max(_EXP_FLOOR).neg())            # T_{k+1}
        t_excl = torch.cat([torch.ones_like(t_incl[..., :1]), t_incl[..., :-1]], dim=-1)
        w_sorted = t_excl * torch.expm1(tau_sorted.clamp_max(_EXP_FLOOR).neg()).neg()  # T_k * alpha_k
        t_final = t_incl[..., -1]                                      # T_N  [B,P]
        alpha = -torch.expm1(-cum[..., -1])                            # 1 - T_N, accurate when small
        weights = torch.zeros_like(w_sorted).scatter(-1, order, w_sorted)
        latent = torch.matmul(weights, features) + t_final[..., None] * background[:, None, :]
        depth = (w_sorted * s_sorted).sum(-1) / (alpha + DEPTH_EPS)
    elif mode == "rochette":
        s_pos = s.clamp_min(0.0)
        weights = tau / (1.0 + s_pos ** 4)
        total = weights.sum(-1)
        z = total + ROCHETTE_BACKGROUND_WEIGHT
        latent = (torch.matmul(weights, features) + ROCHETTE_BACKGROUND_WEIGHT * background[:, None, :]) / z[..., None]
        alpha = total / z
        depth = (weights * s_pos).sum(-1) / (total + DEPTH_EPS)
    else:  # validated by the callers; kept for direct use
        raise MarionetteError(f"raycast: mode must be one of {MODES}, got {mode!r}")
    return latent, alpha, depth


# ---------------------------------------------------------------------- validation
def _check_inputs(means, precisions, densities, features, background, K, R, t, height, width, mode):
    if mode not in MODES:
        raise MarionetteError(f"raycast: mode must be one of {MODES}, got {mode!r}")
    if int(height) != height or int(width) != width or height <= 0 or width <= 0:
        raise MarionetteError(f"raycast: height and width must be positive integers, got {height}x{width}")
    if means.dim() != 3 or means.shape[-1] != 3:
        raise MarionetteError(f"raycast: means must be [B,N,3], got {tuple(means.shape)}")
    B, N = means.shape[:2]
    expected = {
        "precisions": (precisions, (B, N, 3, 3)),
        "densities": (densities, (B, N)),
        "K": (K, (B, 3, 3)),
        "R": (R, (B, 3, 3)),
        "t": (t, (B, 3)),
    }
    for name, (x, shape) in expected.items():
        if tuple(x.shape) != shape:
            raise MarionetteError(f"raycast: {name} must have shape {list(shape)}, got {list(x.shape)}")
    if features.dim() != 3 or features.shape[0] not in (1, B) or features.shape[1] != N:
        raise MarionetteError(f"raycast: features must be [B or 1, {N}, C], got {list(features.shape)}")
    C = features.shape[2]
    if tuple(background.shape) != (B, C):
        raise MarionetteError(f"raycast: background must be [{B}, {C}], got {list(background.shape)}")
    dtype = means.dtype
    if not dtype.is_floating_point:
        raise MarionetteError(f"raycast: expected float32 or float64 tensors, got {dtype}")
    for name, x in (("precisions", precisions), ("densities", densities), ("features", features),
                    ("background", background)):
        if x.dtype != dtype:
            raise MarionetteError(f"raycast: {name} is {x.dtype} but means are {dtype}; use one dtype")
    named = (("means", means), ("precisions", precisions), ("densities", densities), ("features", features),
             ("background", background))
    finite = torch.stack([torch.isfinite(x.detach()).all().to(means.device) for _, x in named]).tolist()  # one sync
    for (name, _), ok in zip(named, finite):
        if not ok:
            raise MarionetteError(f"raycast: {name} contains NaN or infinite values (check the joints and the "
                                  "actor's parameters)")


# ---------------------------------------------------------------------- reference
def raycast_reference(means, precisions, densities, features, background, K, R, t, height: int, width: int,
                      mode: str = "transmittance", ray_dirs: torch.Tensor | None = None,
                      chunk_rays: int = DEFAULT_CHUNK_RAYS, use_checkpoint: bool | None = None):
    """Pure PyTorch raycast (the spec's reference).  Shapes as in ``raycast``.

    ray_dirs: optional explicit unit world directions [B|1, H, W, 3] (distorted cameras);
    rays then still start at the camera centres ``-R^T t``.
    chunk_rays: rays per chunk summed over the batch (memory ~ chunk_rays * N * a dozen values).
    use_checkpoint: recompute chunk intermediates in backward (default: when grads are needed).
    """
    # exp/erfc of large Mahalanobis distances need full precision: an enclosing autocast region
    # must not run these matmuls in half precision
    with torch.autocast(device_type=means.device.type, enabled=False):
        return _raycast_reference(means, precisions, densities, features, background, K, R, t, height, width, mode,
                                  ray_dirs, chunk_rays, use_checkpoint)


def _raycast_reference(means, precisions, densities, features, background, K, R, t, height, width, mode, ray_dirs,
                       chunk_rays, use_checkpoint):
    B, N = means.shape[:2]
    C = features.shape[2]
    HW = int(height) * int(width)
    origins = camera_origins(R, t).to(means.dtype)
    if ray_dirs is not None:
        ray_dirs = ray_dirs.to(device=means.device, dtype=means.dtype)
        if ray_dirs.dim() == 3:
            ray_dirs = ray_dirs[None]
        if ray_dirs.shape[1:] != (height, width, 3) or ray_dirs.shape[0] not in (1, B):
            raise MarionetteError(f"raycast: ray_dirs must be [B|1, {height}, {width}, 3], got {list(ray_dirs.shape)}")
        dirs_all = ray_dirs.reshape(ray_dirs.shape[0], HW, 3).expand(B, HW, 3)
    else:
        dirs_all = pixel_directions(K.to(means.dtype), R.to(means.dtype), height, width)
    background = background.to(means.dtype)
    if use_checkpoint is None:
        use_checkpoint = torch.is_grad_enabled() and any(
            x.requires_grad for x in (means, precisions, densities, features, background, dirs_all, origins))
    step = max(1, int(chunk_rays) // max(B, 1))
    lat, alp, dep = [], [], []
    for start in range(0, HW, step):
        dirs = dirs_all[:, start:start + step]
        if use_checkpoint:
            out = checkpoint(_shade_chunk, dirs, origins, means, precisions, densities, features, background, mode,
                             use_reentrant=False)
        else:
            out = _shade_chunk(dirs, origins, means, precisions, densities, features, background, mode)
        lat.append(out[0])
        alp.append(out[1])
        dep.append(out[2])
    latent = torch.cat(lat, 1).reshape(B, height, width, C).permute(0, 3, 1, 2)
    alpha = torch.cat(alp, 1).reshape(B, 1, height, width)
    depth = torch.cat(dep, 1).reshape(B, 1, height, width)
    return latent, alpha, depth


# ---------------------------------------------------------------------- dispatch
def _kernels():
    """The compiled-kernel module, or None when it is not installed (silently)."""
    try:
        from engine.neural.render import kernels  # owned by the kernels engineer; optional
    except Exception:  # ImportError, OSError from a broken .so, ...: fall back to the reference
        return None
    return kernels


def resolve_backend(backend: str | None = None) -> str:
    """The requested backend name: the argument, else ``$MARIONETTE_RENDER_BACKEND``, else "auto"."""
    name = backend if backend is not None else os.environ.get(ENV_BACKEND, "auto") or "auto"
    name = str(name).strip().lower()
    if name not in BACKENDS:
        where = "backend" if backend is not None else f"environment variable {ENV_BACKEND}"
        raise MarionetteError(f"renderer {where}: expected one of {BACKENDS}, got {name!r}")
    return name


def kernel_available(device) -> bool:
    k = _kernels()
    if k is None:
        return False
    try:
        return bool(k.available(torch.device(device)))
    except Exception:
        return False


CUDA_MAX_PRIMITIVES = 128  # kCudaMaxPrims in cuda_ext/csrc/raycast_cuda.h


def fits_cuda_kernel(device_type: str, num_primitives: int) -> bool:
    """Whether the CUDA kernel can render this many primitives (every other device's kernel can). When
    it cannot, says so once per call site (Python's warning filter) and how to avoid it: silently, a
    33-joint BlazePose actor (36 bones x 4 = 144 primitives) would train on the slow reference."""
    if device_type != "cuda" or num_primitives <= CUDA_MAX_PRIMITIVES:
        return True
    import warnings

    warnings.warn(f"{num_primitives} Gaussian primitives exceed the CUDA raycast kernel's {CUDA_MAX_PRIMITIVES}, so "
                  f"this render runs the PyTorch reference (several times slower); train with fewer Gaussians per "
                  f"bone (--per-bone, e.g. 3 for a 36-bone BlazePose actor) to keep the kernel", RuntimeWarning,
                  stacklevel=3)
    return False


def raycast(means, precisions, densities, features, background, K, R, t, height: int, width: int,
            mode: str = "transmittance", backend: str | None = None, ray_dirs: torch.Tensor | None = None,
            chunk_rays: int = DEFAULT_CHUNK_RAYS, groups: torch.Tensor | None = None, num_groups: int = 0):
    """Render bone Gaussians (the spec's raycast op).

    means [B,N,3], precisions [B,N,3,3], densities [B,N], features [B|1,N,C], background [B,C],
    K [B,3,3], R [B,3,3], t [B,3] (OpenCV, x_cam = R x + t, integer pixel centres)
    -> latent [B,C,H,W], alpha [B,1,H,W], depth [B,1,H,W] (distance along the ray, metres).
    With ``groups`` (int [N]: each primitive's group, e.g. its bone, in [0, num_groups)) a fourth result,
    weights [B,G,H,W]: each group's share of the pixel, i.e. what a one-hot feature of the primitive's
    group would render over a zero background (the reference renders exactly that; the kernels add each
    primitive's weight to its group instead of carrying G mostly-zero channels).
    The reference returns ``latent`` in channels_last layout (a permuted view), which convolutional
    decoders prefer; call ``.contiguous()`` before ``.view()``.

    backend: "auto" (kernels when installed for this device and no ``ray_dirs``), "reference"
    or "kernel"; None reads ``$MARIONETTE_RENDER_BACKEND``.
    """
    _check_inputs(means, precisions, densities, features, background, K, R, t, height, width, mode)
    height, width = int(height), int(width)
    name = resolve_backend(backend)
    use_kernel = False
    if name == "kernel":
        if ray_dirs is not None:
            raise MarionetteError("renderer backend 'kernel' does not support explicit ray directions "
                                  "(distorted cameras); use backend 'reference' or 'auto'")
        if not kernel_available(means.device):
            raise MarionetteError(f"renderer backend 'kernel' requested but the compiled kernels are not "
                                  f"available for device {means.device} (is marionette_kernels installed?)")
        use_kernel = True
    elif name == "auto":
        # the CUDA kernel keeps a tile's primitives in shared memory: at most CUDA_MAX_PRIMITIVES
        use_kernel = (ray_dirs is None and kernel_available(means.device)
                      and fits_cuda_kernel(means.device.type, int(means.shape[1])))
    if groups is not None:
        groups = _check_groups(groups, means.shape[1], num_groups, means.device)
    if use_kernel:
        feats = features.expand(means.shape[0], -1, -1) if features.shape[0] != means.shape[0] else features
        # checked above: the kernel wrapper need not sync again for the range
        extra = {} if groups is None else dict(groups=groups, num_groups=int(num_groups), check_groups=False)
        out = _kernels().raycast_kernel(means, precisions, densities, feats, background,
                                        K.to(means.dtype), R.to(means.dtype), t.to(means.dtype),
                                        height, width, mode, **extra)
        return tuple(out)
    if groups is None:
        return raycast_reference(means, precisions, densities, features, background, K, R, t, height, width,
                                 mode=mode, ray_dirs=ray_dirs, chunk_rays=chunk_rays)
    # groups by definition: one-hot channels after the features, zero in the background
    C = features.shape[2]
    onehot = torch.nn.functional.one_hot(groups, int(num_groups)).to(features.dtype)
    features = torch.cat([features, onehot[None].expand(features.shape[0], -1, -1)], dim=2)
    background = torch.cat([background, background.new_zeros(background.shape[0], int(num_groups))], dim=1)
    latent, alpha, depth = raycast_reference(means, precisions, densities, features, background, K, R, t, height,
                                             width, mode=mode, ray_dirs=ray_dirs, chunk_rays=chunk_rays)
    return latent[:, :C], alpha, depth, latent[:, C:]


def _check_groups(groups, n_primitives: int, num_groups: int, device) -> torch.Tensor:
    if groups.dtype.is_floating_point or groups.dim() != 1 or groups.shape[0] != n_primitives:
        raise MarionetteError(f"raycast: groups must be an integer tensor [{n_primitives}] (one group per "
                              f"primitive), got {groups.dtype} {list(groups.shape)}")
    if int(num_groups) <= 0:
        raise MarionetteError(f"raycast: num_groups must be positive with groups, got {num_groups}")
    groups = groups.to(device=device, dtype=torch.long)
    check_group_range(groups, num_groups, "raycast")
    return groups


def check_group_range(groups: torch.Tensor, num_groups: int, where: str) -> None:
    """Every group index in [0, num_groups), or a MarionetteError naming the range found (one device sync)."""
    if not groups.numel():
        return
    lo, hi = torch.stack([groups.min(), groups.max()]).tolist()
    if lo < 0 or hi >= int(num_groups):
        raise MarionetteError(f"{where}: groups must lie in [0, {int(num_groups)}), got [{lo}, {hi}]")
