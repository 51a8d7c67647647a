"""Confluent monolayers and epithelial islands: cells as the tiles of a Voronoi field."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

from engines.data.render_monolayer.look import CellLook
from engines.data.render_monolayer.textures import F32, fractal_noise, smooth_noise


def voronoi(
    rng: np.random.Generator, shape: tuple[int, int], spacing: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Worley field: per pixel the nearest seed's id and (F2 - F1) / 2, the distance to the nearest
    cell border. Seeds sit on a jittered grid, rotated, stretched and warped so no grid axis shows.
    Returns (label, border_px, seed_y, seed_x), seeds in px of the frame."""
    h, w = shape
    angle = rng.uniform(0, np.pi)
    stretch = rng.uniform(1.0, 1.7)  # cells elongated along one direction, as in many monolayers
    c, s = F32(math.cos(angle)), F32(math.sin(angle))
    ys = np.arange(h, dtype=F32)[:, None] - F32(h / 2)
    xs = np.arange(w, dtype=F32)[None, :] - F32(w / 2)
    warp = F32(spacing * rng.uniform(0.1, 0.3))
    v = (ys * c - xs * s) + warp * smooth_noise(rng, shape, spacing * 2)
    u = (ys * s + xs * c) / F32(stretch) + warp * smooth_noise(rng, shape, spacing * 2)
    half = math.hypot(h, w) / 2 + 2 * spacing
    n_grid = int(2 * half / spacing) + 3
    seed_v = (
        (
            (np.arange(n_grid)[:, None] - 1 + rng.uniform(0.1, 0.9, (n_grid, n_grid))) * spacing
            - half
        )
        .astype(F32)
        .ravel()
    )
    seed_u = (
        (
            (np.arange(n_grid)[None, :] - 1 + rng.uniform(0.1, 0.9, (n_grid, n_grid))) * spacing
            - half
        )
        .astype(F32)
        .ravel()
    )
    gv = np.clip(((v + half) / spacing).astype(np.int64) + 1, 1, n_grid - 2)
    gu = np.clip(((u + half) / spacing).astype(np.int64) + 1, 1, n_grid - 2)
    f1 = np.full(shape, np.inf, F32)
    f2 = np.full(shape, np.inf, F32)
    label = np.zeros(shape, np.int64)
    for ov in (-1, 0, 1):
        for ou in (-1, 0, 1):
            idx = (gv + ov) * n_grid + (gu + ou)
            d = (v - seed_v[idx]) ** 2 + (u - seed_u[idx]) ** 2
            closer = d < f1
            f2 = np.where(closer, f1, np.minimum(f2, d))
            f1 = np.where(closer, d, f1)
            label = np.where(closer, idx, label)
    border = (np.sqrt(f2) - np.sqrt(f1)) / 2
    # seeds back in frame coordinates (the small warp is ignored: nuclei sit a little off-centre)
    seed_y = seed_v * c + seed_u * F32(stretch) * s + F32(h / 2)
    seed_x = -seed_v * s + seed_u * F32(stretch) * c + F32(w / 2)
    return label, border.astype(F32), seed_y, seed_x


