"""Random fields: Gaussian random fields and shot-noise fields, drawn in Fourier space."""

from __future__ import annotations

import math

import numpy as np
from scipy import fft as sfft


def _radial(shape: tuple[int, int], sigma_px: float, stretch: float, angle: float) -> np.ndarray:
    """(k . Sigma . k) on the rfft2 grid of an anisotropic Gaussian of width sigma_px,
    stretched by `stretch` along `angle`: exp(-radial / 2) is its transfer function."""
    h, w = shape
    ky = (2 * np.pi * sfft.fftfreq(h)).astype(np.float32)[:, None]
    kx = (2 * np.pi * sfft.rfftfreq(w)).astype(np.float32)[None, :]
    ku = kx * math.cos(angle) + ky * math.sin(angle)
    kv = -kx * math.sin(angle) + ky * math.cos(angle)
    su, sv = sigma_px * math.sqrt(stretch), sigma_px / math.sqrt(stretch)
    return (ku * su) ** 2 + (kv * sv) ** 2


def shot_fields(
    rng: np.random.Generator,
    shape: tuple[int, int],
    count: int,
    sigmas_px: tuple[float, ...],
    stretch: float,
    angle: float,
) -> list[np.ndarray]:
    """Sums of `count` anisotropic Gaussian kernels (peak 1) at the same random places (shot-noise
    fields), one per width: the level set at 0.5 of the wide one gives cell bodies of diameter
    ~2.35 sigma at any coverage; a narrow one puts a nucleus at each cell's centre."""
    ys = rng.integers(0, shape[0], count)
    xs = rng.integers(0, shape[1], count)
    points = sfft.rfft2(splat(shape, ys, xs, np.ones(count)), workers=1)
    fields = []
    for sigma in sigmas_px:
        transfer = np.exp(-0.5 * _radial(shape, sigma, stretch, angle)) * (2 * np.pi * sigma**2)
        fields.append(sfft.irfft2(points * transfer, s=shape, workers=1).astype(np.float32))
    return fields


def random_field(
    rng: np.random.Generator,
    shape: tuple[int, int],
    sigma_px: float,
    *,
    stretch: float = 1.0,
    angle: float = 0.0,
    detail: float = 0.0,
) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian random field, smooth on the scale sigma_px.

    stretch > 1 elongates the blobs along `angle`; `detail` mixes in a 3x finer component so
    that level sets get ragged, branching outlines instead of round ones. Noise is drawn only
    where the spectrum is not negligible, straight into Fourier space (one inverse FFT).
    """
    radial = _radial(shape, sigma_px, stretch, angle)
    spectrum = np.exp(-0.5 * radial)
    if detail > 0:
        spectrum += detail * np.exp(-0.5 * radial / 9.0)
    keep = spectrum > 1e-3
    coefficients = np.zeros(spectrum.shape, np.complex64)
    n = int(keep.sum())
    coefficients[keep] = (rng.standard_normal(n) + 1j * rng.standard_normal(n)) * spectrum[keep]
    values = sfft.irfft2(coefficients, s=shape, workers=1).astype(np.float32)
    values -= values.mean()
    return values / max(float(values[::3, ::3].std()), 1e-12)


def splat(
    shape: tuple[int, int], ys: np.ndarray, xs: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """Point weights summed into a frame-sized array (for granules, vacuoles)."""
    flat = ys.astype(np.int64) * shape[1] + xs.astype(np.int64)
    summed = np.bincount(flat, weights, minlength=shape[0] * shape[1])
    return summed.reshape(shape).astype(np.float32)


def smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)
