"""Artifacts: one function per kind, each a patch of footprint, absorbance, path or shadow."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from engines.data.render_caustic.fields import smoothstep
from engines.data.synth import ARTIFACT_KINDS


@dataclass(slots=True)
class Piece:
    """One artifact drawn in a patch inside the frame; (y0, x0) is the patch's top-left corner."""

    y0: int
    x0: int
    footprint: np.ndarray  # bool: the mask truth
    absorbance: np.ndarray | None = None
    opd_um: np.ndarray | None = None
    z_um: float | None = None  # None: lies in the cell plane (the frame's defocus)
    shadow: np.ndarray | None = None  # out-of-focus transmission, multiplied onto the image


@dataclass(frozen=True, slots=True)
class Grid:
    """Pixel-centre coordinates (in frame pixels) of a patch clipped to the frame."""

    y0: int
    x0: int
    yy: np.ndarray  # (h, 1)
    xx: np.ndarray  # (1, w)

    @property
    def shape(self) -> tuple[int, int]:
        return self.yy.shape[0], self.xx.shape[1]


@dataclass(frozen=True, slots=True)
class Field:
    """What artifact drawing needs to know about the frame."""

    shape: tuple[int, int]
    um: float
    z_um: float

    @property
    def side_um(self) -> float:
        return min(self.shape) * self.um

    def grid(self, y_lo: float, y_hi: float, x_lo: float, x_hi: float) -> Grid | None:
        h, w = self.shape
        y0, y1 = max(math.floor(y_lo), 0), min(math.ceil(y_hi) + 1, h)
        x0, x1 = max(math.floor(x_lo), 0), min(math.ceil(x_hi) + 1, w)
        if y1 - y0 < 2 or x1 - x0 < 2:
            return None
        yy = np.arange(y0, y1, dtype=np.float32)[:, None]
        xx = np.arange(x0, x1, dtype=np.float32)[None, :]
        return Grid(y0, x0, yy, xx)

    def around(self, cy: float, cx: float, half: float) -> Grid | None:
        return self.grid(cy - half, cy + half, cx - half, cx + half)

    def point(self, rng: np.random.Generator) -> tuple[float, float]:
        return rng.uniform(0, self.shape[0]), rng.uniform(0, self.shape[1])


def _lognormal(
    rng: np.random.Generator, median: float, sigma: float, lo: float, hi: float
) -> float:
    return float(np.clip(median * math.exp(sigma * rng.standard_normal()), lo, max(lo, hi)))


def _outline(rng: np.random.Generator, corners: int, roughness: float):
    """A random star-shaped outline: relative radius as a function of angle, from `corners`
    random vertices (angular fragments) plus low harmonics (lumpy ones)."""
    angles = np.sort(rng.uniform(0, 2 * np.pi, corners))
    radii = rng.uniform(1 - roughness, 1.0, corners)
    orders = np.arange(2, 6)
    amps = roughness * 0.25 * rng.standard_normal(4) / orders
    phases = rng.uniform(0, 2 * np.pi, 4)

    def relative_radius(theta: np.ndarray) -> np.ndarray:
        r = np.interp(theta, angles, radii, period=2 * np.pi)
        for order, amp, phase in zip(orders, amps, phases, strict=True):
            r = r + amp * np.cos(order * theta + phase)
        return np.maximum(r, 0.3)

    return relative_radius


def _blob(
    grid: Grid, cy: float, cx: float, radius: float, outline, elongation: float, angle: float
) -> np.ndarray:
    """Signed distance-like depth (px) into a star-shaped blob: > 0 inside."""
    dy, dx = grid.yy - cy, grid.xx - cx
    u = dx * math.cos(angle) + dy * math.sin(angle)
    v = (-dx * math.sin(angle) + dy * math.cos(angle)) / elongation
    r = np.sqrt(u * u + v * v)
    theta = np.mod(np.arctan2(v, u), 2 * np.pi)
    return (radius * outline(theta) - r) * (0.5 + 0.5 * elongation)


