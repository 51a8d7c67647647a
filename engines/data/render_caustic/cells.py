"""Cells: level sets of random fields, with a lamella, a plateau, nuclei and texture."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from engines.data.render_caustic.fields import random_field, shot_fields, smoothstep, splat


@dataclass(frozen=True, slots=True)
class CellLook:
    coverage: float  # fraction of the field under cell bodies
    size_um: float  # typical cell size: sets the field's correlation length
    stretch: float  # > 1: elongated cells in streams along `angle`
    angle: float
    raggedness: float  # fine component in the field: branching, irregular outlines
    lamella: float  # how fast a body rises from its outline to its plateau (field std units)
    thickness_um: float  # optical path of a cell body's plateau
    nucleus_um: float  # extra optical path of a nucleus
    nucleus_size: float  # nucleus width / cell width
    granules_per_100um2: float
    vacuoles_per_100um2: float
    stain: float  # 0: unstained; else absorbance over the bodies


def draw_cell_look(rng: np.random.Generator) -> CellLook:
    stained = rng.random() < 0.3
    return CellLook(
        coverage=rng.uniform(0.04, 0.95),
        size_um=math.exp(rng.uniform(math.log(20), math.log(150))),
        stretch=1.0 if rng.random() < 0.4 else rng.uniform(1.5, 6.0),
        angle=rng.uniform(0, np.pi),
        raggedness=rng.uniform(0.1, 0.35),
        lamella=rng.uniform(0.1, 0.5),
        thickness_um=rng.uniform(0.1, 0.45),
        nucleus_um=rng.uniform(0.05, 0.3),
        nucleus_size=rng.uniform(0.25, 0.45),
        granules_per_100um2=rng.uniform(0.3, 5.0),
        vacuoles_per_100um2=rng.uniform(0.0, 0.8),
        stain=rng.uniform(0.2, 0.8) if stained else 0.0,
    )


@dataclass(slots=True)
class Cells:
    opd: np.ndarray  # um
    body: np.ndarray  # 0..1: how far into a cell body (0 outside)
    inside: np.ndarray  # bool
    absorbance: np.ndarray


def cell_bodies(
    rng: np.random.Generator, shape: tuple[int, int], um: float, look: CellLook
) -> Cells:
    """Bodies and nuclei as level sets of random fields: where the field is above 0.5 is a cell,
    and the height above it is how deep into the cell (a thin lamella at the outline, a plateau
    and a dome inside; valleys between touching cells are the junctions of a confluent sheet)."""
    sigma_px = max(look.size_um / um / 2.35, 1.5)
    cell_px2 = 4.37 * sigma_px**2  # area of an isolated cell, the 0.5 level of one kernel
    count = int(min(-0.6 * math.log(1 - look.coverage) * shape[0] * shape[1] / cell_px2, 20000)) + 1
    widths = (sigma_px, sigma_px * look.nucleus_size)
    wide, narrow = shot_fields(rng, shape, count, widths, look.stretch, look.angle)
    rough = random_field(
        rng, shape, sigma_px / 2, stretch=look.stretch, angle=look.angle, detail=0.6
    )
    g = wide + look.raggedness * rough
    depth = np.maximum(g - 0.5, 0) / look.lamella
    inside = depth > 0
    body = (1 - np.exp(-depth)).astype(np.float32)
    dome = np.minimum(np.maximum(g - 0.5, 0), 1.5) / 1.5
    nucleus = smoothstep((narrow + 0.15 * rough - 0.5) / 0.3) * inside
    opd = look.thickness_um * (0.6 * body + 0.4 * dome) + look.nucleus_um * nucleus
    absorbance = (0.01 * body).astype(np.float32)
    return Cells(opd.astype(np.float32), body, inside, absorbance)


def _bumps(
    rng: np.random.Generator,
    cells: Cells,
    um: float,
    per_100um2: float,
    sigma_um: float,
    strength: float,
    k: float,
) -> np.ndarray:
    """Small Gaussian phase bumps at random places inside cells, each with a peak caustic
    strength |k * curvature| up to `strength` (so a granule stays a grey dot, not a black one)."""
    shape = cells.opd.shape
    where = np.flatnonzero(cells.inside[::2, ::2].ravel())
    area_um2 = 4 * where.size * um * um
    n = min(int(per_100um2 * area_um2 / 100), 20000)
    if n == 0 or where.size == 0:
        return np.zeros(shape, np.float32)
    pick = where[rng.integers(0, where.size, n)]
    half_w = (shape[1] + 1) // 2
    ys = np.minimum(2 * (pick // half_w) + rng.integers(0, 2, n), shape[0] - 1)
    xs = np.minimum(2 * (pick % half_w) + rng.integers(0, 2, n), shape[1] - 1)
    sigma_px = max(sigma_um / um, 0.8)
    peak = strength * rng.uniform(0.3, 1.0, n) * sigma_px**2 / max(abs(k), 1e-9)
    weights = peak * 2 * np.pi * sigma_px**2 * cells.body[ys, xs]
    return ndi.gaussian_filter(splat(shape, ys, xs, weights), sigma_px, truncate=3.0)


def add_texture(
    rng: np.random.Generator, cells: Cells, um: float, look: CellLook, k: float
) -> None:
    """Granules (denser, higher index: positive bumps), vacuoles (lower index: negative), and a
    granular stain that follows the granules."""
    granules = _bumps(rng, cells, um, look.granules_per_100um2, rng.uniform(0.4, 0.9), 0.45, k)
    vacuoles = _bumps(rng, cells, um, look.vacuoles_per_100um2, rng.uniform(1.0, 2.5), 0.35, k)
    cells.opd += granules - vacuoles
    if look.stain > 0:
        grain = granules / max(float(granules.max()), 1e-9)
        stain = look.stain * cells.body * (0.8 + 0.5 * np.sqrt(grain))
        cells.absorbance += np.minimum(stain, 1.0).astype(np.float32)