def tiled_cells(
    rng: np.random.Generator,
    shape: tuple[int, int],
    um: float,
    look: CellLook,
    granules: np.ndarray,
    vacuoles: np.ndarray | None,
) -> np.ndarray:
    """Confluent monolayer or epithelial islands of Voronoi cells.

    The Voronoi field is computed on a coarser grid when cells are big."""
    spacing_px = look.cell_um / um
    step = max(1, int(spacing_px / 9))  # keep >= ~9 px per cell on the coarse grid
    coarse = (-(-shape[0] // step), -(-shape[1] // step))
    label_c, border_c, seed_y, seed_x = voronoi(rng, coarse, spacing_px / step)
    n = seed_y.size
    seed_y, seed_x = seed_y * step + (step - 1) / 2, seed_x * step + (step - 1) / 2
    present = cell_presence(rng, shape, um, look, seed_y, seed_x)
    # per-cell values are looked up on the coarse grid and upsampled linearly, so that nothing
    # shows the coarse grid's staircase; only the nuclei use the nearest-cell label at full size
    smooth = Upsampler(coarse, shape, step)
    label = smooth.nearest(label_c)
    body = smooth(present[label_c].astype(F32))
    border = smooth(border_c, soften=False) * F32(step)
    tone = look.body * rng.uniform(0.5, 1.5, n).astype(F32) * present
    layer = 1 - smooth(tone[label_c])
    membrane_px = max(rng.uniform(0.4, 1.2) / um, 0.8)
    layer += F32(look.membrane) * np.exp(-((border / membrane_px) ** 2)) * body
    ys = np.arange(shape[0], dtype=F32)[:, None]
    xs = np.arange(shape[1], dtype=F32)[None, :]
    dy = ys - seed_y[label]
    dx = xs - seed_x[label]
    layer -= nuclei(rng, dy, dx, label, n, spacing_px, look) * body
    perinuclear = np.exp(-(dy * dy + dx * dx) / F32((0.45 * spacing_px) ** 2)) * body
    layer -= (
        F32(look.granular) * rng.uniform(0.3, 1.0, n).astype(F32)[label] * granules * perinuclear
    )
    if vacuoles is not None:
        layer += F32(look.vacuoles) * vacuoles * perinuclear
    if look.stained:
        stain = smooth((stain_per_cell(rng, n, look) * present)[label_c])
        thin_edge = 1 - 0.6 * np.exp(
            -border / F32(0.7 / um)
        )  # less cytoplasm, less stain, at cell borders
        layer *= 1 - stain * thin_edge * (1 + 0.5 * granules)
    layer -= F32(look.edge) * free_edge(body, rng.uniform(1.0, 3.0) / um)
    return layer.astype(F32)


class Upsampler:
    """Coarse grid (cells `step` px wide) to full frame: linear interpolation as two matmuls."""

    def __init__(self, coarse: tuple[int, int], shape: tuple[int, int], step: int) -> None:
        self.shape, self.step = shape, step
        self.rows = _linear_matrix(shape[0], coarse[0], step)
        self.cols = _linear_matrix(shape[1], coarse[1], step)

    def __call__(self, values: np.ndarray, soften: bool = True) -> np.ndarray:
        if self.step == 1:
            return values.astype(F32)
        values = values.astype(F32)
        if (
            soften
        ):  # per-cell steps follow coarse pixels; a slight blur turns the staircase into a curve
            values = ndi.gaussian_filter(values, 0.8)
        return self.rows @ values @ self.cols.T

    def nearest(self, values: np.ndarray) -> np.ndarray:
        return np.repeat(np.repeat(values, self.step, 0), self.step, 1)[
            : self.shape[0], : self.shape[1]
        ]


def _linear_matrix(n_out: int, n_coarse: int, step: int) -> np.ndarray:
    t = np.clip((np.arange(n_out) + 0.5) / step - 0.5, 0, n_coarse - 1)
    i = np.minimum(np.floor(t).astype(np.int64), max(n_coarse - 2, 0))
    f = (t - i).astype(F32)
    weights = np.zeros((n_out, n_coarse), F32)
    weights[np.arange(n_out), i] = 1 - f
    weights[np.arange(n_out), np.minimum(i + 1, n_coarse - 1)] += f
    return weights


def cell_presence(
    rng: np.random.Generator,
    shape: tuple[int, int],
    um: float,
    look: CellLook,
    seed_y: np.ndarray,
    seed_x: np.ndarray,
) -> np.ndarray:
    """Which Voronoi cells hold a cell: almost all in a monolayer, islands for epithelia."""
    field = fractal_noise(rng, shape, rng.uniform(150, 400) / um, octaves=3)
    iy = np.clip(seed_y.astype(np.int64), 0, shape[0] - 1)
    ix = np.clip(seed_x.astype(np.int64), 0, shape[1] - 1)
    threshold = rng.uniform(-2.5, -0.8) if look.style == "confluent" else rng.uniform(-0.5, 0.8)
    return field[iy, ix] > threshold


def free_edge(body: np.ndarray, width_px: float) -> np.ndarray:
    """Positive just inside a free cell edge, negative (a bright halo) just outside it."""
    inner = ndi.gaussian_filter(body, max(width_px / 2, 0.5))
    outer = ndi.gaussian_filter(body, max(width_px * 1.5, 1.0))
    return (body * (1 - inner) * 3 - (outer - body).clip(0, None) * 0.6).astype(F32)


def nuclei(
    rng: np.random.Generator,
    dy: np.ndarray,
    dx: np.ndarray,
    label: np.ndarray,
    n: int,
    spacing_px: float,
    look: CellLook,
) -> np.ndarray:
    """Darkening by nuclei (slightly dark ellipses, bright rim, dark nucleoli) around each seed."""
    a = (spacing_px * rng.uniform(0.22, 0.32, n)).astype(F32)[label]
    b = a * rng.uniform(0.6, 0.95, n).astype(F32)[label]
    theta = rng.uniform(0, np.pi, n)
    c, s = np.cos(theta).astype(F32)[label], np.sin(theta).astype(F32)[label]
    u, v = (dy * c + dx * s) / a, (-dy * s + dx * c) / b
    q = np.sqrt(u * u + v * v)
    inside = np.clip((1 - q) * a / 1.2 + 0.5, 0, 1)
    rim = np.exp(-(((q - 1.05) * a / 1.0) ** 2))
    offset = rng.uniform(-0.4, 0.4, n).astype(F32)[label]  # along the long axis, in nucleus radii
    nucleolus = np.exp(-((u - offset) ** 2 + (v * 1.2) ** 2) / 0.03)
    depth = look.nucleus * inside - 0.4 * look.nucleus * rim + look.nucleolus * nucleolus * inside
    return depth.astype(F32)


def stain_per_cell(rng: np.random.Generator, n: int, look: CellLook) -> np.ndarray:
    stained = rng.random(n) < look.stained
    return (stained * rng.uniform(*look.stain_depth, n)).astype(F32)
