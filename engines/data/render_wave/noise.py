"""What the wave renderer's parts share: log-uniform draws, smooth noise, float32 and 2 pi."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

TAU = 2 * math.pi
F32 = np.float32


def log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale_px: float) -> np.ndarray:
    """Unit-variance noise that varies over about `scale_px` (bilinear from a coarse grid)."""
    gh = max(2, int(shape[0] / max(scale_px, 1.0)) + 2)
    gw = max(2, int(shape[1] / max(scale_px, 1.0)) + 2)
    coarse = rng.standard_normal((gh, gw)).astype(F32)
    return ndi.zoom(coarse, (shape[0] / gh, shape[1] / gw), order=1)[: shape[0], : shape[1]]
