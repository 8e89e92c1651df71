"""Compositing several rendered actors, and the colour conversions at Blender's boundary.

Each actor's render is a straight-alpha sRGB RGBA image plus a per-pixel depth. Layers
are ordered per pixel by depth (nearest first) and combined with the "over" operator,
so two actors that pass in front of each other swap correctly pixel by pixel.
"""

from __future__ import annotations

import numpy as np

from engine.io.colour import linear_to_srgb, srgb_to_linear  # noqa: F401  (re-exported for the add-on)


def composite_layers(rgba_layers: list[np.ndarray], depth_layers: list[np.ndarray],
                     background: np.ndarray | None = None) -> np.ndarray:
    """Composite straight-alpha RGBA layers [H, W, 4] front to back by depth [H, W].

    Pixels where a layer has no coverage may hold any depth (inf or NaN are fine).
    ``background``: optional straight RGBA [4] or [H, W, 4] placed behind everything.
    Returns straight-alpha RGBA [H, W, 4] float32.
    """
    if len(rgba_layers) != len(depth_layers):
        raise ValueError("one depth map per layer is required")
    if not rgba_layers:
        raise ValueError("nothing to composite")
    layers = [np.asarray(x, dtype=np.float32) for x in rgba_layers]
    if len(layers) > 1:  # order per pixel by depth, nearest first
        depth = np.stack([np.asarray(d, dtype=np.float32) for d in depth_layers])  # [L, H, W]
        depth = np.where(np.isfinite(depth), depth, np.inf)
        order = np.argsort(depth, axis=0, kind="stable")
        layers = list(np.take_along_axis(np.stack(layers), order[..., None], axis=0))
    H, W = layers[0].shape[:2]
    premult_rgb = np.zeros((H, W, 3), dtype=np.float32)
    transmittance = np.ones((H, W, 1), dtype=np.float32)
    for layer in layers:
        a = np.clip(layer[..., 3:4], 0.0, 1.0)
        premult_rgb += (transmittance * a) * layer[..., :3]
        transmittance *= 1.0 - a
    if background is not None:
        bg = np.broadcast_to(np.asarray(background, dtype=np.float32), (H, W, 4))
        a = np.clip(bg[..., 3:4], 0.0, 1.0)
        premult_rgb += (transmittance * a) * bg[..., :3]
        transmittance *= 1.0 - a
    alpha = 1.0 - transmittance
    rgb = premult_rgb / np.maximum(alpha, 1e-8)
    rgb[alpha[..., 0] <= 1e-8] = 0.0
    return np.concatenate([rgb, alpha], axis=-1)


def to_blender_pixels(rgba_srgb_straight: np.ndarray) -> np.ndarray:
    """Straight sRGB RGBA [H, W, 4] -> Blender render-result buffer: flat float32,
    bottom row first, scene-linear, premultiplied alpha (Blender's internal convention)."""
    img = np.asarray(rgba_srgb_straight, dtype=np.float32)
    lin = srgb_to_linear(img[..., :3]) * img[..., 3:4]
    out = np.concatenate([lin, img[..., 3:4]], axis=-1)[::-1]
    return np.ascontiguousarray(out, dtype=np.float32).ravel()
