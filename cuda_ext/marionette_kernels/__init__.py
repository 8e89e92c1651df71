"""Compiled kernels of Marionette's renderer.

Importing this package registers the torch operators ``torch.ops.marionette.raycast_fwd`` /
``raycast_bwd`` and ``bone_texture_fwd`` / ``bone_texture_bwd`` (CPU always, CUDA when built with it).  Autograd and fake
kernels are registered by ``engine.neural.render.kernels``, which is the API to use.
"""

import torch  # noqa: F401  (loads libtorch before the extension)

from . import _C  # noqa: F401  (runs the TORCH_LIBRARY registrations)

__version__ = "0.1.0"
MODE_IDS = {"transmittance": 0, "rochette": 1}


def has_device(device_type: str) -> bool:
    """Whether the ops have kernels for this device type ("cpu", "cuda")."""
    key = {"cpu": "CPU", "cuda": "CUDA"}.get(str(device_type))
    if key is None:
        return False
    return bool(torch._C._dispatch_has_kernel_for_dispatch_key("marionette::raycast_fwd", key))
