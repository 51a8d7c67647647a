"""Artifacts: one function per kind, each a transmission factor over a window of the frame."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.draw import polygon as fill_polygon

from engines.data.render_monolayer.textures import (
    F32,
    blob,
    fractal_noise,
    loguniform,
    ring,
    speckle_field,
    window,
)
from engines.data.synth import ARTIFACT_KINDS


@dataclass(frozen=True)
class Drawn:
    """One artifact: its transmission factor over a window of the frame (1 = no effect)."""

    rows: slice
    cols: slice
    factor: np.ndarray


def _random_centre(rng: np.random.Generator, shape: tuple[int, int]) -> tuple[float, float]:
    return float(rng.uniform(0, shape[0])), float(rng.uniform(0, shape[1]))


def dust(rng: np.random.Generator, shape: tuple[int, int], um: float) -> Drawn | None:
    """Small, very dark, sharp specks; sometimes a tight group of them (one artifact)."""
    specks = 1 if rng.random() < 0.7 else int(rng.integers(2, 7))
    radius = math.sqrt(loguniform(rng, 20, 400) / math.pi) / um
    spread = radius * rng.uniform(1.5, 4) if specks > 1 else 0.0
    win = window(shape, *_random_centre(rng, shape), radius * 1.6 + spread + 3)
    if win is None:
        return None
    factor = np.ones(win.shape, F32)
    for i in range(specks):
        r = radius * (1.0 if i == 0 else rng.uniform(0.3, 0.8))
        dy, dx = rng.normal(0, spread / 2 + 1e-6, 2) if i else (0.0, 0.0)
        speck = blob(
            rng,
            win,
            r,
            roughness=rng.uniform(0.1, 0.35),
            elongation=rng.uniform(0.6, 1),
            edge_px=0.7,
            dy=dy,
            dx=dx,
        )
        factor *= 1 - rng.uniform(0.5, 0.92) * speck
    return Drawn(win.rows, win.cols, factor)


def debris(rng: np.random.Generator, shape: tuple[int, int], um: float) -> Drawn | None:
    """Irregular dark fragments with an inner texture and a few bright chips."""
    radius = math.sqrt(loguniform(rng, 80, 6000) / math.pi) / um
    win = window(shape, *_random_centre(rng, shape), radius * 2.2 + 4)
    if win is None:
        return None
    occupancy = np.zeros(win.shape, F32)
    for _ in range(int(rng.integers(1, 4))):
        dy, dx = rng.normal(0, radius * 0.4, 2)
        part = blob(
            rng,
            win,
            radius * rng.uniform(0.5, 1.0),
            roughness=rng.uniform(0.3, 0.6),
            elongation=rng.uniform(0.35, 1.0),
            edge_px=rng.uniform(0.7, 2.0),
            dy=dy,
            dx=dx,
        )
        np.maximum(occupancy, part, out=occupancy)
    texture = 0.75 + 0.35 * fractal_noise(rng, win.shape, max(radius / 3, 3), octaves=3)
    chips = speckle_field(rng, win.shape, max(radius / 10, 0.7), 0.3)
    depth = rng.uniform(0.25, 0.7)
    factor = 1 - np.clip(depth * texture, 0.05, 0.95) * occupancy + 0.3 * chips * occupancy
    return Drawn(win.rows, win.cols, factor.astype(F32))


def fibre(rng: np.random.Generator, shape: tuple[int, int], um: float) -> Drawn | None:
    """A long thin curved dark thread (lint, hair), up to field-crossing, often light-cored."""
    field_px = math.hypot(*shape)
    length = min(loguniform(rng, 80, 2500) / um, field_px * 1.5)
    half_width = loguniform(rng, 1.5, 15) / um / 2
    path_y, path_x = smooth_curve(rng, length, turning=rng.uniform(0.2, 3.0))
    cy, cx = _random_centre(rng, shape)
    path_y, path_x = path_y + cy - path_y.mean(), path_x + cx - path_x.mean()
    pad = half_width + 4
    top, bottom = int(max(0, path_y.min() - pad)), int(min(shape[0], path_y.max() + pad + 1))
    left, right = int(max(0, path_x.min() - pad)), int(min(shape[1], path_x.max() + pad + 1))
    if bottom <= top or right <= left:
        return None
    line = np.ones((bottom - top, right - left), bool)
    iy, ix = np.round(path_y - top).astype(np.int64), np.round(path_x - left).astype(np.int64)
    keep = (iy >= 0) & (iy < line.shape[0]) & (ix >= 0) & (ix < line.shape[1])
    if not keep.any():
        return None
    line[iy[keep], ix[keep]] = False
    distance = ndi.distance_transform_edt(line).astype(F32)
    body = np.clip(half_width - distance + 0.5, 0, 1)
    core = np.exp(-((distance / max(half_width * 0.4, 0.5)) ** 2)) * rng.uniform(0, 0.6)
    factor = 1 - rng.uniform(0.3, 0.85) * body * (1 - core)
    return Drawn(slice(top, bottom), slice(left, right), factor.astype(F32))


def smooth_curve(
    rng: np.random.Generator, length: float, turning: float
) -> tuple[np.ndarray, np.ndarray]:
    """Points every ~0.7 px along a curve whose heading wanders smoothly by ~`turning` radians."""
    n = max(8, int(length / 0.7))
    bend = ndi.gaussian_filter1d(
        rng.standard_normal(n), sigma=n / rng.uniform(3, 12), mode="nearest"
    )
    bend *= turning / max(float(np.abs(np.cumsum(bend)).max()), 1e-6)
    heading = rng.uniform(0, 2 * np.pi) + np.cumsum(bend)
    return np.cumsum(np.sin(heading) * 0.7), np.cumsum(np.cos(heading) * 0.7)


def bubble(rng: np.random.Generator, shape: tuple[int, int], um: float) -> Drawn | None:
    """Discs: thick dark rim, thin bright inner ring, bright or grey centre; sometimes several."""
    radius = loguniform(rng, 10, 150) / um
    count = 1 if rng.random() < 0.7 else int(rng.integers(2, 5))
    win = window(shape, *_random_centre(rng, shape), radius * (1.3 + 0.8 * (count > 1)) + 4)
    if win is None:
        return None
    factor = np.ones(win.shape, F32)
    for i in range(count):
        r0 = radius * (1.0 if i == 0 else rng.uniform(0.3, 0.9))
        dy, dx = rng.normal(0, radius * 0.5, 2) if i else (0.0, 0.0)
        r = np.sqrt((win.yy - dy) ** 2 + (win.xx - dx) ** 2)
        rim = r0 * rng.uniform(0.08, 0.25)
        dark_rim = np.clip((r0 - r) / 0.8 + 0.5, 0, 1) * np.clip(
            (r - (r0 - rim)) / (rim * 0.35) + 0.5, 0, 1
        )
        centre = np.clip((r0 - rim - r) / 1.0 + 0.5, 0, 1)
        shade = rng.uniform(1.05, 1.3) if rng.random() < 0.6 else rng.uniform(0.85, 0.98)
        one = (1 - rng.uniform(0.4, 0.75) * dark_rim) * (1 + (shade - 1) * centre)
        one += rng.uniform(0.1, 0.3) * ring(r, r0 - rim * 1.05, max(rim * 0.12, 0.6))
        factor *= one.astype(F32)
    return Drawn(win.rows, win.cols, factor)


def clump(rng: np.random.Generator, shape: tuple[int, int], um: float) -> Drawn | None:
    """Detached cells piled up: a dense aggregate of small rounded blobs, dark where they stack."""
    radius = loguniform(rng, 20, 300) / um
    cell_r = rng.uniform(4, 8) / um
    win = window(shape, *_random_centre(rng, shape), radius * 1.5 + cell_r * 2 + 4)
    if win is None:
        return None
    outline = blob(
        rng,
        win,
        radius,
        roughness=rng.uniform(0.15, 0.4),
        elongation=rng.uniform(0.5, 1.0),
        edge_px=cell_r,
    )
    inside_y, inside_x = np.nonzero(outline > 0.5)
    if inside_y.size == 0:
        return None
    piling = rng.uniform(1.0, 2.5)
    count = int(min(3000, max(3, piling * inside_y.size / (math.pi * cell_r**2))))
    pick = rng.integers(0, inside_y.size, count)
    density = np.zeros(win.shape, F32)
    stamps = [
        rounded_cell_stamp(
            cell_r * rng.uniform(0.7, 1.25), rng.uniform(0.25, 0.7), rng.uniform(-0.35, 0.4)
        )
        for _ in range(8)
    ]
    for y, x, which in zip(
        inside_y[pick], inside_x[pick], rng.integers(0, len(stamps), count), strict=True
    ):
        add_stamp(density, stamps[which], int(y), int(x))
    density += rng.uniform(0.05, 0.4) * ndi.gaussian_filter(
        outline, cell_r
    )  # stacked cells absorb more
    return Drawn(win.rows, win.cols, np.exp(-density).astype(F32))


def rounded_cell_stamp(radius: float, rim_density: float, centre_density: float) -> np.ndarray:
    """Optical density of one rounded cell: body, dark rim, bright (negative) or dark centre."""
    half = math.ceil(radius * 1.3) + 1
    grid = np.arange(-half, half + 1, dtype=F32)
    r = np.sqrt(grid[:, None] ** 2 + grid[None, :] ** 2)
    inside = np.clip(radius - r + 0.5, 0, 1)
    centre = np.exp(-((r / (radius * 0.55)) ** 2))
    rim = ring(r, radius * 0.85, max(radius * 0.25, 0.8))
    return (0.08 * inside + rim_density * rim + centre_density * centre).astype(F32)


def add_stamp(canvas: np.ndarray, stamp: np.ndarray, y: int, x: int) -> None:
    half = stamp.shape[0] // 2
    top, left = y - half, x - half
    t0, l0 = max(0, -top), max(0, -left)
    t1 = min(stamp.shape[0], canvas.shape[0] - top)
    l1 = min(stamp.shape[1], canvas.shape[1] - left)
    if t1 > t0 and l1 > l0:
        canvas[top + t0 : top + t1, left + l0 : left + l1] += stamp[t0:t1, l0:l1]


def precipitate(rng: np.random.Generator, shape: tuple[int, int], um: float) -> Drawn | None:
    """Crystals: dark angular polygons with bright facets, or clusters of needles from one point."""
    size = loguniform(rng, 4, 60) / um
    win = window(shape, *_random_centre(rng, shape), size * 1.6 + 4)
    if win is None:
        return None
    cy, cx = -float(win.yy[0, 0]), -float(win.xx[0, 0])  # the centre in window coordinates
    factor = np.ones(win.shape, F32)
    if rng.random() < 0.6:
        for _ in range(int(rng.integers(1, 6))):
            oy, ox = rng.normal(0, size * 0.35, 2)
            faceted_crystal(rng, factor, cy + oy, cx + ox, size * rng.uniform(0.3, 0.7))
    else:
        needle_cluster(rng, factor, cy, cx, size)
    return Drawn(win.rows, win.cols, factor)


def faceted_crystal(
    rng: np.random.Generator, factor: np.ndarray, cy: float, cx: float, radius: float
) -> None:
    corners = int(rng.integers(3, 8))
    theta = np.sort(rng.uniform(0, 2 * np.pi, corners))
    r = radius * rng.uniform(0.6, 1.0, corners)
    ys, xs = cy + r * np.sin(theta), cx + r * np.cos(theta)
    hub_y, hub_x = cy + rng.normal(0, radius * 0.15), cx + rng.normal(0, radius * 0.15)
    for i in range(corners):  # each facet of the fan catches the light differently
        j = (i + 1) % corners
        rr, cc = fill_polygon([hub_y, ys[i], ys[j]], [hub_x, xs[i], xs[j]], shape=factor.shape)
        factor[rr, cc] *= rng.uniform(1.1, 1.45) if rng.random() < 0.3 else rng.uniform(0.25, 0.7)


def needle_cluster(
    rng: np.random.Generator, factor: np.ndarray, cy: float, cx: float, size: float
) -> None:
    for _ in range(int(rng.integers(4, 25))):
        theta = rng.uniform(0, 2 * np.pi)
        length = size * rng.uniform(0.4, 1.4)
        half = max(rng.uniform(0.3, 1.2) / 2 * size / 20, 0.6)
        ty, tx = cy + length * math.sin(theta), cx + length * math.cos(theta)
        ny, nx = math.cos(theta) * half, -math.sin(theta) * half
        rr, cc = fill_polygon(
            [cy + ny, ty + ny, ty - ny, cy - ny],
            [cx + nx, tx + nx, tx - nx, cx - nx],
            shape=factor.shape,
        )
        factor[rr, cc] *= rng.uniform(0.3, 0.7) if rng.random() < 0.8 else rng.uniform(1.1, 1.3)


def dirt(rng: np.random.Generator, shape: tuple[int, int], um: float) -> Drawn | None:
    """Out-of-focus dirt on the optics: large, soft, faint (3-15 %) dark blob, maybe fringed."""
    radius = loguniform(rng, 25, 250) / um
    win = window(shape, *_random_centre(rng, shape), radius * 1.6 + 4)
    if win is None:
        return None
    contrast = rng.uniform(0.03, 0.15)
    soft = blob(
        rng,
        win,
        radius,
        roughness=rng.uniform(0.05, 0.2),
        elongation=rng.uniform(0.7, 1),
        edge_px=radius * rng.uniform(0.2, 0.6),
    )
    if rng.random() < 0.4:  # a defocused speck shows concentric fringes
        r = np.sqrt(win.yy**2 + win.xx**2)
        fringes = 0.5 + 0.5 * np.cos(2 * np.pi * r / (radius * rng.uniform(0.2, 0.4)))
        soft = soft * (0.4 + 0.6 * fringes)
    return Drawn(win.rows, win.cols, (1 - contrast * soft).astype(F32))


def scratch(rng: np.random.Generator, shape: tuple[int, int], um: float) -> Drawn | None:
    """A long straight thin line, bright or dark, across part of the field."""
    length = min(loguniform(rng, 150, 2000) / um, math.hypot(*shape) * 1.2)
    half_width = rng.uniform(0.5, 2.5) / um / 2
    theta = rng.uniform(0, np.pi)
    cy, cx = _random_centre(rng, shape)
    dy, dx = math.sin(theta) * length / 2, math.cos(theta) * length / 2
    pad = half_width + 3
    top, bottom = (
        int(max(0, min(cy - dy, cy + dy) - pad)),
        int(min(shape[0], max(cy - dy, cy + dy) + pad + 1)),
    )
    left, right = (
        int(max(0, min(cx - dx, cx + dx) - pad)),
        int(min(shape[1], max(cx - dx, cx + dx) + pad + 1)),
    )
    if bottom <= top or right <= left:
        return None
    yy = np.arange(top, bottom, dtype=F32)[:, None] - F32(cy)
    xx = np.arange(left, right, dtype=F32)[None, :] - F32(cx)
    along = yy * F32(math.sin(theta)) + xx * F32(math.cos(theta))
    across = np.abs(-yy * F32(math.cos(theta)) + xx * F32(math.sin(theta)))
    line = np.clip(half_width - across + 0.5, 0, 1) * np.clip(length / 2 - np.abs(along), 0, 1)
    contrast = rng.uniform(0.1, 0.45) * (1 if rng.random() < 0.5 else -1)
    return Drawn(slice(top, bottom), slice(left, right), (1 + contrast * line).astype(F32))


ARTIFACT_DRAWERS: dict[
    str, Callable[[np.random.Generator, tuple[int, int], float], Drawn | None]
] = {
    "dust": dust,
    "debris": debris,
    "fibre": fibre,
    "bubble": bubble,
    "clump": clump,
    "precipitate": precipitate,
    "dirt": dirt,
    "scratch": scratch,
}
assert set(ARTIFACT_DRAWERS) == set(ARTIFACT_KINDS)
