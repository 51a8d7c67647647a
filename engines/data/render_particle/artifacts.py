"""One function per artifact kind: its particles, the layer they lie in and its footprint.

Sizes follow ArtSeg's screens (seed 001): a mean of about 1,500 um^2 (4,417 px at 0.59 um/px),
from specks of a few um to clumps covering up to 49 % of a field and hairs up to 10 %.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from engines.data.render_particle.cells import CellLook
from engines.data.render_particle.clouds import (
    Cloud,
    along_curve,
    footprint,
    inside_outline,
)

DENSITY = 1.5  # particles per px^2 of an artifact's body: dense enough for a solid footprint


@dataclass(slots=True)
class Artifact:
    layer: str  # "cell" (the cells' plane), "bottom" (the plate's floor), "float" or "optics"
    cloud: Cloud | None
    footprint: np.ndarray  # bool, the frame's shape
    shadow: np.ndarray | None = None  # "optics": a factor on the light, not imaged


@dataclass(frozen=True, slots=True)
class Where:
    shape: tuple[int, int]
    um: float  # pixel size
    look: CellLook

    @property
    def area_um2(self) -> float:
        return self.shape[0] * self.shape[1] * self.um**2

    def point(self, rng: np.random.Generator) -> tuple[float, float]:
        return float(rng.uniform(0, self.shape[0])), float(rng.uniform(0, self.shape[1]))


def _radius_px(rng: np.random.Generator, w: Where, median_um2: float, spread: float,
               max_share: float) -> float:
    """A body's radius from a log-normal area, capped at `max_share` of the field."""
    area = min(rng.lognormal(math.log(median_um2), spread), max_share * w.area_um2)
    return math.sqrt(area / math.pi) / w.um


def _body(rng: np.random.Generator, w: Where, r_px: float, aspect: float, roughness: float,
          absorb: float, scatter: float, texture: float, layer: str = "cell") -> Artifact:
    cy, cx = w.point(rng)
    n = max(int(DENSITY * math.pi * r_px**2), 8)
    y, x, _ = inside_outline(rng, n, cy, cx, r_px, aspect, rng.uniform(0, math.pi), roughness)
    grain = rng.lognormal(0, texture, n) / DENSITY
    cloud = Cloud.of(y, x, absorb * grain, scatter * grain)
    return Artifact(layer, cloud, footprint(cloud, w.shape))


def dust(rng: np.random.Generator, w: Where) -> Artifact:
    r = _radius_px(rng, w, 120.0, 1.0, 0.002)
    return _body(rng, w, r, rng.uniform(1, 1.8), rng.uniform(0.8, 1.8),
                 rng.uniform(1.0, 3.0), rng.uniform(0.2, 1.0), 0.4)


def debris(rng: np.random.Generator, w: Where) -> Artifact:
    r = _radius_px(rng, w, 1500.0, 1.0, 0.05)
    return _body(rng, w, r, rng.uniform(1, 3), rng.uniform(1.0, 2.2),
                 rng.uniform(0.15, 1.2), rng.uniform(0.2, 1.2), rng.uniform(0.3, 1.0))


def fibre(rng: np.random.Generator, w: Where) -> Artifact:
    width_px = rng.uniform(1.0, 8.0) / w.um
    length_px = min(rng.lognormal(math.log(300), 0.7) / w.um,
                    0.10 * w.shape[0] * w.shape[1] / width_px)
    cy, cx = w.point(rng)
    y, x = along_curve(rng, cy, cx, length_px, rng.uniform(0.005, 0.08),
                       DENSITY * max(width_px, 1.0), width_px)
    per = 1 / DENSITY
    cloud = Cloud.of(y, x, rng.uniform(0.1, 1.5) * per, rng.uniform(0.2, 1.2) * per)
    return Artifact("cell", cloud, footprint(cloud, w.shape))


