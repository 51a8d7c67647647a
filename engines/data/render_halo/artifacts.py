"""Artifacts: each returns a patch around (cy, cx), sizes drawn in um."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from engines.data.render_halo.patches import (
    Patch,
    assemble,
    blob,
    draw_contrast,
    grid,
    log_uniform,
    ramp,
    soften,
    stamp_path,
)


@dataclass(frozen=True, slots=True)
class Where:
    cy: float
    cx: float
    um: float  # pixel size, um/px
    shape: tuple[int, int]

    def px(self, micrometres: float) -> float:
        return micrometres / self.um

    def corner(self, patch: np.ndarray) -> tuple[int, int]:
        return round(self.cy) - patch.shape[0] // 2, round(self.cx) - patch.shape[1] // 2


def _dust(rng: np.random.Generator, at: Where) -> Patch:
    radius = at.px(log_uniform(rng, 3, 15)) / 2
    rho = blob(rng, radius, roughness=0.35, elongation=rng.uniform(0.5, 1), pad=3)
    body = ramp(rho, radius, rng.uniform(0.6, 1.2))
    absorbance = soften(rng, body * np.float32(rng.uniform(1.0, 3.0) * draw_contrast(rng)), 0.2)
    phase = body * np.float32(rng.uniform(0.5, 1.5)) if rng.random() < 0.4 else None
    y0, x0 = at.corner(rho)
    return Patch(y0, x0, absorbance, rho <= 1, phase)


def _debris(rng: np.random.Generator, at: Where) -> Patch:
    size = at.px(log_uniform(rng, 8, 60))
    parts = []
    for i in range(int(rng.integers(1, 4))):
        radius = size / 2 * (1.0 if i == 0 else rng.uniform(0.25, 0.6))
        rho = blob(rng, radius, roughness=0.8, elongation=rng.uniform(0.3, 1), pad=2)
        grain = rng.normal(0, 1, rho.shape).astype(np.float32)
        scale = max(radius / 5, 1.0)
        grain = 1 + ndi.gaussian_filter(grain, scale) * np.float32(2 * scale)
        grain += rng.normal(0, 0.2, rho.shape).astype(np.float32)
        dark = ramp(rho, radius, rng.uniform(0.7, 1.5)) * grain * np.float32(rng.uniform(0.4, 1.6))
        dy, dx = (0.0, 0.0) if i == 0 else rng.normal(0, size * 0.3, 2)
        parts.append((dark, rho <= 1, dy, dx))
    absorbance, footprint = assemble(parts)
    absorbance = soften(rng, ndi.gaussian_filter(absorbance, 0.7) * np.float32(draw_contrast(rng)))
    phase = footprint * np.float32(rng.uniform(0.5, 2.0)) if rng.random() < 0.5 else None
    y0, x0 = at.corner(absorbance)
    return Patch(y0, x0, absorbance, footprint, phase)


def _curve(
    rng: np.random.Generator, at: Where, length: float, bend: float
) -> tuple[np.ndarray, np.ndarray]:
    """A smooth path through (cy, cx), sampled every 0.5 px."""
    n = max(int(length * 2), 4)
    turn = np.cumsum(rng.normal(0, bend, n))
    heading = rng.uniform(0, 2 * math.pi) + ndi.gaussian_filter1d(turn, n / 8 + 1)
    ys = np.cumsum(np.sin(heading)) * 0.5
    xs = np.cumsum(np.cos(heading)) * 0.5
    return at.cy + ys - ys[n // 2], at.cx + xs - xs[n // 2]


def _fibre(rng: np.random.Generator, at: Where) -> Patch:
    width = at.px(rng.uniform(2, 6))
    length = at.px(log_uniform(rng, 50, 500))
    ys, xs = _curve(rng, at, length, bend=rng.uniform(0.0, 0.06))
    edge = rng.uniform(0.7, 2.0)
    y0, x0, outer = stamp_path(at.shape, ys, xs, width / 2, edge)
    strength = np.float32(rng.uniform(0.4, 1.4) * draw_contrast(rng))
    absorbance = outer * strength
    if rng.random() < 0.3:  # a glassy fibre: dark edges, bright core
        _, _, core = stamp_path(at.shape, ys, xs, width / 5, edge)
        if core.shape == outer.shape:
            absorbance -= core * strength * np.float32(1.4)
    footprint = outer >= 0.5
    return Patch(y0, x0, absorbance, footprint, outer * np.float32(rng.uniform(0, 1.5)))


def _scratch(rng: np.random.Generator, at: Where) -> Patch:
    h, w = at.shape
    length = math.hypot(h, w) * rng.uniform(0.3, 1.1)
    ys, xs = _curve(rng, at, length, bend=0.0)
    width = rng.uniform(1.0, 4.0)
    y0, x0, profile = stamp_path(at.shape, ys, xs, width / 2, rng.uniform(0.6, 1.5))
    sign = 1 if rng.random() < 0.5 else -1
    absorbance = profile * np.float32(sign * rng.uniform(0.1, 0.6) * draw_contrast(rng))
    return Patch(y0, x0, absorbance, profile >= 0.5)


def _bubble(rng: np.random.Generator, at: Where) -> Patch:
    radius = at.px(log_uniform(rng, 20, 200)) / 2
    half = int(radius) + 4
    y, x = grid(half, half, rng)
    squash = np.float32(rng.uniform(0.88, 1.0))
    r = np.sqrt(x * x + (y / squash) ** 2) / np.float32(radius)
    rim = np.float32(rng.uniform(0.08, 0.25))
    edge = ramp(r, radius, 1.5)
    inside = np.clip(1 - r / (1 - rim), 0, 1)
    ring = np.clip((r - (1 - rim)) / (rim * 0.6), 0, 1) * edge
    tilt = rng.uniform(0, 2 * math.pi)
    along = x * np.float32(math.cos(tilt)) + y * np.float32(math.sin(tilt))
    shade = 1 + np.float32(rng.uniform(0, 0.5)) * along / np.float32(radius)
    strength = rng.uniform(0.5, 1.8) * draw_contrast(rng)
    absorbance = (
        ring * shade * np.float32(strength)
        - np.sqrt(inside) * np.float32(rng.uniform(0.08, 0.4))
    )
    phase = edge * np.float32(rng.uniform(0.5, 2.0))
    phase_scale = 1 - edge * np.float32(rng.uniform(0.3, 0.9))  # cells blur out behind it
    y0, x0 = at.corner(r)
    return Patch(y0, x0, absorbance, r <= 1, phase, phase_scale)


def _clump(rng: np.random.Generator, at: Where) -> Patch:
    size = at.px(log_uniform(rng, 30, 150))
    cell = at.px(rng.uniform(4, 9))  # radius of one rounded cell
    spread = max(size / 2 - cell, 1.0)
    count = int(np.clip((size / (2 * cell)) ** 2 * rng.uniform(0.6, 1.2), 3, 60))
    angles = rng.uniform(0, 2 * math.pi, count)
    dists = spread * np.sqrt(rng.uniform(0, 1, count))
    parts = []
    for a, d in zip(angles, dists, strict=True):
        radius = cell * rng.uniform(0.75, 1.3)
        rho = blob(rng, radius, roughness=0.08, elongation=rng.uniform(0.8, 1), pad=2)
        # Rounded detached cells: dark, often with a bright refractile centre.
        centre = np.clip(1 - rho * 2.2, 0, 1) * np.float32(rng.uniform(0, 0.5))
        dark = ramp(rho, radius, 1.2) * (np.float32(rng.uniform(0.4, 1.2)) - centre)
        parts.append((dark, rho <= 1, d * math.sin(a), d * math.cos(a)))
    absorbance, footprint = assemble(parts)
    absorbance = soften(rng, absorbance * np.float32(draw_contrast(rng)), 0.25)
    phase = absorbance * np.float32(rng.uniform(0.8, 2.0))
    y0, x0 = at.corner(absorbance)
    return Patch(y0, x0, absorbance, footprint, phase)


def _precipitate(rng: np.random.Generator, at: Where) -> Patch:
    size = at.px(log_uniform(rng, 15, 80))
    count = int(np.clip(rng.uniform(0.02, 0.12) * size * size, 12, 600))
    rho = blob(rng, size / 2, roughness=0.3, elongation=rng.uniform(0.5, 1), pad=8)
    inside = np.flatnonzero(rho.ravel() <= 1)
    dots = np.zeros(rho.shape, np.float32)
    if inside.size:
        pick = rng.choice(inside, size=min(count, inside.size), replace=False)
        py, px = np.unravel_index(pick, rho.shape)
        dots[py, px] = rng.uniform(0.4, 1.0, py.size)
        big = rng.random(py.size) < 0.3  # some crystals are 2x2 px
        dots[py[big] + 1, px[big]] = 1
        dots[py[big], px[big] + 1] = 1
    crystals = ndi.gaussian_filter(dots, rng.uniform(0.5, 0.9), truncate=3.0)
    peak = max(float(crystals.max()), 1e-6)
    crystals *= np.float32(rng.uniform(1.0, 3.0) * draw_contrast(rng)) / peak
    # The cluster region: every dot dilated by about the mean dot spacing, holes filled.
    spacing = max(1.5, size / math.sqrt(count) * 0.5)
    cloud = ndi.gaussian_filter((dots > 0).astype(np.float32), spacing, truncate=2.5)
    footprint = ndi.binary_fill_holes(cloud > math.exp(-2) / (2 * math.pi * spacing**2))
    y0, x0 = at.corner(dots)
    return Patch(y0, x0, crystals, footprint, crystals * np.float32(rng.uniform(0, 0.6)))


def _dirt(rng: np.random.Generator, at: Where) -> Patch:
    radius = at.px(log_uniform(rng, 40, 250)) / 2
    blur = rng.uniform(0.25, 0.6)  # relative edge width: dirt on the light path is out of focus
    half = int(radius * (1 + blur)) + 3
    y, x = grid(half, half, rng)
    squash = np.float32(rng.uniform(0.85, 1.0))
    r = np.sqrt(x * x + (y / squash) ** 2) / np.float32(radius)
    disc = np.clip((1 - r) / np.float32(blur) + 0.5, 0, 1)
    disc = disc * disc * (3 - 2 * disc)
    if rng.random() < 0.45:  # seen as a ring (out-of-focus particle), sometimes with fringes
        peak, width = np.float32(rng.uniform(0.6, 0.9)), np.float32(rng.uniform(0.1, 0.25))
        ring = np.exp(-(((r - peak) / width) ** 2))
        disc = disc * (np.float32(rng.uniform(0.1, 0.5)) + ring)
        if rng.random() < 0.5:
            disc *= 1 + np.float32(0.3) * np.cos(r * np.float32(rng.uniform(10, 25)))
    strength = rng.uniform(0.06, 0.25) * (0.6 if rng.random() < 0.3 else 1.0)
    absorbance = disc * np.float32(strength / max(float(disc.max()), 1e-6))
    y0, x0 = at.corner(r)
    return Patch(y0, x0, absorbance, r <= 1)


ARTIFACTS: dict[str, Callable[[np.random.Generator, Where], Patch]] = {
    "dust": _dust,
    "debris": _debris,
    "fibre": _fibre,
    "bubble": _bubble,
    "clump": _clump,
    "precipitate": _precipitate,
    "dirt": _dirt,
    "scratch": _scratch,
}
