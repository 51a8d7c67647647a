"""Light and camera: the lamp field (sometimes a well edge), the blur, the sensor."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi
from scipy.signal import fftconvolve
from scipy.special import j1

from engines.data.render_monolayer.textures import F32, fractal_noise, loguniform


def illumination(rng: np.random.Generator, shape: tuple[int, int], um: float) -> np.ndarray:
    """Relative lamp field, 1 at the centre: tilt, vignetting, uneven lamp, maybe a well edge."""
    h, w = shape
    scale = max(h, w) / 2
    yy = ((np.arange(h, dtype=F32) - h / 2) / scale)[:, None]
    xx = ((np.arange(w, dtype=F32) - w / 2) / scale)[None, :]
    angle = rng.uniform(0, 2 * np.pi)
    field = 1 + F32(rng.uniform(0, 0.08)) * (yy * math.sin(angle) + xx * math.cos(angle))
    field = field * (1 - F32(rng.uniform(0, 0.25)) * (yy * yy + xx * xx))
    field = field * (
        1 + F32(rng.uniform(0, 0.03)) * fractal_noise(rng, shape, max(h, w) / 3, octaves=2)
    )
    if rng.random() < 0.2:
        field = field * well_edge(rng, shape, um)
    return field.astype(F32)


def well_edge(rng: np.random.Generator, shape: tuple[int, int], um: float) -> np.ndarray:
    """Shading near a circular well wall: a strong dark or bright gradient from a side or corner."""
    h, w = shape
    well_radius = loguniform(rng, 1500, 4000) / um  # 96- to 24-well plates, in px
    toward = rng.uniform(0, 2 * np.pi)  # where the wall lies, seen from the frame centre
    reach = rng.uniform(-0.3, 0.3) * max(h, w)  # how far into the frame the wall comes
    cy = h / 2 - math.sin(toward) * (well_radius - max(h, w) / 2 + reach)
    cx = w / 2 - math.cos(toward) * (well_radius - max(h, w) / 2 + reach)
    inside = well_radius - np.hypot(
        np.arange(h, dtype=F32)[:, None] - cy, np.arange(w, dtype=F32)[None, :] - cx
    )
    width = rng.uniform(0.1, 0.5) * max(h, w)  # the meniscus gradient
    gradient = np.exp(-np.maximum(inside, 0) / width)
    strength = (
        rng.uniform(0.3, 0.8) if rng.random() < 0.7 else -rng.uniform(0.2, 0.5)
    )  # dark or bright
    wall = 1 - rng.uniform(0.6, 0.95) * np.clip(
        -inside / (8 / um) + 0.5, 0, 1
    )  # the plastic itself
    return ((1 - strength * gradient) * wall).astype(F32)


def point_spread(rng: np.random.Generator, intensity: np.ndarray, um: float) -> np.ndarray:
    """Blur with a Gaussian (most frames), a defocus disc or an Airy-like pattern."""
    choice = rng.random()
    if choice < 0.6:
        return ndi.gaussian_filter(intensity, max(rng.uniform(0.25, 0.8) / um, 0.4), mode="reflect")
    radius = max(rng.uniform(0.4, 1.2) / um, 1.0)
    kernel = disc_kernel(radius) if choice < 0.8 else airy_kernel(radius)
    half = kernel.shape[0] // 2
    padded = np.pad(intensity, half, mode="reflect")
    return fftconvolve(padded, kernel, mode="valid").astype(F32)


def disc_kernel(radius: float) -> np.ndarray:
    half = math.ceil(radius) + 1
    grid = np.arange(-half, half + 1, dtype=F32)
    kernel = np.clip(radius - np.sqrt(grid[:, None] ** 2 + grid[None, :] ** 2) + 0.5, 0, 1)
    return kernel / kernel.sum()


def airy_kernel(first_zero: float) -> np.ndarray:
    """(2 J1(x) / x)^2 with its first dark ring at `first_zero` px, cut after the second ring."""
    half = math.ceil(first_zero * 2.3) + 1
    grid = np.arange(-half, half + 1, dtype=np.float64)
    x = np.sqrt(grid[:, None] ** 2 + grid[None, :] ** 2) * (3.8317 / first_zero) + 1e-9
    kernel = (2 * j1(x) / x) ** 2
    return (kernel / kernel.sum()).astype(F32)


def camera(rng: np.random.Generator, intensity: np.ndarray, dtype: str) -> np.ndarray:
    """Poisson-Gaussian sensor, per-frame exposure; occasional banding, smear or JPEG blocks."""
    if dtype == "uint8":
        full_scale, level = 255, rng.uniform(40, 230)
    elif rng.random() < 0.25:  # a 12-bit camera written into uint16
        full_scale, level = 4095, loguniform(rng, 500, 3500)
    else:
        full_scale, level = 65535, loguniform(rng, 500, 50000)
    offset = level * rng.uniform(0, 0.08)
    # electrons at the background: SNR ~12 to ~140, and a few dim, noisy frames down to ~6
    photons = loguniform(rng, 150, 20000) if rng.random() < 0.9 else loguniform(rng, 40, 150)
    gain = (level - offset) / photons
    electrons = np.maximum(intensity, 0) * F32(photons)
    if photons < 50:
        electrons = rng.poisson(electrons).astype(F32)
    else:  # Poisson is Gaussian with variance = mean this far up, and much cheaper
        electrons += np.sqrt(electrons) * rng.standard_normal(electrons.shape, dtype=F32)
    electrons += F32(rng.uniform(1, 8)) * rng.standard_normal(electrons.shape, dtype=F32)
    counts = F32(offset) + F32(gain) * electrons
    noise_dn = gain * math.sqrt(photons)
    if rng.random() < 0.15:
        counts += row_banding(rng, counts.shape, noise_dn)
    if rng.random() < 0.1:
        counts = vertical_smear(rng, counts)
    if rng.random() < 0.1:
        counts = block_quantise(counts, step=noise_dn * rng.uniform(0.1, 0.6))
    return np.clip(np.round(counts), 0, full_scale).astype(dtype)


def row_banding(rng: np.random.Generator, shape: tuple[int, int], noise_dn: float) -> np.ndarray:
    rows = rng.normal(0, noise_dn * rng.uniform(0.1, 0.5), shape[0])
    period = rng.uniform(8, 200)
    rows += (
        noise_dn
        * rng.uniform(0, 0.5)
        * np.sin(2 * np.pi * np.arange(shape[0]) / period + rng.uniform(0, 6.3))
    )
    return rows.astype(F32)[:, None]


def vertical_smear(rng: np.random.Generator, counts: np.ndarray) -> np.ndarray:
    smeared = ndi.uniform_filter1d(counts, int(rng.integers(3, 9)), axis=0)
    mix = F32(rng.uniform(0.1, 0.4))
    return (1 - mix) * counts + mix * smeared


def block_quantise(counts: np.ndarray, step: float) -> np.ndarray:
    """JPEG-like loss: 8x8 DCT blocks with coefficients rounded, coarser for higher frequencies."""
    h, w = counts.shape
    ph, pw = -h % 8, -w % 8
    padded = np.pad(counts, ((0, ph), (0, pw)), mode="edge")
    k = np.arange(8)
    dct = np.sqrt(2 / 8) * np.cos(np.pi * (2 * k[None, :] + 1) * k[:, None] / 16)
    dct[0] /= np.sqrt(2)
    dct = dct.astype(F32)
    blocks = padded.reshape(padded.shape[0] // 8, 8, padded.shape[1] // 8, 8).transpose(0, 2, 1, 3)
    coef = dct @ blocks @ dct.T
    steps = F32(max(step, 1e-3)) * (1 + 0.5 * (k[:, None] + k[None, :])).astype(F32)
    coef = np.round(coef / steps) * steps
    restored = (dct.T @ coef @ dct).transpose(0, 2, 1, 3).reshape(padded.shape)
    return restored[:h, :w]