def _dust(rng: np.random.Generator, f: Field) -> Piece | None:
    """A small, nearly opaque speck with a soft one-pixel edge."""
    radius = max(_lognormal(rng, 7.0, 0.55, 2.5, 60.0) / 2 / f.um, 2.8)
    cy, cx = f.point(rng)
    grid = f.around(cy, cx, radius * 1.5 + 3)
    if grid is None:
        return None
    outline = _outline(rng, 7, 0.3)
    depth = _blob(grid, cy, cx, radius, outline, rng.uniform(0.6, 1.0), rng.uniform(0, np.pi))
    cover = np.clip(0.5 + depth / 1.2, 0, 1).astype(np.float32)
    opacity = math.exp(rng.uniform(math.log(1.6), math.log(4.5)))
    return Piece(grid.y0, grid.x0, cover >= 0.5, absorbance=opacity * cover)


def _texture(rng: np.random.Generator, shape: tuple[int, int], sigma_px: float) -> np.ndarray:
    noise = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma_px)
    return noise / max(float(noise.std()), 1e-9)


def _debris(rng: np.random.Generator, f: Field) -> Piece | None:
    """An irregular, angular fragment: opaque with a mottled inside; some are refractile too."""
    area_um2 = _lognormal(rng, 700.0, 0.9, 60.0, 0.15 * f.side_um**2)
    radius = max(math.sqrt(area_um2 / math.pi) / f.um, 3.0)
    elongation = rng.uniform(0.35, 1.0)
    cy, cx = f.point(rng)
    grid = f.around(cy, cx, radius * 1.3 / math.sqrt(elongation) + 3)
    if grid is None:
        return None
    outline = _outline(rng, int(rng.integers(5, 12)), rng.uniform(0.25, 0.55))
    depth = _blob(grid, cy, cx, radius, outline, elongation, rng.uniform(0, np.pi))
    cover = np.clip(0.5 + depth / 1.5, 0, 1).astype(np.float32)
    mottle = np.clip(0.7 + 0.3 * _texture(rng, grid.shape, max(radius / 6, 1.0)), 0.2, 1.5)
    opacity = rng.uniform(0.5, 2.5)
    opd = None
    if rng.random() < 0.5:
        opd = (rng.uniform(0.2, 1.0) * smoothstep(depth / max(radius * 0.3, 2))).astype(np.float32)
    return Piece(grid.y0, grid.x0, cover >= 0.5, absorbance=opacity * cover * mottle, opd_um=opd)


def _path(rng: np.random.Generator, f: Field, length_px: float, wiggle: float) -> np.ndarray:
    """Points every half pixel along a gently curving path (a fibre), shape (n, 2) as (y, x)."""
    n = max(int(length_px / 0.5), 8)
    wander = np.cumsum(rng.normal(0, wiggle, n))  # a random walk of the heading...
    bend = rng.normal(0, wiggle * 0.3) * np.arange(n)  # ...on top of a steady curl
    heading = rng.uniform(0, 2 * np.pi) + ndi.gaussian_filter1d(wander + bend, 20)
    steps = 0.5 * np.stack([np.sin(heading), np.cos(heading)], axis=1)
    start = np.array(f.point(rng)) - steps.sum(axis=0) * rng.uniform(0, 1)
    return start + np.cumsum(steps, axis=0)


def _tube(grid: Grid, points: np.ndarray, sigma_px: float) -> np.ndarray:
    """A tube of 0..1 profile around dense path points: splat, blur, normalise by the peak a
    straight line of that point density would give."""
    h, w = grid.shape
    iy = np.rint(points[:, 0] - grid.y0).astype(np.int64)
    ix = np.rint(points[:, 1] - grid.x0).astype(np.int64)
    ok = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
    density = np.bincount(iy[ok] * w + ix[ok], minlength=h * w).reshape(h, w).astype(np.float32)
    line_peak = 2.0 / (math.sqrt(2 * np.pi) * sigma_px)  # 2 points per pixel of length
    return np.minimum(ndi.gaussian_filter(density, sigma_px, truncate=3.0) / line_peak, 1.0)


