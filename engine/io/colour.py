"""sRGB transfer functions (IEC 61966-2-1), shared by ingest's photometric calibration and compositing."""

from __future__ import annotations

import numpy as np


def srgb_to_linear(c, dtype=np.float32) -> np.ndarray:
    """sRGB decoding (what Blender's 'Standard' view transform inverts on save), ``(*,) -> (*,)``.

    >>> srgb_to_linear([0.0, 1.0])
    array([0., 1.], dtype=float32)
    """
    c = np.asarray(c, dtype=dtype)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(dtype)


def linear_to_srgb(c) -> np.ndarray:
    """sRGB encoding of linear values (negative values clamp to 0), ``(*,) -> (*,)``."""
    c = np.clip(np.asarray(c, dtype=np.float32), 0.0, None)
    return np.where(c <= 0.0031308, c * 12.92, 1.055 * np.power(c, 1 / 2.4) - 0.055).astype(np.float32)
