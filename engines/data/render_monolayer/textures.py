"""Procedural textures and shapes, in numpy: value noise, speckles, windows, blobs, polygons."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage as ndi

F32 = np.float32


def loguniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def _smoothstep_matrix(n_out: int, n_lattice: int) -> np.ndarray:
    """(n_out, n_lattice) weights that interpolate a lattice onto n_out pixels with smoothstep."""
    t = (np.arange(n_out) + 0.5) * ((n_lattice - 1) / n_out)
    i = np.minimum(np.floor(t).astype(np.int64), n_lattice - 2)
    f = t - i
    f = f * f * (3 - 2 * f)
    weights = np.zeros((n_out, n_lattice), F32)
    weights[np.arange(n_out), i] = 1 - f
    weights[np.arange(n_out), i + 1] = f
    return weights


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], feature_px: float) -> np.ndarray:
    """Value noise with blobs about feature_px wide: a random lattice, interpolated separably."""
    h, w = shape
    gh, gw = max(2, int(h / max(feature_px, 1.0)) + 2), max(2, int(w / max(feature_px, 1.0)) + 2)
    lattice = rng.standard_normal((gh, gw)).astype(F32)
    return _smoothstep_matrix(h, gh) @ lattice @ _smoothstep_matrix(w, gw).T


def fractal_noise(
    rng: np.random.Generator,
    shape: tuple[int, int],
    feature_px: float,
    octaves: int = 4,
    persistence: float = 0.5,
) -> np.ndarray:
    """Sum of value-noise octaves, normalised to unit standard deviation."""
    total = np.zeros(shape, F32)
    amplitude = 1.0
    for _ in range(octaves):
        if feature_px < 3:
            break  # finer octaves cost the most and the blur removes them anyway
        total += amplitude * smooth_noise(rng, shape, feature_px)
        feature_px /= 2
        amplitude *= persistence
    std = float(total.std())
    return total / std if std > 0 else total


def speckle_field(
    rng: np.random.Generator, shape: tuple[int, int], size_px: float, density: float
) -> np.ndarray:
    """Isolated round spots in [0, 1]: peaks of blurred white noise (granules, vacuoles)."""
    noise = ndi.gaussian_filter(rng.standard_normal(shape, dtype=F32), max(size_px, 0.5))
    noise /= max(float(noise.std()), 1e-6)
    threshold = 2.2 - 1.6 * density  # density 0..1: from rare to crowded spots
    return np.clip((noise - threshold) / 0.8, 0, 1)


@dataclass(frozen=True)
class Window:
    """The part of the frame one stamp touches, with coordinates in px from the stamp's centre."""

    rows: slice
    cols: slice
    yy: np.ndarray  # (h, 1) float32
    xx: np.ndarray  # (1, w) float32

    @property
    def shape(self) -> tuple[int, int]:
        return (self.rows.stop - self.rows.start, self.cols.stop - self.cols.start)


def window(shape: tuple[int, int], cy: float, cx: float, reach: float) -> Window | None:
    top, bottom = max(0, int(cy - reach)), min(shape[0], int(cy + reach) + 2)
    left, right = max(0, int(cx - reach)), min(shape[1], int(cx + reach) + 2)
    if bottom - top < 1 or right - left < 1:
        return None
    yy = (np.arange(top, bottom, dtype=F32) - F32(cy))[:, None]
    xx = (np.arange(left, right, dtype=F32) - F32(cx))[None, :]
    return Window(slice(top, bottom), slice(left, right), yy, xx)


def wobbly_radius(
    rng: np.random.Generator, roughness: float, harmonics: int = 5
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """r(theta) / mean radius for an irregular outline: random angular harmonics 2..harmonics+1.

    The returned function takes cos(theta) and sin(theta) and builds cos(k theta + phase) by
    repeated complex multiplication, which is much cheaper than arctan2 and cos per pixel."""
    amps = roughness * rng.uniform(0.3, 1.0, harmonics) / np.arange(1, harmonics + 1) ** 0.8
    phases = rng.uniform(0, 2 * np.pi, harmonics)

    def radius(cos_t: np.ndarray, sin_t: np.ndarray) -> np.ndarray:
        re, im = cos_t * cos_t - sin_t * sin_t, 2 * cos_t * sin_t  # exp(2i theta)
        r = np.ones_like(re)
        for a, p in zip(amps, phases, strict=True):
            r = r + a * (re * math.cos(p) - im * math.sin(p))
            re, im = re * cos_t - im * sin_t, re * sin_t + im * cos_t
        return np.maximum(r, 0.25)

    return radius


def blob(
    rng: np.random.Generator,
    win: Window,
    radius_px: float,
    *,
    roughness: float,
    elongation: float = 1.0,
    edge_px: float = 0.8,
    dy: float = 0.0,
    dx: float = 0.0,
) -> np.ndarray:
    """Soft occupancy in [0, 1] of an irregular, possibly elongated blob centred at (dy, dx)."""
    angle = rng.uniform(0, np.pi)
    c, s = math.cos(angle), math.sin(angle)
    y, x = win.yy - dy, win.xx - dx
    u = (y * c + x * s) / max(elongation, 0.05)
    v = -y * s + x * c
    r = np.sqrt(u * u + v * v) + F32(1e-6)
    edge = radius_px * wobbly_radius(rng, roughness)(u / r, v / r)
    return np.clip((edge - r) / max(edge_px, 0.3) + 0.5, 0, 1).astype(F32)


def polygon_mask(shape: tuple[int, int], ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Filled polygon as float 0/1. Pillow's scanline fill (a scikit-image dependency) is used
    because skimage.draw.polygon tests every pixel of the bounding box: too slow for processes."""
    canvas = Image.new("L", (shape[1], shape[0]), 0)
    ImageDraw.Draw(canvas).polygon(list(zip(xs.tolist(), ys.tolist(), strict=True)), fill=1)
    return np.asarray(canvas, dtype=F32)


def ring(r: np.ndarray, radius: float, width: float) -> np.ndarray:
    return np.exp(-(((r - radius) / max(width, 0.3)) ** 2)).astype(F32)
