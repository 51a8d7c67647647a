"""Particle clouds: where particles lie, what each does to light, and splatting them to pixels."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

PARTICLE_SIGMA_PX = 0.8  # a splatted particle's Gaussian width: about a resolution element


@dataclass(slots=True)
class Cloud:
    """Particles at pixel positions (float), each with an absorbance and a scattering strength."""

    y: np.ndarray
    x: np.ndarray
    absorb: np.ndarray
    scatter: np.ndarray

    @classmethod
    def empty(cls) -> Cloud:
        return cls(*(np.zeros(0, np.float32) for _ in range(4)))

    @classmethod
    def of(cls, y: np.ndarray, x: np.ndarray, absorb: float | np.ndarray,
           scatter: float | np.ndarray) -> Cloud:
        n = len(y)
        return cls(np.asarray(y, np.float32), np.asarray(x, np.float32),
                   np.broadcast_to(np.float32(absorb), (n,)).astype(np.float32),
                   np.broadcast_to(np.float32(scatter), (n,)).astype(np.float32))

    @classmethod
    def join(cls, parts: list[Cloud]) -> Cloud:
        if not parts:
            return cls.empty()
        return cls(*(np.concatenate([getattr(p, name) for p in parts])
                     for name in ("y", "x", "absorb", "scatter")))

    def __len__(self) -> int:
        return len(self.y)


def splat(y: np.ndarray, x: np.ndarray, weight: np.ndarray, shape: tuple[int, int],
          sigma_px: float = PARTICLE_SIGMA_PX) -> np.ndarray:
    """Sum of weights per pixel (particles outside the frame dropped), Gaussian-blurred."""
    h, w = shape
    iy, ix = np.rint(y).astype(np.int64), np.rint(x).astype(np.int64)
    inside = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
    counts = np.bincount(iy[inside] * w + ix[inside], weights=weight[inside], minlength=h * w)
    image = counts.reshape(shape).astype(np.float32)
    return ndi.gaussian_filter(image, sigma_px, truncate=3.0) if sigma_px > 0 else image


def outline_radius(rng: np.random.Generator, roughness: float, harmonics: int = 6):
    """A star-shaped outline r(theta) / R: random Fourier terms, always positive."""
    k = np.arange(2, 2 + harmonics)
    amplitude = roughness * rng.uniform(0.2, 1.0, harmonics) / k
    phase = rng.uniform(0, 2 * math.pi, harmonics)

    def radius(theta: np.ndarray) -> np.ndarray:
        r = 1 + (amplitude[:, None] * np.cos(k[:, None] * theta[None] + phase[:, None])).sum(0)
        return np.maximum(r, 0.25)

    return radius


def inside_outline(rng: np.random.Generator, n: int, cy: float, cx: float, radius_px: float,
                   aspect: float, angle: float, roughness: float, centre_weight: float = 0.0
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n points inside a rough ellipse; `centre_weight` > 0 crowds them towards the middle.
    Returns (y, x, relative distance from the centre in 0..1)."""
    r_of = outline_radius(rng, roughness)
    theta = rng.uniform(0, 2 * math.pi, n)
    rel = rng.random(n) ** (0.5 * (1 + centre_weight))
    r = rel * r_of(theta) * radius_px
    u, v = r * np.cos(theta) * math.sqrt(aspect), r * np.sin(theta) / math.sqrt(aspect)
    c, s = math.cos(angle), math.sin(angle)
    return cy + u * s + v * c, cx + u * c - v * s, rel


def along_curve(rng: np.random.Generator, y0: float, x0: float, length_px: float,
                curl: float, n_per_px: float, width_px: float) -> tuple[np.ndarray, np.ndarray]:
    """Particles along a smooth random curve (a heading that random-walks), `width_px` thick."""
    steps = max(int(length_px), 2)
    heading = rng.uniform(0, 2 * math.pi) + np.cumsum(rng.normal(0, curl, steps))
    heading = ndi.gaussian_filter1d(heading, 8.0)
    cy = y0 + np.cumsum(np.sin(heading))
    cx = x0 + np.cumsum(np.cos(heading))
    n = max(int(steps * n_per_px), 1)
    at = rng.integers(0, steps, n)
    off = rng.normal(0, width_px / 2.5, n)
    return cy[at] + off * np.cos(heading[at]), cx[at] - off * np.sin(heading[at])


def aggregate(rng: np.random.Generator, n: int, cy: float, cx: float, step_px: float
              ) -> tuple[np.ndarray, np.ndarray]:
    """A compact, irregular heap: branching random walks from the centre."""
    arms = max(n // 60, 1)
    walk = rng.normal(0, step_px, (arms, n // arms + 1, 2)).cumsum(axis=1).reshape(-1, 2)[:n]
    return cy + walk[:, 0], cx + walk[:, 1]


def footprint(cloud: Cloud, shape: tuple[int, int], close_px: int = 0) -> np.ndarray:
    """Where a cloud's own particles are: its density above a fifth of one particle's peak,
    gaps up to `close_px` bridged (a heap of cells is one clump), holes filled. Worked out in
    the cloud's bounding box, so a speck costs what a speck covers."""
    mask = np.zeros(shape, bool)
    margin = close_px + 4
    y0, x0 = (max(int(v.min()) - margin, 0) for v in (cloud.y, cloud.x))
    y1, x1 = (min(int(v.max()) + margin + 1, n) for v, n in ((cloud.y, shape[0]),
                                                           (cloud.x, shape[1])))
    if len(cloud) == 0 or y1 <= y0 or x1 <= x0:
        return mask
    box = splat(cloud.y - y0, cloud.x - x0, np.ones(len(cloud), np.float32), (y1 - y0, x1 - x0))
    inside = box > 0.2 / (2 * math.pi * PARTICLE_SIGMA_PX**2)
    if close_px:  # a closing by distance transforms: its cost does not grow with close_px
        grown = ndi.distance_transform_edt(~inside) <= close_px
        inside = ndi.distance_transform_edt(grown) > close_px
    mask[y0:y1, x0:x1] = ndi.binary_fill_holes(inside)
    return mask
