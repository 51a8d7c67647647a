"""Cells: one look per frame, single cells as reused templates, scattered sparse to confluent."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from engines.data.render_halo.patches import Canvas, blob, grid, log_uniform, ramp


@dataclass(frozen=True, slots=True)
class _CellStyle:
    """What one cell line looks like in one well: drawn per frame."""

    radius_px: float
    roughness: float  # outline irregularity
    elongation: float  # smallest minor/major axis ratio (spindle-shaped lines go low)
    nucleus: float  # how much the nucleus stands out


def _cell_style(rng: np.random.Generator, um: float) -> _CellStyle:
    return _CellStyle(
        radius_px=rng.uniform(11, 22) / um / 2,
        roughness=rng.uniform(0.05, 0.5),
        elongation=rng.uniform(0.25, 0.9),
        nucleus=rng.uniform(0.05, 0.5),
    )


def _cell_templates(
    rng: np.random.Generator, style: _CellStyle, count: int, *, mitotic: bool
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(phase, absorbance) patches of single cells, reused with flips and rotations."""
    radius_px = style.radius_px
    templates = []
    for _ in range(count):
        if mitotic:
            radius = radius_px * rng.uniform(0.45, 0.65)
            rho = blob(rng, radius, roughness=0.03, elongation=rng.uniform(0.9, 1), pad=3)
            dome = np.sqrt(np.clip(1 - rho * rho, 0, 1)) * ramp(rho, radius, 1.0)
            phase = dome * np.float32(rng.uniform(2.0, 3.5))
            # A rounded cell lenses light in.
            absorbance = -dome * np.float32(rng.uniform(0.1, 0.35))
        else:
            radius = radius_px * rng.uniform(0.75, 1.3)
            rho = blob(
                rng,
                radius,
                roughness=rng.uniform(0.3, 1.0) * style.roughness,
                elongation=rng.uniform(style.elongation, 1),
                pad=3,
            )
            body = ramp(rho, radius, rng.uniform(1.0, 2.5))
            dome = np.clip(1 - rho * rho, 0, 1) * np.float32(rng.uniform(0.2, 1.0))
            phase = body * (1 + dome)
            nucleus_r = radius * rng.uniform(0.28, 0.45)
            oy, ox = rng.normal(0, radius * 0.12, 2)
            y, x = grid(rho.shape[0] // 2, rho.shape[1] // 2, rng)
            squash = np.float32(rng.uniform(0.8, 1.2))
            nucleus = np.sqrt((y - np.float32(oy)) ** 2 + ((x - np.float32(ox)) * squash) ** 2)
            nucleus_body = ramp(nucleus / np.float32(nucleus_r), nucleus_r, 2.0) * body
            phase += nucleus_body * np.float32(rng.uniform(0.5, 1.5) * style.nucleus)
            absorbance = (
                body * np.float32(rng.uniform(0.0, 0.03))
                + nucleus_body * np.float32(rng.uniform(0.0, 0.04))
            )
        templates.append((phase.astype(np.float32), absorbance.astype(np.float32)))
    return templates


def _orient(patch: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 flips and quarter turns of a patch."""
    patch = np.rot90(patch, k % 4)
    return patch[:, ::-1] if k >= 4 else patch


def draw_cells(rng: np.random.Generator, canvas: Canvas, um: float) -> None:
    """Scatter cells, from sparse to confluent."""
    h, w = canvas.mask.shape
    style = _cell_style(rng, um)
    coverage = log_uniform(rng, 0.02, 0.9)
    per_field = coverage * 1080 * 1080 / (math.pi * style.radius_px**2)
    count = round(np.clip(per_field, 10, 400) * h * w / (1080 * 1080))
    normal = _cell_templates(rng, style, 16, mitotic=False)
    mitotic = _cell_templates(rng, style, 4, mitotic=True)
    mitotic_share = rng.uniform(0, 0.08)
    ys, xs = rng.uniform(0, h, count), rng.uniform(0, w, count)
    if rng.random() < 0.4:  # colonies: part of the cells grow in a few clusters
        colonies = int(rng.integers(1, 6))
        centres = rng.uniform(0, 1, (colonies, 2)) * (h, w)
        grouped = rng.random(count) < rng.uniform(0.3, 0.9)
        which = rng.integers(0, colonies, count)[grouped]
        spread = rng.uniform(3, 10) * style.radius_px
        ys[grouped] = np.clip(centres[which, 0] + rng.normal(0, spread, which.size), 0, h - 1)
        xs[grouped] = np.clip(centres[which, 1] + rng.normal(0, spread, which.size), 0, w - 1)
    heights = rng.uniform(0.6, 1.4, count).astype(np.float32)
    picks = rng.integers(0, 16, count)
    turns = rng.integers(0, 8, count)
    is_mitotic = rng.random(count) < mitotic_share
    cells = zip(ys, xs, heights, picks, turns, is_mitotic, strict=True)
    for cy, cx, height, pick, turn, m in cells:
        phase, absorbance = mitotic[pick % 4] if m else normal[pick]
        phase, absorbance = _orient(phase, turn), _orient(absorbance, turn)
        cut = canvas.clip(int(cy) - phase.shape[0] // 2, int(cx) - phase.shape[1] // 2, phase.shape)
        if cut is None:
            continue
        frame, local = cut
        np.maximum(canvas.phase[frame], phase[local] * height, out=canvas.phase[frame])
        canvas.absorbance[frame] += absorbance[local]
