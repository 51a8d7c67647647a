"""The specimen: what lies at the focal plane in physical units, and the shapes drawn into it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

F32 = np.float32


@dataclass(slots=True)
class Specimen:
    """What lies at the focal plane, in physical units, before the microscope sees it."""

    shape: tuple[int, int]
    um: float  # pixel size, um/px
    thickness: np.ndarray  # cell thickness, um (nucleus included)
    nucleus: np.ndarray  # nuclear thickness, um
    opd: np.ndarray  # optical path added by artifacts and organelles, um
    absorbance: np.ndarray  # natural-log optical density in focus (artifacts, organelle stain)
    haze: np.ndarray  # out-of-focus dimming (dirt): blurred already, casts no relief
    mask: np.ndarray  # uint16 artifact labels in drawing order
    kinds: list[str] = field(default_factory=list)
    nuclei: list[tuple[float, float, float]] = field(default_factory=list)  # y, x, radius px

    @classmethod
    def empty(cls, shape: tuple[int, int], um: float) -> Specimen:
        def z() -> np.ndarray:
            return np.zeros(shape, F32)

        return cls(shape, um, z(), z(), z(), z(), z(), np.zeros(shape, np.uint16))


@dataclass(frozen=True, slots=True)
class Window:
    """The in-frame part of a box around a point, with coordinates relative to that point."""

    box: tuple[slice, slice]
    yy: np.ndarray  # (h, 1) float32
    xx: np.ndarray  # (1, w) float32


def window(
    shape: tuple[int, int], cy: float, cx: float, half_h: float, half_w: float
) -> Window | None:
    y0, y1 = max(int(cy - half_h) - 1, 0), min(int(cy + half_h) + 2, shape[0])
    x0, x1 = max(int(cx - half_w) - 1, 0), min(int(cx + half_w) + 2, shape[1])
    if y0 >= y1 or x0 >= x1:
        return None
    yy = (np.arange(y0, y1, dtype=F32) - F32(cy))[:, None]
    xx = (np.arange(x0, x1, dtype=F32) - F32(cx))[None, :]
    return Window((slice(y0, y1), slice(x0, x1)), yy, xx)


def rotated_half_extent(a: float, b: float, theta: float) -> tuple[float, float]:
    """Half height and half width of an ellipse with semi-axes a (along theta) and b."""
    c, s = math.cos(theta), math.sin(theta)
    return math.hypot(a * s, b * c), math.hypot(a * c, b * s)


def loguniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def wobble(rng: np.random.Generator, roughness: float, orders: range = range(2, 7)) -> list:
    """Random angular harmonics of an outline: higher orders smaller, so edges stay smooth."""
    return [(k, roughness * rng.normal() / k, rng.uniform(0, 2 * math.pi)) for k in orders]


def outline_radius(
    yy: np.ndarray, xx: np.ndarray, a: float, b: float, theta: float, harmonics: list = ()
) -> tuple[np.ndarray, np.ndarray | None]:
    """Normalised radius (1 on the outline) of a rotated, maybe wobbly ellipse, and the angle."""
    c, s = F32(math.cos(theta)), F32(math.sin(theta))
    u = (xx * c + yy * s) / F32(a)
    v = (yy * c - xx * s) / F32(b)
    rho = np.sqrt(u * u + v * v)
    if not harmonics:
        return rho, None
    phi = np.arctan2(v, u)
    edge = np.ones_like(phi)
    for k, amp, phase in harmonics:
        edge += F32(amp) * np.cos(k * phi + F32(phase))
    return rho / np.maximum(edge, F32(0.3)), phi


def dome(rho: np.ndarray, power: float) -> np.ndarray:
    """A rounded cap, 1 at the centre and 0 at rho = 1: power 0.5 is a sphere, 1 a paraboloid."""
    return np.clip(1 - rho * rho, 0, None) ** F32(power)


def soft_inside(rho: np.ndarray, radius_px: float, edge_px: float = 1.0) -> np.ndarray:
    """An antialiased disc of the outline: 1 inside, 0 outside, a one-pixel ramp between."""
    return np.clip((1 - rho) * F32(radius_px / edge_px) + F32(0.5), 0, 1)


def splat(
    shape: tuple[int, int], ys: np.ndarray, xs: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """Sum point weights into an image (nearest pixel); points outside are dropped."""
    iy, ix = np.rint(ys).astype(np.int64), np.rint(xs).astype(np.int64)
    inside = (iy >= 0) & (iy < shape[0]) & (ix >= 0) & (ix < shape[1])
    flat = iy[inside] * shape[1] + ix[inside]
    image = np.bincount(flat, weights=weights[inside], minlength=shape[0] * shape[1])
    return image.reshape(shape).astype(F32)


def random_walk(
    rng: np.random.Generator, y0: float, x0: float, heading: float, length_px: float, bend: float
) -> tuple[np.ndarray, np.ndarray]:
    """Points every half pixel along a curve whose heading wanders by `bend` rad per pixel."""
    n = max(int(length_px * 2), 2)
    headings = heading + np.cumsum(rng.normal(0, bend * math.sqrt(0.5), n))
    return y0 + np.cumsum(0.5 * np.sin(headings)), x0 + np.cumsum(0.5 * np.cos(headings))
