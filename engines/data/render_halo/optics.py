"""Optics and camera: the defocused views of the phase, uneven light, camera noise."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from engines.data.render_halo.patches import log_uniform
from engines.data.synth import SynthOptions


@dataclass(frozen=True, slots=True)
class Camera:
    background: float  # DN of the background at the centre
    offset: float  # DN of a dark pixel
    gain: float  # DN per electron
    read_noise_e: float
    speckle: float  # relative multiplicative noise
    maximum: int


def draw_camera(rng: np.random.Generator, dtype: str) -> Camera:
    if dtype == "uint16":
        background, offset, maximum = log_uniform(rng, 800, 30000), rng.uniform(90, 110), 65535
        electrons = log_uniform(rng, 800, 20000)
    else:
        background, offset, maximum = rng.uniform(60, 200), rng.uniform(0, 8), 255
        electrons = log_uniform(rng, 300, 8000)
    gain = (background - offset) / electrons
    speckle = rng.uniform(0.005, 0.03) if rng.random() < 0.3 else 0.0
    return Camera(background, offset, gain, rng.uniform(1.5, 8.0), speckle, maximum)


def illumination(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Smooth uneven illumination: a tilted, vignetted second-order surface, sometimes fringes."""
    y = np.linspace(-1, 1, h, dtype=np.float32)[:, None] - np.float32(rng.uniform(-0.3, 0.3))
    x = np.linspace(-1, 1, w, dtype=np.float32)[None, :] - np.float32(rng.uniform(-0.3, 0.3))
    vignette = rng.uniform(0, 0.25)
    a, b = rng.normal(0, 0.06, 2)
    cy, cx, cxy = rng.normal(0, 0.04, 3)
    rows = 1 + np.float32(a) * y + np.float32(cy - vignette) * y * y
    cols = np.float32(b) * x + np.float32(cx - vignette) * x * x
    light = rows + cols + np.float32(cxy) * y * x
    if rng.random() < 0.3:  # faint interference fringes from the optics
        fy, fx = rng.normal(0, 12, 2)
        p = rng.uniform(0, 2 * math.pi)
        amp = np.float32(rng.uniform(0.002, 0.008))
        wy = np.float32(fy) * y + np.float32(p)
        wx = np.float32(fx) * x
        light += amp * (np.sin(wy) * np.cos(wx) + np.cos(wy) * np.sin(wx))
    return np.maximum(light, np.float32(0.2))


def laplacian(image: np.ndarray) -> np.ndarray:
    out = np.zeros_like(image)
    out[1:-1, 1:-1] = (
        image[:-2, 1:-1] + image[2:, 1:-1] + image[1:-1, :-2] + image[1:-1, 2:]
        - 4 * image[1:-1, 1:-1]
    )
    return out


@dataclass(frozen=True, slots=True)
class View:
    """One rendered image of the same scene: nominal focus or a defocused copy."""

    contrast: float  # multiplies laplacian(phase); its sign flips through focus
    blur_px: float  # extra blur of absorbing things


def draw_views(rng: np.random.Generator, options: SynthOptions, contrast: float) -> list[View]:
    if options.planes > 1:
        span = rng.uniform(1.5, 3.0)
        offsets = np.linspace(-span, span, options.planes)
        return [View(contrast * (1 + dz), 1.2 * abs(dz)) for dz in offsets]
    views = [View(contrast, 0.0)]
    for c in range(1, options.channels):
        views.append(View(contrast * (1 + c * (2.0 if c % 2 else -1.5)), 1.0 + 0.8 * c))
    return views


def expose(
    rng: np.random.Generator,
    light: np.ndarray,
    transmission: np.ndarray,
    relief: np.ndarray,
    camera: Camera,
    dtype: str,
) -> np.ndarray:
    """Camera: signal in electrons, shot + read (+ speckle) noise, gain, offset, clipping."""
    signal = light * transmission
    signal *= 1 + relief
    np.maximum(signal, 0.02, out=signal)
    electrons = signal * np.float32((camera.background - camera.offset) / camera.gain)
    # Shot noise is Poisson; at these counts (hundreds to tens of thousands of electrons) a
    # Gaussian with variance = mean is indistinguishable from it and several times faster.
    variance = electrons + np.float32(camera.read_noise_e**2)
    if camera.speckle:
        variance += (electrons * np.float32(camera.speckle)) ** 2
    noise = rng.standard_normal(electrons.shape, dtype=np.float32)
    noise *= np.sqrt(variance)
    electrons += noise
    electrons *= np.float32(camera.gain)
    electrons += np.float32(camera.offset)
    np.clip(electrons, 0, camera.maximum, out=electrons)
    return np.rint(electrons, out=electrons).astype(dtype)
