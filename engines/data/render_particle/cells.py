"""The cells of a field: one look per plate (kind, size, stain, texture), particles per cell."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from engines.data.render_particle.clouds import Cloud, aggregate, inside_outline

KINDS = ("round", "spread", "spindle", "sheet", "mixed")
MAX_PARTICLES = 1_500_000  # per field: keeps a 1080 x 1080 frame under a second


@dataclass(frozen=True, slots=True)
class CellLook:
    """What every field of one plate shares."""

    kind: str
    radius_um: float
    coverage: float  # cell area / field area, before overlaps
    aspect: float  # elongation of the outlines
    roughness: float
    density: float  # particles per px^2 of cell body
    scatter: float  # scattering per px^2 of body, summed over its particles
    stain: float  # absorbance per px^2 of body (0: unstained)
    granules: int  # dense particle heaps per cell
    dead_fraction: float  # rounded, refractile dead or mitotic cells
    vacuoles: int
    grain_um: float  # how fine the cytoplasm's texture is


def draw_look(rng: np.random.Generator) -> CellLook:
    kind = KINDS[int(rng.integers(len(KINDS)))]
    stained = rng.random() < 0.45
    return CellLook(
        kind=kind,
        radius_um=float(rng.uniform(6, 14) if kind == "round" else rng.uniform(12, 60)),
        coverage=float(rng.uniform(0.7, 1.3) if kind == "sheet" else rng.uniform(0.05, 0.8)),
        aspect=float(rng.uniform(3, 8) if kind == "spindle" else rng.uniform(1, 2.2)),
        roughness=float(rng.uniform(0.1, 0.5) if kind == "round" else rng.uniform(0.4, 1.6)),
        density=float(rng.uniform(0.2, 0.6)),
        scatter=float(rng.uniform(0.05, 0.45)),
        stain=float(rng.uniform(0.1, 1.1)) if stained else 0.0,
        granules=int(rng.integers(0, 40)),
        dead_fraction=float(rng.uniform(0, 0.25)),
        vacuoles=int(rng.integers(0, 6)),
        grain_um=float(rng.uniform(0.4, 1.5)),
    )


def _centres(rng: np.random.Generator, look: CellLook, shape: tuple[int, int], r_px: float
             ) -> np.ndarray:
    h, w = shape
    n = int(look.coverage * h * w / (math.pi * r_px**2 * max(look.aspect, 1) ** 0.3))
    n = min(max(n, 1), 4000)
    if look.kind != "sheet":
        return rng.uniform((-r_px, -r_px), (h + r_px, w + r_px), (n, 2))
    step = math.sqrt(h * w / n)  # confluent: a jittered lattice, so neighbours touch
    ys, xs = np.meshgrid(np.arange(-step, h + step, step), np.arange(-step, w + step, step))
    grid = np.stack([ys.ravel(), xs.ravel()], axis=1)
    return grid + rng.normal(0, step * 0.25, grid.shape)


def _one_cell(rng: np.random.Generator, look: CellLook, cy: float, cx: float, r_px: float,
              angle: float, density: float) -> Cloud:
    dead = rng.random() < look.dead_fraction
    if dead:  # rounded up: small, dense and refractile
        r_px, aspect, roughness, density_here = r_px * 0.35, 1.0, 0.1, density * 4
    else:
        aspect, roughness, density_here = look.aspect, look.roughness, density
    scale = float(rng.lognormal(0, 0.3))
    r_cell = r_px * scale
    n = int(density_here * math.pi * r_cell**2)
    y, x, rel = inside_outline(rng, n, cy, cx, r_cell, aspect, angle, roughness,
                               centre_weight=1.5)
    # A particle carries the body's scattering and stain between it and its neighbours;
    # weights vary, so the body looks granular, thicker towards the middle.
    thick = (1.6 - rel) * rng.lognormal(0, 0.5, n)
    per = 1.0 / density_here
    parts = [Cloud.of(y, x, look.stain * per * thick,
                      look.scatter * per * thick * (3 if dead else 1)),
             _nucleus(rng, look, cy, cx, r_cell, angle, density_here)]
    inner = np.flatnonzero(rel < 0.8)
    for _ in range(0 if dead or not len(inner) else int(rng.poisson(look.granules))):
        at = inner[int(rng.integers(len(inner)))]  # inside this cell's own outline
        hy, hx = aggregate(rng, int(rng.integers(10, 60)), y[at], x[at], 0.7)
        parts.append(Cloud.of(hy, hx, 1.2 * look.stain + 0.03, 0.3))
    return _with_vacuoles(rng, Cloud.join(parts), cy, cx, r_cell,
                          look.vacuoles if not dead else 0)


def _nucleus(rng: np.random.Generator, look: CellLook, cy: float, cx: float, r_cell: float,
             angle: float, density: float) -> Cloud:
    offset = rng.normal(0, 0.12 * r_cell, 2)
    r_nuc = r_cell * rng.uniform(0.22, 0.4)
    n = int(density * math.pi * r_nuc**2)
    y, x, _ = inside_outline(rng, n, cy + offset[0], cx + offset[1], r_nuc,
                             rng.uniform(1, 1.6), angle, 0.15)
    parts = [Cloud.of(y, x, 0.6 * look.stain / density, 0.8 * look.scatter / density)]
    for _ in range(int(rng.integers(1, 4))):  # nucleoli
        hy, hx = aggregate(rng, 40, cy + offset[0] + rng.normal(0, r_nuc / 3),
                           cx + offset[1] + rng.normal(0, r_nuc / 3), 0.6)
        parts.append(Cloud.of(hy, hx, 0.3 * look.stain, 0.5))
    return Cloud.join(parts)


def _with_vacuoles(rng: np.random.Generator, cell: Cloud, cy: float, cx: float, r_cell: float,
                   count: int) -> Cloud:
    keep = np.ones(len(cell), bool)
    for _ in range(int(rng.integers(0, count + 1))):
        vy, vx = cy + rng.normal(0, r_cell / 3), cx + rng.normal(0, r_cell / 3)
        keep &= np.hypot(cell.y - vy, cell.x - vx) > r_cell * rng.uniform(0.05, 0.15)
    return Cloud(cell.y[keep], cell.x[keep], cell.absorb[keep], cell.scatter[keep])


def cells_of_field(rng: np.random.Generator, look: CellLook, shape: tuple[int, int], um: float
                   ) -> Cloud:
    """Every cell of one field as one cloud in the cell plane."""
    r_px = look.radius_um / um
    centres = _centres(rng, look, shape, r_px)
    body_area = len(centres) * math.pi * r_px**2
    density = min(look.density, MAX_PARTICLES / max(body_area, 1.0))
    stream = rng.uniform(0, math.pi)  # spindle cells stream along one direction
    cells = []
    for cy, cx in centres:
        kind = look.kind if look.kind != "mixed" else KINDS[int(rng.integers(4))]
        spread = 0.3 if kind == "spindle" else math.pi
        r_cell = r_px * (0.5 if kind == "round" else 1.0)
        cells.append(_one_cell(rng, look, float(cy), float(cx), r_cell,
                               stream + rng.normal(0, spread), density))
    return Cloud.join(cells)