def _fibre(rng: np.random.Generator, f: Field) -> Piece | None:
    """A long, thin, curving opaque thread (lint, hair); some are translucent and refract."""
    width_px = max(_lognormal(rng, 6.0, 0.6, 2.0, 45.0) / f.um, 2.0)
    length_px = _lognormal(rng, 250.0, 0.8, 40.0, 2.5 * f.side_um) / f.um
    points = _path(rng, f, length_px, wiggle=rng.uniform(0.002, 0.03))
    sigma = width_px / 2.35  # the half-maximum width of the blurred line is the fibre width
    lo, hi = points.min(axis=0) - 3 * sigma - 2, points.max(axis=0) + 3 * sigma + 2
    grid = f.grid(lo[0], hi[0], lo[1], hi[1])
    if grid is None:
        return None
    profile = _tube(grid, points, sigma)
    opacity = rng.uniform(0.4, 2.2)
    opd = rng.uniform(0.2, 1.2) * profile if rng.random() < 0.4 else None
    absorbance = opacity * np.sqrt(profile)  # a round cross-section
    return Piece(grid.y0, grid.x0, profile >= 0.5, absorbance=absorbance, opd_um=opd)


def _bubble(rng: np.random.Generator, f: Field) -> Piece | None:
    """An air bubble: a lens of strongly negative optical path. Its steep meniscus bends rays out
    of the aperture (thick dark rim); its centre focuses light at its own defocus (bright)."""
    radius_um = _lognormal(rng, 30.0, 0.7, 8.0, 0.45 * f.side_um)
    radius = max(radius_um / f.um, 4.0)
    cy, cx = f.point(rng)
    grid = f.around(cy, cx, radius + 3)
    if grid is None:
        return None
    rho2 = ((grid.yy - cy) ** 2 + (grid.xx - cx) ** 2) / radius**2
    thickness_um = min(2 * radius_um, rng.uniform(30.0, 150.0))  # flattened under the coverslip
    depth_um = 0.33 * thickness_um  # air (n = 1) in medium (n = 1.33)
    opd = (-depth_um * np.sqrt(np.clip(1 - rho2, 0, 1))).astype(np.float32)
    centre_curvature = depth_um / radius_um**2  # 1/um, positive: a diverging lens of air
    z = -rng.uniform(0.3, 0.9) / centre_curvature  # where its virtual focus makes a bright centre
    return Piece(grid.y0, grid.x0, rho2 <= 1.0, absorbance=0.02 * (rho2 <= 1), opd_um=opd, z_um=z)


def _clump(rng: np.random.Generator, f: Field) -> Piece | None:
    """A heap of detached, rounded cells: many high-phase, absorbing domes; those nearer the
    middle sit higher. Composited by maximum height (the top cell is what light sees)."""
    area_um2 = _lognormal(rng, 2500.0, 1.1, 300.0, 0.49 * f.side_um**2)
    cell_um = rng.uniform(4.0, 9.0)
    cell_um = max(cell_um, math.sqrt(area_um2 / (math.pi * 1200)))  # at most ~1500 cells
    count = max(int(1.6 * area_um2 / (math.pi * cell_um**2)), 3)
    heap_px = math.sqrt(area_um2 / math.pi) / f.um
    cell_px = max(cell_um / f.um, 2.5)
    cy, cx = f.point(rng)
    grid = f.around(cy, cx, 1.4 * heap_px + 2 * cell_px + 3)
    if grid is None:
        return None
    outline = _outline(rng, 6, 0.35)
    theta = rng.uniform(0, 2 * np.pi, count)
    reach = heap_px * np.sqrt(rng.uniform(0, 1, count)) * outline(theta)
    ys, xs = cy + reach * np.sin(theta), cx + reach * np.cos(theta)
    lift = rng.uniform(0.3, 2.0) * (1 - (reach / (1.4 * heap_px)) ** 2)
    opd = np.zeros(grid.shape, np.float32)
    absorbance = np.zeros(grid.shape, np.float32)
    footprint = np.zeros(grid.shape, bool)
    tall, dark = rng.uniform(0.4, 1.2), rng.uniform(0.15, 0.6)
    for y, x, up in zip(ys, xs, lift, strict=True):
        r = cell_px * rng.uniform(0.75, 1.25)
        top = up + tall * rng.uniform(0.7, 1.3)
        _stamp_cell(grid, opd, absorbance, footprint, y, x, r, top, dark)
    footprint = ndi.binary_fill_holes(ndi.binary_closing(footprint, iterations=2))
    return Piece(grid.y0, grid.x0, footprint, absorbance=absorbance, opd_um=opd)