def bubble(rng: np.random.Generator, w: Where) -> Artifact:
    """The meniscus sends light out of the aperture: a dark, refractile rim, a clear middle."""
    r = _radius_px(rng, w, 6000.0, 1.0, 0.2)
    cy, cx = w.point(rng)
    rim = rng.uniform(0.06, 0.2)
    n = int(DENSITY * 2 * math.pi * r * max(rim * r, 1.0))
    theta = rng.uniform(0, 2 * math.pi, n)
    rr = r * (1 - rim * rng.random(n))
    # Light hitting the meniscus is reflected away: the rim is lost light, whatever the focus.
    cloud = Cloud.of(cy + rr * np.sin(theta), cx + rr * np.cos(theta),
                     rng.uniform(0.8, 2.5) / DENSITY, rng.uniform(1.5, 4.0) / DENSITY)
    yy, xx = np.ogrid[: w.shape[0], : w.shape[1]]
    return Artifact("float", cloud, (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r)


def clump(rng: np.random.Generator, w: Where) -> Artifact:
    """Detached cells heaped up and floating: many dense bodies, dark where they stack."""
    r = _radius_px(rng, w, 8000.0, 1.1, 0.49)
    cy, cx = w.point(rng)
    cell_px = max(min(w.look.radius_um / w.um * 0.5, r / 2), 3.0)
    count = int(np.clip((r / cell_px) ** 2 * rng.uniform(1.5, 3.0), 3, 400))
    parts = []
    for _ in range(count):
        off = rng.normal(0, r / 2.2, 2)
        n = int(DENSITY * math.pi * cell_px**2)
        y, x, rel = inside_outline(rng, n, cy + off[0], cx + off[1], cell_px, 1.2, 0.0, 0.3,
                                   centre_weight=1.0)
        parts.append(Cloud.of(y, x, (0.4 + w.look.stain) * (1.5 - rel) / DENSITY,
                              0.6 * (1.5 - rel) / DENSITY))
    cloud = Cloud.join(parts)
    return Artifact("float", cloud, footprint(cloud, w.shape, close_px=int(cell_px)))


def precipitate(rng: np.random.Generator, w: Where) -> Artifact:
    """Many small crystals, very dark and refractile, scattered around a centre."""
    spread = _radius_px(rng, w, 2500.0, 0.8, 0.1)
    cy, cx = w.point(rng)
    parts = []
    for _ in range(int(rng.integers(15, 250))):
        r = rng.uniform(0.5, 4.0) / w.um
        y, x, _ = inside_outline(rng, max(int(DENSITY * math.pi * r * r), 6),
                                 cy + rng.normal(0, spread / 2), cx + rng.normal(0, spread / 2),
                                 r, rng.uniform(1, 4), rng.uniform(0, math.pi), 0.3)
        parts.append(Cloud.of(y, x, rng.uniform(1.5, 4.0) / DENSITY, 1.0 / DENSITY))
    cloud = Cloud.join(parts)
    return Artifact("cell", cloud, footprint(cloud, w.shape, close_px=2))


def dirt(rng: np.random.Generator, w: Where) -> Artifact:
    """Dirt on a lens or the condenser: far out of focus, a soft round shadow, never sharp."""
    r = _radius_px(rng, w, 20000.0, 0.9, 0.25)
    cy, cx = w.point(rng)
    yy, xx = np.ogrid[: w.shape[0], : w.shape[1]]
    d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2) / r
    softness = rng.uniform(0.15, 0.5)
    profile = 1 / (1 + np.exp((d - 1) / softness))
    profile = (profile / max(float(profile.max()), 1e-6)).astype(np.float32)
    depth = rng.uniform(0.05, 0.35)
    return Artifact("optics", None, profile >= 0.5, shadow=1 - depth * profile)


def scratch(rng: np.random.Generator, w: Where) -> Artifact:
    """A straight score in the plate's floor, refractile, across much of the field."""
    width_px = rng.uniform(0.5, 3.0) / w.um
    length_px = rng.uniform(0.3, 1.2) * math.hypot(*w.shape)
    cy, cx = w.point(rng)
    y, x = along_curve(rng, cy, cx, length_px, 0.0, DENSITY * max(width_px, 1.0), width_px)
    cloud = Cloud.of(y, x, rng.uniform(0.0, 0.3) / DENSITY, rng.uniform(0.8, 2.5) / DENSITY)
    return Artifact("bottom", cloud, footprint(cloud, w.shape))


DRAW: dict[str, Callable[[np.random.Generator, Where], Artifact]] = {
    "dust": dust, "debris": debris, "fibre": fibre, "bubble": bubble, "clump": clump,
    "precipitate": precipitate, "dirt": dirt, "scratch": scratch,
}
