"""Cells: six cell styles as thickness maps, a stain per frame, granules, vacuoles, nucleoli."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from engines.data.render_relief.specimen import (
    F32,
    Specimen,
    dome,
    loguniform,
    outline_radius,
    random_walk,
    rotated_half_extent,
    splat,
    window,
    wobble,
)

MAX_PATCH_CELLS = 700  # cells drawn one patch at a time; caps the cost at coarse pixel sizes


def add_cell(
    spec: Specimen,
    rng: np.random.Generator,
    cy: float,
    cx: float,
    a: float,
    b: float,
    theta: float,
    height_um: float,
    *,
    profile: str,
    roughness: float = 0.15,
    nucleus_ab: tuple[float, float] = (0.0, 0.0),
) -> None:
    """One cell drawn as its own patch: dome, spindle or flat sheet with ruffles, plus a nucleus."""
    harmonics = wobble(rng, roughness, range(2, 13) if profile == "flat" else range(2, 7))
    an, bn = nucleus_ab
    shift = rng.uniform(-0.25, 0.25) * (a - an)  # nuclei sit off-centre along the long axis
    nucleus_height = (
        rng.uniform(0.35, 0.7) * height_um if profile != "flat" else rng.uniform(1.5, 3.5)
    )
    ruffle = (rng.uniform(0.4, 1.5), int(rng.integers(8, 30)), rng.uniform(0, 2 * math.pi))
    half_h, half_w = rotated_half_extent(a * 1.4, b * 1.4, theta)
    win = window(spec.shape, cy, cx, half_h, half_w)
    if win is None:
        return
    if profile == "spindle":
        c, s = F32(math.cos(theta)), F32(math.sin(theta))
        u = (win.xx * c + win.yy * s) / F32(a)
        v = (win.yy * c - win.xx * s) / F32(b)
        taper = np.maximum(1 - u * u, F32(0.02))  # the width narrows to a point at both ends
        t = height_um * dome(np.sqrt(u * u + (v / taper) ** 2), 0.8)
    elif profile == "flat":
        rho, phi = outline_radius(win.yy, win.xx, a, b, theta, harmonics)
        t = height_um * np.clip((1 - rho) / F32(0.12), 0, 1)
        amp, m, phase = ruffle  # ruffles: folded membrane piling up just inside the edge
        band = np.exp(-(((rho - F32(0.92)) / F32(0.05)) ** 2))
        t = t + F32(amp) * band * (F32(0.5) + F32(0.5) * np.cos(m * phi + F32(phase))) * (rho < 1)
    else:
        rho, _ = outline_radius(win.yy, win.xx, a, b, theta, harmonics)
        t = height_um * dome(rho, 0.7)
    t = t.astype(F32)
    if an > 0:
        oy, ox = shift * math.sin(theta), shift * math.cos(theta)
        rho_n, _ = outline_radius(win.yy - F32(oy), win.xx - F32(ox), an, bn, theta)
        nuc = (nucleus_height * dome(rho_n, 0.6) * (t > 0)).astype(F32)
        spec.nucleus[win.box] += nuc
        t += nuc
        spec.nuclei.append((cy + oy, cx + ox, min(an, bn)))
    spec.thickness[win.box] += t


def add_seeded_cells(
    spec: Specimen,
    rng: np.random.Generator,
    ys: np.ndarray,
    xs: np.ndarray,
    radius_px: np.ndarray,
    height_um: np.ndarray,
    power: float,
    nucleus_fraction: float,
) -> None:
    """Many isotropic cells at once: each pixel belongs to its nearest seed (a Voronoi split).

    Cost does not grow with the number of cells, and domes wider than half the seed spacing meet
    in creases, which is what makes dense epithelium look like cobblestones.
    """
    inside = (ys >= 0) & (ys < spec.shape[0]) & (xs >= 0) & (xs < spec.shape[1])
    ys, xs, radius_px, height_um = ys[inside], xs[inside], radius_px[inside], height_um[inside]
    if ys.size == 0:
        return
    iy, ix = ys.astype(np.int64), xs.astype(np.int64)
    owner_at = np.full(spec.shape, -1, np.int64)
    owner_at[iy, ix] = np.arange(ys.size)
    dist, (ny, nx) = ndi.distance_transform_edt(owner_at < 0, return_indices=True)
    owner = owner_at[ny, nx]
    dist = dist.astype(F32)
    cell = height_um.astype(F32)[owner] * dome(dist / radius_px.astype(F32)[owner], power)
    nucleus_radius = (nucleus_fraction * radius_px).astype(F32)
    nucleus_height = (rng.uniform(0.3, 0.5, ys.size) * height_um).astype(F32)
    nuc = nucleus_height[owner] * dome(dist / nucleus_radius[owner], 0.6)
    spec.thickness += cell + nuc
    spec.nucleus += nuc
    spec.nuclei.extend(zip(iy.tolist(), ix.tolist(), nucleus_radius.tolist(), strict=True))


def hex_seeds(rng: np.random.Generator, shape: tuple[int, int], spacing: float, jitter: float):
    rows = np.arange(-1, shape[0] / (spacing * 0.866) + 1)
    cols = np.arange(-1, shape[1] / spacing + 1)
    gy, gx = np.meshgrid(rows * spacing * 0.866, cols * spacing, indexing="ij")
    gx = gx + (rows[:, None] % 2) * spacing / 2
    gy = gy.ravel() + rng.normal(0, jitter * spacing, gy.size)
    gx = gx.ravel() + rng.normal(0, jitter * spacing, gx.size)
    return gy, gx


def smooth_noise_at(rng: np.random.Generator, shape: tuple[int, int], ys, xs, cells: int = 5):
    """A smooth random field (bilinear over a coarse grid) evaluated at points only."""
    coarse = rng.normal(size=(cells + 1, cells + 1))
    coords = np.stack([ys / shape[0] * cells, xs / shape[1] * cells])
    return ndi.map_coordinates(coarse, coords, order=1, mode="nearest")


def cobblestone_epithelium(rng: np.random.Generator, spec: Specimen) -> None:
    spacing = rng.uniform(12, 25) / spec.um
    ys, xs = hex_seeds(rng, spec.shape, spacing, rng.uniform(0.08, 0.22))
    if rng.random() < 0.5:  # colonies with bare dish between them, not a confluent sheet
        level = smooth_noise_at(rng, spec.shape, ys, xs)
        keep = level > np.quantile(level, rng.uniform(0.2, 0.6))
        ys, xs = ys[keep], xs[keep]
    n = ys.size
    radius = spacing * rng.uniform(0.58, 0.7) * rng.uniform(0.9, 1.1, n)
    heights = rng.uniform(3, 7) * rng.uniform(0.8, 1.2, n)
    add_seeded_cells(spec, rng, ys, xs, radius, heights, 1.0, 0.5)


def round_settled_cells(rng: np.random.Generator, spec: Specimen) -> None:
    area_um2 = spec.shape[0] * spec.shape[1] * spec.um**2
    radius_um = rng.uniform(3.5, 7.5)
    n = int(rng.uniform(0.05, 0.45) * area_um2 / (math.pi * radius_um**2))
    ys = rng.uniform(0, spec.shape[0], n)
    xs = rng.uniform(0, spec.shape[1], n)
    radius = radius_um / spec.um * rng.uniform(0.85, 1.15, n)
    heights = radius * spec.um * rng.uniform(1.1, 1.5, n)
    add_seeded_cells(spec, rng, ys, xs, radius, heights, 0.5, 0.6)


def spheroid_clusters(rng: np.random.Generator, spec: Specimen) -> None:
    """Compact multicellular spheroids (clean tissue): a smooth tall mound textured by cells."""
    member_y, member_x = [], []
    for _ in range(int(rng.integers(1, 5))):
        cy, cx = rng.uniform(0, spec.shape[0]), rng.uniform(0, spec.shape[1])
        radius = rng.uniform(30, 125) / spec.um
        height = rng.uniform(8, 25)
        harmonics = wobble(rng, 0.06)
        win = window(spec.shape, cy, cx, radius * 1.2, radius * 1.2)
        spacing = rng.uniform(9, 13) / spec.um
        ys, xs = hex_seeds(rng, (int(2 * radius) + 2, int(2 * radius) + 2), spacing, 0.15)
        ys, xs = ys + cy - radius, xs + cx - radius
        near = np.hypot(ys - cy, xs - cx) < radius * 1.02
        member_y.append(ys[near])
        member_x.append(xs[near])
        if win is None:
            continue
        rho, _ = outline_radius(win.yy, win.xx, radius, radius, 0.0, harmonics)
        spec.thickness[win.box] += (height * dome(rho, 0.6)).astype(F32)
    n_loose = int(rng.integers(0, 60))
    ys = np.concatenate([*member_y, rng.uniform(0, spec.shape[0], n_loose)])
    xs = np.concatenate([*member_x, rng.uniform(0, spec.shape[1], n_loose)])
    radius = rng.uniform(5, 7) / spec.um * rng.uniform(0.85, 1.15, ys.size)
    add_seeded_cells(spec, rng, ys, xs, radius, rng.uniform(2, 5, ys.size), 0.7, 0.5)


def stream_orientation(rng: np.random.Generator, um: float) -> Callable:
    """A shared, slowly turning orientation field: fibroblasts align into streams."""
    base = rng.uniform(0, math.pi)
    waves = [
        (
            rng.uniform(0.2, 0.7),
            rng.normal(size=2) / rng.uniform(300, 1000) * um,
            rng.uniform(0, 6.3),
        )
        for _ in range(3)
    ]

    def theta(ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        out = np.full(ys.shape, base)
        for amp, (fy, fx), phase in waves:
            out = out + amp * np.sin(2 * math.pi * (fy * ys + fx * xs) + phase)
        return out

    return theta


def patch_cell_count(
    rng: np.random.Generator, spec: Specimen, coverage: float, cell_area_px: float
) -> int:
    return min(int(coverage * spec.shape[0] * spec.shape[1] / cell_area_px), MAX_PATCH_CELLS)


def spindle_fibroblasts(rng: np.random.Generator, spec: Specimen) -> None:
    length, width = rng.uniform(60, 160) / spec.um, rng.uniform(8, 18) / spec.um
    n = patch_cell_count(rng, spec, rng.uniform(0.35, 0.9), 0.55 * length * width)
    ys = rng.uniform(-0.05, 1.05, n) * spec.shape[0]
    xs = rng.uniform(-0.05, 1.05, n) * spec.shape[1]
    thetas = stream_orientation(rng, spec.um)(ys, xs) + rng.normal(0, 0.12, n)
    for cy, cx, theta in zip(ys, xs, thetas, strict=True):
        a = length / 2 * rng.uniform(0.7, 1.3)
        b = width / 2 * rng.uniform(0.7, 1.3)
        nucleus = (
            min(rng.uniform(5, 8) / spec.um, 0.4 * a),
            min(rng.uniform(3, 5) / spec.um, 0.6 * b),
        )
        add_cell(spec, rng, cy, cx, a, b, theta, rng.uniform(1.5, 4.5), profile="spindle",
                 nucleus_ab=nucleus)


def flat_ruffled_cells(rng: np.random.Generator, spec: Specimen) -> None:
    a_mean = rng.uniform(25, 70) / spec.um
    n = patch_cell_count(rng, spec, rng.uniform(0.3, 0.8), math.pi * a_mean * a_mean * 0.8)
    for _ in range(max(n, 1)):
        cy, cx = rng.uniform(0, spec.shape[0]), rng.uniform(0, spec.shape[1])
        a = a_mean * rng.uniform(0.7, 1.3)
        b = a * rng.uniform(0.6, 1.0)
        rn = rng.uniform(6, 10) / spec.um
        add_cell(spec, rng, cy, cx, a, b, rng.uniform(0, math.pi), rng.uniform(0.5, 1.8),
                 profile="flat", roughness=0.35, nucleus_ab=(rn, rn * rng.uniform(0.7, 1.0)))


def neurons(rng: np.random.Generator, spec: Specimen) -> None:
    """Small somata with long thin neurites; the neurites are splatted and blurred all at once."""
    area_um2 = spec.shape[0] * spec.shape[1] * spec.um**2
    n = max(min(int(area_um2 / loguniform(rng, 3000, 12000)), 300), 1)
    width_px = max(rng.uniform(1.5, 3.0) / spec.um / 2.355, 0.5)  # as a Gaussian sigma
    all_y, all_x, all_w = [], [], []
    for _ in range(n):
        cy, cx = rng.uniform(0, spec.shape[0]), rng.uniform(0, spec.shape[1])
        r = rng.uniform(6, 11) / spec.um
        add_cell(spec, rng, cy, cx, r, r * rng.uniform(0.7, 1.0), rng.uniform(0, math.pi),
                 rng.uniform(4, 7), profile="dome", nucleus_ab=(0.55 * r, 0.5 * r))
        for _ in range(int(rng.integers(2, 6))):
            heading = rng.uniform(0, 2 * math.pi)
            length = rng.uniform(40, 300) / spec.um
            ys, xs = random_walk(rng, cy + r * math.sin(heading), cx + r * math.cos(heading),
                                 heading, length, rng.uniform(0.005, 0.04))
            taper = np.linspace(1.0, 0.3, ys.size)  # neurites thin out towards the growth cone
            all_y.append(ys)
            all_x.append(xs)
            all_w.append(taper * rng.uniform(0.8, 2.0))
    # half-pixel-spaced points of weight q blur to a line of peak 2 q / (sqrt(2 pi) sigma)
    weights = np.concatenate(all_w) * 0.5 * math.sqrt(2 * math.pi) * width_px
    lines = splat(spec.shape, np.concatenate(all_y), np.concatenate(all_x), weights)
    spec.thickness += ndi.gaussian_filter(lines, width_px)


CELL_STYLES: dict[str, Callable[[np.random.Generator, Specimen], None]] = {
    "spindle fibroblasts in streams": spindle_fibroblasts,
    "cobblestone epithelium": cobblestone_epithelium,
    "neurons with neurites": neurons,
    "large flat ruffled cells": flat_ruffled_cells,
    "small round settled cells": round_settled_cells,
    "spheroid clusters": spheroid_clusters,
}


@dataclass(frozen=True, slots=True)
class Stain:
    """Beer-Lambert absorbance per um of cytoplasm and of nucleus (eps * c)."""

    cytoplasm: float
    nucleus: float


def draw_stain(rng: np.random.Generator) -> Stain:
    level = rng.choice(["unstained", "light", "heavy"], p=[0.35, 0.35, 0.3])
    faint = rng.uniform(0.002, 0.006)  # unstained cells still absorb a little
    if level == "unstained":
        return Stain(faint, faint)
    target = rng.uniform(0.02, 0.06) if level == "light" else rng.uniform(0.06, 0.18)
    other = target * rng.uniform(0.1, 0.3)
    return Stain(target, other) if rng.random() < 0.5 else Stain(other, target)


def add_organelles(rng: np.random.Generator, spec: Specimen, stain: Stain) -> None:
    """Granules and vacuoles in the cytoplasm, nucleoli in the nuclei, as blurred point sets."""
    sigma = max(0.6, 0.35 / spec.um)
    H, W = spec.shape
    n = int(H * W * rng.uniform(0.002, 0.01))
    gy, gx = rng.uniform(0, H - 1, n), rng.uniform(0, W - 1, n)
    at = (np.rint(gy).astype(int), np.rint(gx).astype(int))
    in_cytoplasm = (spec.thickness[at] > 0.6) & (spec.nucleus[at] < 0.05)
    gy, gx = gy[in_cytoplasm], gx[in_cytoplasm]
    granule = rng.uniform(0.2, 0.8, gy.size) * 0.06  # OPD of one granule, um
    if spec.nuclei:
        ny, nx, nr = (np.array(v) for v in zip(*spec.nuclei, strict=True))
        counts = rng.integers(1, 4, ny.size)
        ny, nx, nr = np.repeat(ny, counts), np.repeat(nx, counts), np.repeat(nr, counts)
        angle = rng.uniform(0, 2 * math.pi, ny.size)
        reach = 0.45 * nr * np.sqrt(rng.random(ny.size))
        ny, nx = ny + reach * np.sin(angle), nx + reach * np.cos(angle)
    else:
        ny = nx = np.zeros(0)
    nucleolus = rng.uniform(0.05, 0.1, ny.size)  # OPD of one nucleolus, um
    area = 2 * math.pi * sigma * sigma  # a splat of weight w blurs to a peak of w / area
    ys, xs = np.concatenate([gy, ny]), np.concatenate([gx, nx])
    opd = splat(spec.shape, ys, xs, np.concatenate([granule, nucleolus]) * area)
    per_point = [granule * 10 * stain.cytoplasm, nucleolus * 25 * stain.nucleus]
    stain_w = np.concatenate(per_point) * area
    absorb = splat(spec.shape, ys, xs, stain_w)
    spec.opd += ndi.gaussian_filter(opd, sigma)
    spec.absorbance += ndi.gaussian_filter(absorb, sigma)
    if rng.random() < 0.5:  # vacuoles: lower index than cytoplasm, so they cast reversed relief
        keep = rng.random(gy.size) < 0.15
        v_sigma = max(0.6, rng.uniform(0.6, 1.5) / spec.um)
        weights = -rng.uniform(0.03, 0.08, int(keep.sum())) * 2 * math.pi * v_sigma**2
        spec.opd += ndi.gaussian_filter(splat(spec.shape, gy[keep], gx[keep], weights), v_sigma)