def _stamp_cell(
    grid: Grid,
    opd: np.ndarray,
    absorbance: np.ndarray,
    footprint: np.ndarray,
    y: float,
    x: float,
    r: float,
    top_um: float,
    dark: float,
) -> None:
    """One rounded cell (a dome) into the heap's patch."""
    y0, y1 = max(int(y - r - grid.y0), 0), min(int(y + r - grid.y0) + 2, opd.shape[0])
    x0, x1 = max(int(x - r - grid.x0), 0), min(int(x + r - grid.x0) + 2, opd.shape[1])
    if y0 >= y1 or x0 >= x1:
        return
    dy = grid.yy[y0:y1] - y
    dx = grid.xx[:, x0:x1] - x
    dome = np.sqrt(np.clip(1 - (dy * dy + dx * dx) / (r * r), 0, 1))
    where = (slice(y0, y1), slice(x0, x1))
    np.maximum(opd[where], top_um * dome, out=opd[where])
    absorbance[where] += dark * dome
    footprint[where] |= dome > 0


def _crystal(
    grid: Grid, cy: float, cx: float, size_px: float, rng: np.random.Generator
) -> np.ndarray:
    """Depth (px) into a convex polygon: the distance to its nearest edge (< 0 outside)."""
    sides = int(rng.choice([4, 4, 5, 6, 6]))
    turn = rng.uniform(0, 2 * np.pi)
    aspect = rng.uniform(1.0, 3.0)
    corners = turn + np.arange(sides) * 2 * np.pi / sides + rng.uniform(-0.15, 0.15, sides)
    vy = size_px * np.sin(corners) / aspect
    vx = size_px * np.cos(corners)
    c, s = math.cos(turn), math.sin(turn)
    py, px = cy + vx * s + vy * c, cx + vx * c - vy * s
    area2 = float(np.sum(px * np.roll(py, -1) - np.roll(px, -1) * py))
    orient = 1.0 if area2 > 0 else -1.0  # so that the inside is on the positive side of each edge
    depth = np.full(grid.shape, np.inf, np.float32)
    for i in range(sides):
        ey, ex = py[(i + 1) % sides] - py[i], px[(i + 1) % sides] - px[i]
        norm = math.hypot(ey, ex) or 1.0
        signed = orient * (ex * (grid.yy - py[i]) - ey * (grid.xx - px[i])) / norm
        depth = np.minimum(depth, signed)
    return depth


def _needles(
    grid: Grid, cy: float, cx: float, size_px: float, um: float, rng: np.random.Generator
) -> np.ndarray:
    """A bundle of thin straight needles radiating from one point: 0..1 profile."""
    count = int(rng.integers(8, 40))
    spread = rng.uniform(0.4, 2 * np.pi)
    base = rng.uniform(0, 2 * np.pi)
    half_w = max(rng.uniform(0.4, 1.2) / um, 0.9)
    profile = np.zeros(grid.shape, np.float32)
    for angle in base + rng.uniform(-spread / 2, spread / 2, count):
        length = size_px * rng.uniform(0.4, 1.0)
        uy, ux = math.sin(angle), math.cos(angle)
        along = np.clip((grid.yy - cy) * uy + (grid.xx - cx) * ux, 0, length)
        dist = np.hypot(grid.yy - cy - along * uy, grid.xx - cx - along * ux)
        np.maximum(profile, np.clip(1.5 - dist / half_w, 0, 1), out=profile)
    return profile


