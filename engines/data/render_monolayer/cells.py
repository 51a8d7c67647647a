"""The clean scene: a tiled sheet or spread cells one by one, then rounded and dead cells."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

from engines.data.render_monolayer.look import CellLook, draw_cell_look
from engines.data.render_monolayer.textures import (
    F32,
    blob,
    fractal_noise,
    polygon_mask,
    ring,
    speckle_field,
    window,
    wobbly_radius,
)
from engines.data.render_monolayer.tiling import tiled_cells


def cell_layer(rng: np.random.Generator, shape: tuple[int, int], um: float) -> np.ndarray:
    """Transmission of the cell layer (1 = empty medium) for one drawn cell-line style."""
    look = draw_cell_look(rng)
    granules = speckle_field(rng, shape, rng.uniform(0.3, 0.8) / um, rng.uniform(0.3, 0.9))
    vacuoles = speckle_field(rng, shape, rng.uniform(0.8, 2.5) / um, 0.2) if look.vacuoles else None
    if look.style in ("confluent", "epithelial"):
        layer = tiled_cells(rng, shape, um, look, granules, vacuoles)
    else:
        layer = np.ones(shape, F32)
        count = spread_cell_count(rng, shape, um, look)
        for _ in range(count):
            stamp_spread_cell(rng, layer, um, look, granules, vacuoles)
    stamp_round_cells(rng, layer, um, look)
    # faint out-of-focus unevenness of the medium / plastic
    layer *= 1 + F32(rng.uniform(0, 0.01)) * fractal_noise(rng, shape, 60 / um, octaves=3)
    return layer


def spread_cell_count(
    rng: np.random.Generator, shape: tuple[int, int], um: float, look: CellLook
) -> int:
    field_um2 = shape[0] * shape[1] * um * um
    coverage = rng.uniform(0.3, 1.2) if look.style == "fibroblast" else rng.uniform(0.03, 0.3)
    cell_um2 = 0.25 * look.cell_um**2  # spread cells fill a fraction of their bounding circle
    return int(min(80, max(1, round(coverage * field_um2 / cell_um2))))


def stamp_spread_cell(
    rng: np.random.Generator,
    layer: np.ndarray,
    um: float,
    look: CellLook,
    granules: np.ndarray,
    vacuoles: np.ndarray | None,
) -> None:
    """One spread cell: irregular body, tapering processes, nucleus, granules, maybe stain."""
    size_px = look.cell_um * rng.uniform(0.6, 1.4) / um
    body_r = size_px * (0.18 if look.style == "fibroblast" else 0.4)
    processes = int(rng.integers(2, 6)) if look.style == "fibroblast" else int(rng.integers(0, 3))
    cy, cx = rng.uniform(-0.1, 1.1) * layer.shape[0], rng.uniform(-0.1, 1.1) * layer.shape[1]
    win = window(layer.shape, cy, cx, size_px * 0.75 + 4)
    if win is None:
        return
    top, left = win.rows.start, win.cols.start
    ys, xs = body_outline(rng, body_r, rng.uniform(0.4, 1.0))
    occupancy = polygon_mask(win.shape, ys + cy - top, xs + cx - left)
    for _ in range(processes):
        ys, xs = tapering_process(
            rng, body_r, size_px * rng.uniform(0.3, 0.75), body_r * rng.uniform(0.5, 1.0)
        )
        np.maximum(occupancy, polygon_mask(win.shape, ys + cy - top, xs + cx - left), out=occupancy)
    if not occupancy.any():
        return
    occupancy = ndi.gaussian_filter(occupancy, max(0.7, rng.uniform(0.3, 0.8) / um))
    r2 = win.yy**2 + win.xx**2
    perinuclear = np.exp(-r2 / F32((1.3 * body_r) ** 2))
    factor = 1 - look.body * occupancy
    factor -= look.edge * 3 * occupancy * (1 - occupancy)  # a dark line along the free edge
    factor -= look.granular * granules[win.rows, win.cols] * perinuclear * occupancy
    if vacuoles is not None:
        factor += look.vacuoles * vacuoles[win.rows, win.cols] * perinuclear * occupancy
    if rng.random() < look.stained:
        factor *= 1 - rng.uniform(*look.stain_depth) * occupancy * (0.5 + 0.5 * perinuclear)
    layer[win.rows, win.cols] *= factor
    single_nucleus(rng, layer, cy, cx, body_r, um, look)


def body_outline(
    rng: np.random.Generator, radius: float, elongation: float
) -> tuple[np.ndarray, np.ndarray]:
    theta = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    r = radius * wobbly_radius(rng, 0.25)(np.cos(theta), np.sin(theta))
    angle = rng.uniform(0, np.pi)
    u, v = r * np.cos(theta), r * np.sin(theta) * elongation
    return u * math.sin(angle) + v * math.cos(angle), u * math.cos(angle) - v * math.sin(angle)


def tapering_process(
    rng: np.random.Generator, start_r: float, length: float, base_width: float
) -> tuple[np.ndarray, np.ndarray]:
    """A polygon around a gently curving centreline whose width tapers to ~1 px at the tip."""
    steps = 24
    heading = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.12, steps))
    seg = (start_r * 0.5 + length) / steps
    cy = np.cumsum(np.sin(heading) * seg)
    cx = np.cumsum(np.cos(heading) * seg)
    half = np.maximum(base_width / 2 * (1 - np.linspace(0, 1, steps)) ** 1.3, 0.6)
    ny, nx = np.cos(heading), -np.sin(heading)
    ys = np.concatenate([cy + ny * half, (cy - ny * half)[::-1]])
    xs = np.concatenate([cx + nx * half, (cx - nx * half)[::-1]])
    return ys, xs


def single_nucleus(
    rng: np.random.Generator,
    layer: np.ndarray,
    cy: float,
    cx: float,
    body_r: float,
    um: float,
    look: CellLook,
) -> None:
    a = min(body_r * rng.uniform(0.45, 0.7), rng.uniform(5, 9) / um)
    win = window(layer.shape, cy, cx, a * 1.3 + 3)
    if win is None:
        return
    inside = blob(rng, win, a, roughness=0.05, elongation=rng.uniform(0.6, 0.95), edge_px=1.2)
    rim = inside * (1 - inside) * 4
    nucleolus = blob(
        rng, win, max(a * 0.18, 0.8), roughness=0.1, edge_px=0.8, dy=rng.uniform(-0.3, 0.3) * a
    )
    layer[win.rows, win.cols] *= 1 - (
        look.nucleus * inside - 0.5 * look.nucleus * rim + look.nucleolus * nucleolus
    )


def stamp_round_cells(
    rng: np.random.Generator, layer: np.ndarray, um: float, look: CellLook
) -> None:
    """Rounded mitotic cells (bright disc, dark rim, halo) and dead cells (small, dark, rough)."""
    field_mm2 = layer.shape[0] * layer.shape[1] * um * um / 1e6
    crowd = 1.0 if look.style in ("confluent", "epithelial") else 0.5
    for _ in range(rng.poisson(rng.uniform(0, 25) * field_mm2 * crowd)):
        mitotic_cell(rng, layer, um)
    for _ in range(rng.poisson(rng.uniform(0, 30) * field_mm2 * crowd)):
        dead_cell(rng, layer, um)


def mitotic_cell(rng: np.random.Generator, layer: np.ndarray, um: float) -> None:
    radius = rng.uniform(5, 10) / um
    win = window(
        layer.shape,
        rng.uniform(0, layer.shape[0]),
        rng.uniform(0, layer.shape[1]),
        radius * 1.8 + 3,
    )
    if win is None:
        return
    r = np.sqrt(win.yy**2 + win.xx**2) * F32(rng.uniform(0.9, 1.1))
    inside = np.clip((radius - r) / 1.0 + 0.5, 0, 1)
    factor = 1 + rng.uniform(0.05, 0.25) * inside * np.exp(-((r / radius) ** 2))
    factor -= rng.uniform(0.1, 0.3) * ring(r, radius * 0.95, max(0.8 / um, 0.8))
    factor += rng.uniform(0.05, 0.15) * ring(r, radius * 1.2, radius * 0.15)
    layer[win.rows, win.cols] *= factor.astype(F32)


def dead_cell(rng: np.random.Generator, layer: np.ndarray, um: float) -> None:
    radius = rng.uniform(3, 7) / um
    win = window(
        layer.shape, rng.uniform(0, layer.shape[0]), rng.uniform(0, layer.shape[1]), radius * 2 + 3
    )
    if win is None:
        return
    shrunk = blob(
        rng,
        win,
        radius,
        roughness=rng.uniform(0.2, 0.45),
        elongation=rng.uniform(0.6, 1.0),
        edge_px=1.0,
    )
    halo = blob(rng, win, radius * 1.4, roughness=0.1, edge_px=radius * 0.4) - shrunk
    factor = 1 - rng.uniform(0.15, 0.45) * shrunk + rng.uniform(0, 0.08) * halo.clip(0, None)
    layer[win.rows, win.cols] *= factor.astype(F32)
