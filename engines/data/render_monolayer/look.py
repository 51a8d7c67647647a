"""What the cells of one frame look like: the cell-line style and its contrasts, drawn per frame."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CELL_STYLES = ("confluent", "fibroblast", "epithelial", "sparse")
CELL_STYLE_WEIGHTS = (0.3, 0.25, 0.25, 0.2)


@dataclass(frozen=True)
class CellLook:
    """What the cells of one frame look like (one cell line, one preparation)."""

    style: str
    cell_um: float  # typical cell diameter
    membrane: float  # contrast of cell-cell borders (+ bright, - dark)
    edge: float  # darkening at a free cell edge
    body: float  # darkening of the cytoplasm
    nucleus: float  # darkening of the nucleus
    nucleolus: float  # darkening of nucleoli
    granular: float  # strength of dark perinuclear granules
    vacuoles: float  # strength of bright vacuoles (0: none)
    stained: float  # fraction of cells carrying a colorimetric stain
    stain_depth: tuple[float, float]


def draw_cell_look(rng: np.random.Generator) -> CellLook:
    style = str(rng.choice(CELL_STYLES, p=CELL_STYLE_WEIGHTS))
    cell_um = {
        "confluent": rng.uniform(15, 35),
        "fibroblast": rng.uniform(40, 150),
        "epithelial": rng.uniform(14, 30),
        "sparse": rng.uniform(25, 70),
    }[style]
    stained = rng.random() < 0.3
    return CellLook(
        style=style,
        cell_um=float(cell_um),
        membrane=float(rng.choice([-1, 1]) * rng.uniform(0.03, 0.1)),
        edge=float(rng.uniform(0.04, 0.15)),
        body=float(rng.uniform(0.005, 0.05)),
        nucleus=float(rng.uniform(0.015, 0.07)),
        nucleolus=float(rng.uniform(0.05, 0.2)),
        granular=float(rng.uniform(0.05, 0.4) if rng.random() < 0.6 else rng.uniform(0, 0.05)),
        vacuoles=float(rng.uniform(0.05, 0.2) if rng.random() < 0.3 else 0.0),
        stained=float(rng.uniform(0.9, 1.0) if stained else 0.0),
        stain_depth=stain_range(rng),
    )


def stain_range(rng: np.random.Generator) -> tuple[float, float]:
    """One stain per frame: every stained cell darkens by about the same 20-60 %."""
    depth = rng.uniform(0.2, 0.6)
    return (depth * 0.8, min(depth * 1.1, 0.65))