def _precipitate(rng: np.random.Generator, f: Field) -> Piece | None:
    """Crystals: a cluster of faceted polygons with dark cores (each facet shaded differently,
    a pyramid of high optical path: caustic lines on the ridges), or a bundle of needles."""
    size_px = max(_lognormal(rng, 10.0, 0.5, 3.0, 60.0) / f.um, 4.0)
    cy, cx = f.point(rng)
    spread = size_px * rng.uniform(0.0, 2.5)
    grid = f.around(cy, cx, spread + size_px * 1.6 + 3)
    if grid is None:
        return None
    if rng.random() < 0.3:
        profile = _needles(grid, cy, cx, size_px * 2, f.um, rng)
        return Piece(grid.y0, grid.x0, profile >= 0.5, absorbance=rng.uniform(0.8, 2.0) * profile,
                      opd_um=rng.uniform(0.1, 0.5) * profile)
    opd = np.zeros(grid.shape, np.float32)
    absorbance = np.zeros(grid.shape, np.float32)
    for _ in range(int(rng.integers(1, 12)) if spread > 0 else 1):
        y, x = cy + rng.normal(0, spread / 2 + 1e-6), cx + rng.normal(0, spread / 2 + 1e-6)
        size = size_px * rng.uniform(0.4, 1.0)
        depth = _crystal(grid, y, x, size, rng)
        inner = np.clip(depth / (0.5 * size), 0, 1)
        cover = np.clip(0.5 + depth, 0, 1)
        core = rng.uniform(0.8, 2.5) * inner**1.5 + rng.uniform(0.15, 0.6) * cover
        np.maximum(absorbance, core, out=absorbance)
        np.maximum(opd, rng.uniform(0.3, 1.2) * inner, out=opd)
    return Piece(grid.y0, grid.x0, absorbance >= 0.1, absorbance=absorbance, opd_um=opd)


def _dirt(rng: np.random.Generator, f: Field) -> Piece | None:
    """Dirt far out of focus (on the coverslip or condenser): a broad, soft, faint shadow."""
    radius = _lognormal(rng, 60.0, 0.6, 15.0, 0.35 * f.side_um) / f.um
    radius = max(radius, 5.0)
    soft = radius * rng.uniform(0.25, 0.6)
    cy, cx = f.point(rng)
    grid = f.around(cy, cx, radius * 1.3 + soft + 3)
    if grid is None:
        return None
    outline = _outline(rng, 6, 0.25)
    depth = _blob(grid, cy, cx, radius, outline, rng.uniform(0.6, 1.0), rng.uniform(0, np.pi))
    profile = smoothstep(0.5 + depth / (2 * soft))  # 0.5 on the outline, 1 well inside
    contrast = rng.uniform(0.03, 0.15)
    shadow = (1 - contrast * profile).astype(np.float32)
    return Piece(grid.y0, grid.x0, profile >= 0.5, shadow=shadow)


def _scratch(rng: np.random.Generator, f: Field) -> Piece | None:
    """A straight groove in the dish: a thin line of negative optical path (a strong caustic
    line, bright or dark by focus) with a little absorption."""
    length = _lognormal(rng, 0.8, 0.5, 0.3, 1.5) * max(f.shape)
    width_px = max(rng.uniform(1.0, 4.0) / f.um, 1.6)
    angle = rng.uniform(0, np.pi)
    cy, cx = f.point(rng)
    uy, ux = math.sin(angle), math.cos(angle)
    ey, ex = cy + uy * length / 2, cx + ux * length / 2
    sy, sx = cy - uy * length / 2, cx - ux * length / 2
    pad = 2 * width_px + 3
    grid = f.grid(min(sy, ey) - pad, max(sy, ey) + pad, min(sx, ex) - pad, max(sx, ex) + pad)
    if grid is None:
        return None
    along = (grid.yy - sy) * uy + (grid.xx - sx) * ux
    across = np.abs(-(grid.yy - sy) * ux + (grid.xx - sx) * uy)
    ends = np.clip(np.minimum(along, length - along) / 2, 0, 1)
    sigma = width_px / 2.35
    profile = (np.exp(-0.5 * (across / sigma) ** 2) * ends).astype(np.float32)
    strength = rng.uniform(0.4, 1.3)  # peak |z * curvature| of the groove
    groove_um = strength * (sigma * f.um) ** 2 / abs(f.z_um)
    footprint = (across <= max(width_px / 2, 1.0)) & (ends > 0)
    return Piece(grid.y0, grid.x0, footprint, absorbance=rng.uniform(0.03, 0.2) * profile,
                  opd_um=-groove_um * profile)


DRAW = {
    "dust": _dust,
    "debris": _debris,
    "fibre": _fibre,
    "bubble": _bubble,
    "clump": _clump,
    "precipitate": _precipitate,
    "dirt": _dirt,
    "scratch": _scratch,
}
assert set(DRAW) == set(ARTIFACT_KINDS)
