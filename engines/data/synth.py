"""Synthetic brightfield frames with artifact ground truth: what every model trains and tests on.

A frame is rendered in three layers, each built from small patches (never a full-frame
operation per object):

- optical path ``phase``: cells (near-transparent, irregular, with a nucleus and texture) and the
  refractive part of some artifacts. Brightfield shows a slightly defocused phase object as
  ``1 + k * laplacian(phase)`` (transport of intensity), which gives the bright rim just outside
  and the dark rim just inside every cell edge.
- ``absorbance``: what dims or brightens the light (artifacts, a little of every cell).
- illumination, gain, offset and camera noise, drawn per frame.

The mask is each artifact's visible footprint, labelled 1..n in drawing order (later wins).
Sizes are drawn in micrometres and converted with the frame's pixel size.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage as ndi

from engines.files import replace_atomically

logger = logging.getLogger(__name__)

ARTIFACT_KINDS = ("dust", "debris", "fibre", "bubble", "clump", "precipitate", "dirt", "scratch")
DTYPES = ("uint16", "uint8")
MIN_OBJECT_PX = 20  # an artifact whose footprint (inside the frame) is smaller is not drawn
OBJECT_COLUMNS = (
    "source",
    "kind",
    "label",
    "area_px",
    "equivalent_diameter_px",
    "centroid_y",
    "centroid_x",
)


@dataclass(frozen=True, slots=True)
class SynthOptions:
    height: int = 1080
    width: int = 1080
    pixel_size_um: float | None = None  # None -> drawn per frame, uniform in [0.3, 1.0]
    dtype: str = "uint16"  # "uint16" | "uint8"
    artifact_probability: float = 0.5  # chance a frame holds >= 1 artifact
    kinds: tuple[str, ...] = ARTIFACT_KINDS
    channels: int = 1  # >1: defocused copies stacked as (C, H, W); channel 0 is the nominal image
    planes: int = 1  # >1: a z-stack (Z, H, W) through focus; the mask is the in-focus truth

    def __post_init__(self) -> None:
        if self.height < 16 or self.width < 16:
            raise ValueError(
                f"height and width must be at least 16 px, got {self.height}x{self.width}"
            )
        if self.pixel_size_um is not None and not 0.05 <= self.pixel_size_um <= 20:
            raise ValueError(f"pixel_size_um must be in [0.05, 20] um, got {self.pixel_size_um}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if not 0.0 <= self.artifact_probability <= 1.0:
            raise ValueError(
                f"artifact_probability must be in [0, 1], got {self.artifact_probability}"
            )
        unknown = [k for k in self.kinds if k not in ARTIFACT_KINDS]
        if unknown or not self.kinds:
            raise ValueError(
                f"kinds must be a non-empty subset of {ARTIFACT_KINDS}, got {self.kinds}"
            )
        if self.channels < 1 or self.planes < 1:
            raise ValueError(
                f"channels and planes must be >= 1, got {self.channels}, {self.planes}"
            )
        if self.channels > 1 and self.planes > 1:
            raise ValueError(
                "channels and planes cannot both be > 1: a frame is (C, H, W) or (Z, H, W)"
            )


DEFAULT_OPTIONS = SynthOptions()  # what a renderer draws when it is given no options


@dataclass(frozen=True, slots=True)
class SynthObject:
    kind: str
    label: int
    area_px: int
    equivalent_diameter_px: float
    centroid_y: float
    centroid_x: float


@dataclass(frozen=True, slots=True)
class SynthFrame:
    image: np.ndarray  # (H, W) in the requested dtype; (C, H, W) or (Z, H, W) when stacked
    mask: np.ndarray  # (H, W) uint16 instance labels of artifacts, 0 = background
    label: str  # "clean" | "artifact"
    objects: tuple[SynthObject, ...]
    pixel_size_um: float


# --------------------------------------------------------------------------------------------
# Patches


@dataclass(slots=True)
class _Patch:
    """One object rendered in its bounding box; (y0, x0) is its top-left corner in the frame."""

    y0: int
    x0: int
    absorbance: np.ndarray  # float32; > 0 darkens, < 0 brightens
    footprint: np.ndarray | None = None  # bool: the mask truth; None for cells
    phase: np.ndarray | None = None  # float32, added to the optical path
    phase_scale: np.ndarray | None = None  # float32, multiplies what lies underneath (bubbles)


@dataclass(slots=True)
class _Canvas:
    phase: np.ndarray
    absorbance: np.ndarray
    mask: np.ndarray
    boxes: list[tuple[slice, slice]] = field(default_factory=list)  # per drawn artifact

    def clip(
        self, y0: int, x0: int, shape: tuple[int, ...]
    ) -> tuple[tuple[slice, slice], tuple[slice, slice]] | None:
        """Frame and patch slices of the part of a patch inside the frame, or None."""
        h, w = self.mask.shape
        fy0, fx0 = max(y0, 0), max(x0, 0)
        fy1, fx1 = min(y0 + shape[0], h), min(x0 + shape[1], w)
        if fy0 >= fy1 or fx0 >= fx1:
            return None
        frame = (slice(fy0, fy1), slice(fx0, fx1))
        local = (slice(fy0 - y0, fy1 - y0), slice(fx0 - x0, fx1 - x0))
        return frame, local

    def draw_artifact(self, patch: _Patch) -> bool:
        """Draw an artifact unless its footprint inside the frame is under MIN_OBJECT_PX."""
        assert patch.footprint is not None
        cut = self.clip(patch.y0, patch.x0, patch.footprint.shape)
        if cut is None:
            return False
        frame, local = cut
        footprint = patch.footprint[local]
        if np.count_nonzero(footprint) < MIN_OBJECT_PX:
            return False
        if patch.phase_scale is not None:
            self.phase[frame] *= patch.phase_scale[local]
        if patch.phase is not None:
            self.phase[frame] += patch.phase[local]
        self.absorbance[frame] += patch.absorbance[local]
        self.boxes.append(frame)
        self.mask[frame][footprint] = len(self.boxes)
        return True


def _grid(half_h: int, half_w: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Open grid of patch coordinates around a sub-pixel-jittered centre."""
    y = np.arange(-half_h, half_h + 1, dtype=np.float32) - np.float32(rng.uniform(-0.5, 0.5))
    x = np.arange(-half_w, half_w + 1, dtype=np.float32) - np.float32(rng.uniform(-0.5, 0.5))
    return y[:, None], x[None, :]


def _blob(
    rng: np.random.Generator, radius: float, *, roughness: float, elongation: float, pad: int = 3
) -> np.ndarray:
    """Normalised radius of an irregular blob (1 on its outline) on a patch that holds it.

    The outline is a circle, stretched to an ellipse and perturbed by random harmonics 2..6.
    """
    harmonics = np.arange(2, 7, dtype=np.float32)
    amplitude = (rng.normal(0, roughness, 5) / harmonics**1.2).astype(np.float32)
    phases = rng.uniform(0, 2 * math.pi, 5).astype(np.float32)
    reach = radius * (1 + float(np.abs(amplitude).sum()))
    half = math.ceil(reach) + pad
    y, x = _grid(half, half, rng)
    angle = rng.uniform(0, math.pi)
    c, s = np.float32(math.cos(angle)), np.float32(math.sin(angle))
    u = x * c + y * s
    v = (y * c - x * s) / np.float32(elongation)
    rho = np.sqrt(u * u + v * v) / np.float32(radius)
    theta = np.arctan2(v, u)
    outline = np.ones_like(rho)
    for k, a, p in zip(harmonics, amplitude, phases, strict=True):
        outline += a * np.cos(k * theta + p)
    np.maximum(outline, 0.35, out=outline)
    return rho / outline


def _ramp(rho_n: np.ndarray, radius_px: float, edge_px: float) -> np.ndarray:
    """1 inside, 0 outside, a linear edge `edge_px` wide centred on the outline."""
    return np.clip((1 - rho_n) * np.float32(radius_px / edge_px) + 0.5, 0, 1)


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def _contrast(rng: np.random.Generator) -> float:
    """Most artifacts are clearly visible; about one in five is subtle."""
    return rng.uniform(0.25, 0.5) if rng.random() < 0.2 else rng.uniform(0.75, 1.3)


def _soften(rng: np.random.Generator, absorbance: np.ndarray, chance: float = 0.35) -> np.ndarray:
    """Sometimes blur an artifact's borders (slightly out of focus)."""
    if rng.random() < chance:
        return ndi.gaussian_filter(absorbance, rng.uniform(0.8, 2.5), truncate=3.0)
    return absorbance


def _stamp_path(
    shape: tuple[int, int], ys: np.ndarray, xs: np.ndarray, radius: float, edge_px: float
) -> tuple[int, int, np.ndarray]:
    """Soft thick line: the max of soft discs centred on dense path points, clipped to the frame.

    Returns (y0, x0, profile) with profile in [0, 1] on the bounding box of what is inside.
    """
    reach = math.ceil(radius + edge_px)
    oy, ox = np.mgrid[-reach : reach + 1, -reach : reach + 1]
    dist = np.hypot(oy, ox).astype(np.float32)
    keep = dist <= radius + edge_px
    oy, ox, weight = oy[keep], ox[keep], np.clip((radius - dist[keep]) / edge_px + 0.5, 0, 1)
    cy, cx = np.rint(ys).astype(np.int64), np.rint(xs).astype(np.int64)
    h, w = shape
    inside = (cy >= -reach) & (cy < h + reach) & (cx >= -reach) & (cx < w + reach)
    cy, cx = cy[inside], cx[inside]
    if cy.size == 0:
        return 0, 0, np.zeros((1, 1), np.float32)
    rr = (cy[:, None] + oy[None, :]).ravel()
    cc = (cx[:, None] + ox[None, :]).ravel()
    ww = np.broadcast_to(weight, (cy.size, weight.size)).ravel()
    ok = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
    rr, cc, ww = rr[ok], cc[ok], ww[ok]
    if rr.size == 0:
        return 0, 0, np.zeros((1, 1), np.float32)
    y0, x0 = int(rr.min()), int(cc.min())
    profile = np.zeros((int(rr.max()) - y0 + 1, int(cc.max()) - x0 + 1), np.float32)
    np.maximum.at(profile, (rr - y0, cc - x0), ww)
    return y0, x0, profile


def _assemble(
    parts: list[tuple[np.ndarray, np.ndarray, float, float]],
) -> tuple[np.ndarray, np.ndarray]:
    """Union of (value, footprint, dy, dx) pieces placed around a common centre.

    Values combine by maximum (overlapping pieces do not stack), footprints by union.
    """
    tops = [round(dy) - v.shape[0] // 2 for v, _, dy, _ in parts]
    lefts = [round(dx) - v.shape[1] // 2 for v, _, _, dx in parts]
    y0, x0 = min(tops), min(lefts)
    y1 = max(t + v.shape[0] for t, (v, *_rest) in zip(tops, parts, strict=True))
    x1 = max(left + v.shape[1] for left, (v, *_rest) in zip(lefts, parts, strict=True))
    half_h, half_w = max(-y0, y1), max(-x0, x1)  # keep the common centre in the middle
    values = np.zeros((2 * half_h + 1, 2 * half_w + 1), np.float32)
    footprint = np.zeros(values.shape, bool)
    for top, left, (value, inside, _, _) in zip(tops, lefts, parts, strict=True):
        window = (
            slice(half_h + top, half_h + top + value.shape[0]),
            slice(half_w + left, half_w + left + value.shape[1]),
        )
        np.maximum(values[window], value, out=values[window])
        footprint[window] |= inside
    return values, footprint


# --------------------------------------------------------------------------------------------
# Artifacts: each returns a patch around (cy, cx), sizes drawn in um.


@dataclass(frozen=True, slots=True)
class _Where:
    cy: float
    cx: float
    um: float  # pixel size, um/px
    shape: tuple[int, int]

    def px(self, micrometres: float) -> float:
        return micrometres / self.um

    def corner(self, patch: np.ndarray) -> tuple[int, int]:
        return round(self.cy) - patch.shape[0] // 2, round(self.cx) - patch.shape[1] // 2


def _dust(rng: np.random.Generator, at: _Where) -> _Patch:
    radius = at.px(_log_uniform(rng, 3, 15)) / 2
    rho = _blob(rng, radius, roughness=0.35, elongation=rng.uniform(0.5, 1), pad=3)
    body = _ramp(rho, radius, rng.uniform(0.6, 1.2))
    absorbance = _soften(rng, body * np.float32(rng.uniform(1.0, 3.0) * _contrast(rng)), 0.2)
    phase = body * np.float32(rng.uniform(0.5, 1.5)) if rng.random() < 0.4 else None
    y0, x0 = at.corner(rho)
    return _Patch(y0, x0, absorbance, rho <= 1, phase)


def _debris(rng: np.random.Generator, at: _Where) -> _Patch:
    size = at.px(_log_uniform(rng, 8, 60))
    parts = []
    for i in range(int(rng.integers(1, 4))):
        radius = size / 2 * (1.0 if i == 0 else rng.uniform(0.25, 0.6))
        rho = _blob(rng, radius, roughness=0.8, elongation=rng.uniform(0.3, 1), pad=2)
        grain = rng.normal(0, 1, rho.shape).astype(np.float32)
        scale = max(radius / 5, 1.0)
        grain = 1 + ndi.gaussian_filter(grain, scale) * np.float32(2 * scale)
        grain += rng.normal(0, 0.2, rho.shape).astype(np.float32)
        dark = _ramp(rho, radius, rng.uniform(0.7, 1.5)) * grain * np.float32(rng.uniform(0.4, 1.6))
        dy, dx = (0.0, 0.0) if i == 0 else rng.normal(0, size * 0.3, 2)
        parts.append((dark, rho <= 1, dy, dx))
    absorbance, footprint = _assemble(parts)
    absorbance = _soften(rng, ndi.gaussian_filter(absorbance, 0.7) * np.float32(_contrast(rng)))
    phase = footprint * np.float32(rng.uniform(0.5, 2.0)) if rng.random() < 0.5 else None
    y0, x0 = at.corner(absorbance)
    return _Patch(y0, x0, absorbance, footprint, phase)


def _curve(
    rng: np.random.Generator, at: _Where, length: float, bend: float
) -> tuple[np.ndarray, np.ndarray]:
    """A smooth path through (cy, cx), sampled every 0.5 px."""
    n = max(int(length * 2), 4)
    turn = np.cumsum(rng.normal(0, bend, n))
    heading = rng.uniform(0, 2 * math.pi) + ndi.gaussian_filter1d(turn, n / 8 + 1)
    ys = np.cumsum(np.sin(heading)) * 0.5
    xs = np.cumsum(np.cos(heading)) * 0.5
    return at.cy + ys - ys[n // 2], at.cx + xs - xs[n // 2]


def _fibre(rng: np.random.Generator, at: _Where) -> _Patch:
    width = at.px(rng.uniform(2, 6))
    length = at.px(_log_uniform(rng, 50, 500))
    ys, xs = _curve(rng, at, length, bend=rng.uniform(0.0, 0.06))
    edge = rng.uniform(0.7, 2.0)
    y0, x0, outer = _stamp_path(at.shape, ys, xs, width / 2, edge)
    strength = np.float32(rng.uniform(0.4, 1.4) * _contrast(rng))
    absorbance = outer * strength
    if rng.random() < 0.3:  # a glassy fibre: dark edges, bright core
        _, _, core = _stamp_path(at.shape, ys, xs, width / 5, edge)
        if core.shape == outer.shape:
            absorbance -= core * strength * np.float32(1.4)
    footprint = outer >= 0.5
    return _Patch(y0, x0, absorbance, footprint, outer * np.float32(rng.uniform(0, 1.5)))


def _scratch(rng: np.random.Generator, at: _Where) -> _Patch:
    h, w = at.shape
    length = math.hypot(h, w) * rng.uniform(0.3, 1.1)
    ys, xs = _curve(rng, at, length, bend=0.0)
    width = rng.uniform(1.0, 4.0)
    y0, x0, profile = _stamp_path(at.shape, ys, xs, width / 2, rng.uniform(0.6, 1.5))
    sign = 1 if rng.random() < 0.5 else -1
    absorbance = profile * np.float32(sign * rng.uniform(0.1, 0.6) * _contrast(rng))
    return _Patch(y0, x0, absorbance, profile >= 0.5)


def _bubble(rng: np.random.Generator, at: _Where) -> _Patch:
    radius = at.px(_log_uniform(rng, 20, 200)) / 2
    half = int(radius) + 4
    y, x = _grid(half, half, rng)
    squash = np.float32(rng.uniform(0.88, 1.0))
    r = np.sqrt(x * x + (y / squash) ** 2) / np.float32(radius)
    rim = np.float32(rng.uniform(0.08, 0.25))
    edge = _ramp(r, radius, 1.5)
    inside = np.clip(1 - r / (1 - rim), 0, 1)
    ring = np.clip((r - (1 - rim)) / (rim * 0.6), 0, 1) * edge
    tilt = rng.uniform(0, 2 * math.pi)
    along = x * np.float32(math.cos(tilt)) + y * np.float32(math.sin(tilt))
    shade = 1 + np.float32(rng.uniform(0, 0.5)) * along / np.float32(radius)
    strength = rng.uniform(0.5, 1.8) * _contrast(rng)
    absorbance = (
        ring * shade * np.float32(strength)
        - np.sqrt(inside) * np.float32(rng.uniform(0.08, 0.4))
    )
    phase = edge * np.float32(rng.uniform(0.5, 2.0))
    phase_scale = 1 - edge * np.float32(rng.uniform(0.3, 0.9))  # cells blur out behind it
    y0, x0 = at.corner(r)
    return _Patch(y0, x0, absorbance, r <= 1, phase, phase_scale)


def _clump(rng: np.random.Generator, at: _Where) -> _Patch:
    size = at.px(_log_uniform(rng, 30, 150))
    cell = at.px(rng.uniform(4, 9))  # radius of one rounded cell
    spread = max(size / 2 - cell, 1.0)
    count = int(np.clip((size / (2 * cell)) ** 2 * rng.uniform(0.6, 1.2), 3, 60))
    angles = rng.uniform(0, 2 * math.pi, count)
    dists = spread * np.sqrt(rng.uniform(0, 1, count))
    parts = []
    for a, d in zip(angles, dists, strict=True):
        radius = cell * rng.uniform(0.75, 1.3)
        rho = _blob(rng, radius, roughness=0.08, elongation=rng.uniform(0.8, 1), pad=2)
        # Rounded detached cells: dark, often with a bright refractile centre.
        centre = np.clip(1 - rho * 2.2, 0, 1) * np.float32(rng.uniform(0, 0.5))
        dark = _ramp(rho, radius, 1.2) * (np.float32(rng.uniform(0.4, 1.2)) - centre)
        parts.append((dark, rho <= 1, d * math.sin(a), d * math.cos(a)))
    absorbance, footprint = _assemble(parts)
    absorbance = _soften(rng, absorbance * np.float32(_contrast(rng)), 0.25)
    phase = absorbance * np.float32(rng.uniform(0.8, 2.0))
    y0, x0 = at.corner(absorbance)
    return _Patch(y0, x0, absorbance, footprint, phase)


def _precipitate(rng: np.random.Generator, at: _Where) -> _Patch:
    size = at.px(_log_uniform(rng, 15, 80))
    count = int(np.clip(rng.uniform(0.02, 0.12) * size * size, 12, 600))
    rho = _blob(rng, size / 2, roughness=0.3, elongation=rng.uniform(0.5, 1), pad=8)
    inside = np.flatnonzero(rho.ravel() <= 1)
    dots = np.zeros(rho.shape, np.float32)
    if inside.size:
        pick = rng.choice(inside, size=min(count, inside.size), replace=False)
        py, px = np.unravel_index(pick, rho.shape)
        dots[py, px] = rng.uniform(0.4, 1.0, py.size)
        big = rng.random(py.size) < 0.3  # some crystals are 2x2 px
        dots[py[big] + 1, px[big]] = 1
        dots[py[big], px[big] + 1] = 1
    crystals = ndi.gaussian_filter(dots, rng.uniform(0.5, 0.9), truncate=3.0)
    peak = max(float(crystals.max()), 1e-6)
    crystals *= np.float32(rng.uniform(1.0, 3.0) * _contrast(rng)) / peak
    # The cluster region: every dot dilated by about the mean dot spacing, holes filled.
    spacing = max(1.5, size / math.sqrt(count) * 0.5)
    cloud = ndi.gaussian_filter((dots > 0).astype(np.float32), spacing, truncate=2.5)
    footprint = ndi.binary_fill_holes(cloud > math.exp(-2) / (2 * math.pi * spacing**2))
    y0, x0 = at.corner(dots)
    return _Patch(y0, x0, crystals, footprint, crystals * np.float32(rng.uniform(0, 0.6)))


def _dirt(rng: np.random.Generator, at: _Where) -> _Patch:
    radius = at.px(_log_uniform(rng, 40, 250)) / 2
    blur = rng.uniform(0.25, 0.6)  # relative edge width: dirt on the light path is out of focus
    half = int(radius * (1 + blur)) + 3
    y, x = _grid(half, half, rng)
    squash = np.float32(rng.uniform(0.85, 1.0))
    r = np.sqrt(x * x + (y / squash) ** 2) / np.float32(radius)
    disc = np.clip((1 - r) / np.float32(blur) + 0.5, 0, 1)
    disc = disc * disc * (3 - 2 * disc)
    if rng.random() < 0.45:  # seen as a ring (out-of-focus particle), sometimes with fringes
        peak, width = np.float32(rng.uniform(0.6, 0.9)), np.float32(rng.uniform(0.1, 0.25))
        ring = np.exp(-(((r - peak) / width) ** 2))
        disc = disc * (np.float32(rng.uniform(0.1, 0.5)) + ring)
        if rng.random() < 0.5:
            disc *= 1 + np.float32(0.3) * np.cos(r * np.float32(rng.uniform(10, 25)))
    strength = rng.uniform(0.06, 0.25) * (0.6 if rng.random() < 0.3 else 1.0)
    absorbance = disc * np.float32(strength / max(float(disc.max()), 1e-6))
    y0, x0 = at.corner(r)
    return _Patch(y0, x0, absorbance, r <= 1)


_ARTIFACTS: dict[str, Callable[[np.random.Generator, _Where], _Patch]] = {
    "dust": _dust,
    "debris": _debris,
    "fibre": _fibre,
    "bubble": _bubble,
    "clump": _clump,
    "precipitate": _precipitate,
    "dirt": _dirt,
    "scratch": _scratch,
}


# --------------------------------------------------------------------------------------------
# Cells


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
            rho = _blob(rng, radius, roughness=0.03, elongation=rng.uniform(0.9, 1), pad=3)
            dome = np.sqrt(np.clip(1 - rho * rho, 0, 1)) * _ramp(rho, radius, 1.0)
            phase = dome * np.float32(rng.uniform(2.0, 3.5))
            # A rounded cell lenses light in.
            absorbance = -dome * np.float32(rng.uniform(0.1, 0.35))
        else:
            radius = radius_px * rng.uniform(0.75, 1.3)
            rho = _blob(
                rng,
                radius,
                roughness=rng.uniform(0.3, 1.0) * style.roughness,
                elongation=rng.uniform(style.elongation, 1),
                pad=3,
            )
            body = _ramp(rho, radius, rng.uniform(1.0, 2.5))
            dome = np.clip(1 - rho * rho, 0, 1) * np.float32(rng.uniform(0.2, 1.0))
            phase = body * (1 + dome)
            nucleus_r = radius * rng.uniform(0.28, 0.45)
            oy, ox = rng.normal(0, radius * 0.12, 2)
            y, x = _grid(rho.shape[0] // 2, rho.shape[1] // 2, rng)
            squash = np.float32(rng.uniform(0.8, 1.2))
            nucleus = np.sqrt((y - np.float32(oy)) ** 2 + ((x - np.float32(ox)) * squash) ** 2)
            nucleus_body = _ramp(nucleus / np.float32(nucleus_r), nucleus_r, 2.0) * body
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


def _draw_cells(rng: np.random.Generator, canvas: _Canvas, um: float) -> None:
    """Scatter cells, from sparse to confluent."""
    h, w = canvas.mask.shape
    style = _cell_style(rng, um)
    coverage = _log_uniform(rng, 0.02, 0.9)
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


# --------------------------------------------------------------------------------------------
# Optics and camera


@dataclass(frozen=True, slots=True)
class _Camera:
    background: float  # DN of the background at the centre
    offset: float  # DN of a dark pixel
    gain: float  # DN per electron
    read_noise_e: float
    speckle: float  # relative multiplicative noise
    maximum: int


def _camera(rng: np.random.Generator, dtype: str) -> _Camera:
    if dtype == "uint16":
        background, offset, maximum = _log_uniform(rng, 800, 30000), rng.uniform(90, 110), 65535
        electrons = _log_uniform(rng, 800, 20000)
    else:
        background, offset, maximum = rng.uniform(60, 200), rng.uniform(0, 8), 255
        electrons = _log_uniform(rng, 300, 8000)
    gain = (background - offset) / electrons
    speckle = rng.uniform(0.005, 0.03) if rng.random() < 0.3 else 0.0
    return _Camera(background, offset, gain, rng.uniform(1.5, 8.0), speckle, maximum)


def _illumination(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Smooth uneven illumination: a tilted, vignetted second-order surface, sometimes fringes."""
    y = np.linspace(-1, 1, h, dtype=np.float32)[:, None] - np.float32(rng.uniform(-0.3, 0.3))
    x = np.linspace(-1, 1, w, dtype=np.float32)[None, :] - np.float32(rng.uniform(-0.3, 0.3))
    vignette = rng.uniform(0, 0.25)
    a, b = rng.normal(0, 0.06, 2)
    cy, cx, cxy = rng.normal(0, 0.04, 3)
    rows = 1 + np.float32(a) * y + np.float32(cy - vignette) * y * y
    cols = np.float32(b) * x + np.float32(cx - vignette) * x * x
    light = rows + cols + np.float32(cxy) * y * x
    if rng.random() < 0.3:  # faint interference fringes from the optics
        fy, fx = rng.normal(0, 12, 2)
        p = rng.uniform(0, 2 * math.pi)
        amp = np.float32(rng.uniform(0.002, 0.008))
        wy = np.float32(fy) * y + np.float32(p)
        wx = np.float32(fx) * x
        light += amp * (np.sin(wy) * np.cos(wx) + np.cos(wy) * np.sin(wx))
    return np.maximum(light, np.float32(0.2))


def _laplacian(image: np.ndarray) -> np.ndarray:
    out = np.zeros_like(image)
    out[1:-1, 1:-1] = (
        image[:-2, 1:-1] + image[2:, 1:-1] + image[1:-1, :-2] + image[1:-1, 2:]
        - 4 * image[1:-1, 1:-1]
    )
    return out


@dataclass(frozen=True, slots=True)
class _View:
    """One rendered image of the same scene: nominal focus or a defocused copy."""

    contrast: float  # multiplies laplacian(phase); its sign flips through focus
    blur_px: float  # extra blur of absorbing things


def _views(rng: np.random.Generator, options: SynthOptions, contrast: float) -> list[_View]:
    if options.planes > 1:
        span = rng.uniform(1.5, 3.0)
        offsets = np.linspace(-span, span, options.planes)
        return [_View(contrast * (1 + dz), 1.2 * abs(dz)) for dz in offsets]
    views = [_View(contrast, 0.0)]
    for c in range(1, options.channels):
        views.append(_View(contrast * (1 + c * (2.0 if c % 2 else -1.5)), 1.0 + 0.8 * c))
    return views


def _expose(
    rng: np.random.Generator,
    light: np.ndarray,
    transmission: np.ndarray,
    relief: np.ndarray,
    camera: _Camera,
    dtype: str,
) -> np.ndarray:
    """Camera: signal in electrons, shot + read (+ speckle) noise, gain, offset, clipping."""
    signal = light * transmission
    signal *= 1 + relief
    np.maximum(signal, 0.02, out=signal)
    electrons = signal * np.float32((camera.background - camera.offset) / camera.gain)
    # Shot noise is Poisson; at these counts (hundreds to tens of thousands of electrons) a
    # Gaussian with variance = mean is indistinguishable from it and several times faster.
    variance = electrons + np.float32(camera.read_noise_e**2)
    if camera.speckle:
        variance += (electrons * np.float32(camera.speckle)) ** 2
    noise = rng.standard_normal(electrons.shape, dtype=np.float32)
    noise *= np.sqrt(variance)
    electrons += noise
    electrons *= np.float32(camera.gain)
    electrons += np.float32(camera.offset)
    np.clip(electrons, 0, camera.maximum, out=electrons)
    return np.rint(electrons, out=electrons).astype(dtype)


# --------------------------------------------------------------------------------------------
# Frames


def make_frame(rng: np.random.Generator, options: SynthOptions = DEFAULT_OPTIONS) -> SynthFrame:
    """Render one synthetic brightfield frame with its artifact mask and object table."""
    h, w = options.height, options.width
    um = options.pixel_size_um if options.pixel_size_um is not None else rng.uniform(0.3, 1.0)
    canvas = _Canvas(
        phase=np.zeros((h, w), np.float32),
        absorbance=np.zeros((h, w), np.float32),
        mask=np.zeros((h, w), np.uint16),
    )
    _draw_cells(rng, canvas, um)

    kinds: list[str] = []
    if rng.random() < options.artifact_probability:
        wanted = int(rng.choice([1, 1, 2, 2, 3, 4, 5]))
        for _attempt in range(wanted * 20):
            if len(kinds) == wanted:
                break
            kind = str(rng.choice(options.kinds))
            at = _Where(rng.uniform(0, h), rng.uniform(0, w), um, (h, w))
            if canvas.draw_artifact(_ARTIFACTS[kind](rng, at)):
                kinds.append(kind)

    # The optics: the phase image seen through a slightly defocused objective.
    psf = float(np.clip(0.45 / um, 0.7, 2.0) * rng.uniform(0.8, 1.25))
    if rng.random() < 0.15:  # the autofocus missed a little
        psf *= rng.uniform(1.3, 2.0)
    # Fine texture inside cells: grain drawn at half resolution, proportional to thickness.
    grain = rng.standard_normal(((h + 1) // 2, (w + 1) // 2), dtype=np.float32)
    grain = np.repeat(np.repeat(grain, 2, axis=0), 2, axis=1)[:h, :w]
    grain *= np.float32(rng.uniform(0.02, 0.15))
    grain += 1
    canvas.phase *= grain
    halo = rng.uniform(0.06, 0.3) * (psf * psf + 0.5) / 0.24  # peak rim contrast of a unit step
    camera = _camera(rng, options.dtype)
    light = _illumination(rng, h, w)
    transmission = np.exp(-canvas.absorbance)
    images = []
    for view in _views(rng, options, halo):
        sigma = math.hypot(psf, view.blur_px)
        relief = _laplacian(ndi.gaussian_filter(canvas.phase, sigma, truncate=3.0))
        relief *= np.float32(view.contrast)
        seen = transmission
        if view.blur_px:
            seen = ndi.gaussian_filter(transmission, view.blur_px, truncate=3.0)
        images.append(_expose(rng, light, seen, relief, camera, options.dtype))
    image = images[0] if len(images) == 1 else np.stack(images)

    mask, objects = _measure(canvas, kinds)
    return SynthFrame(
        image=image,
        mask=mask,
        label="artifact" if objects else "clean",
        objects=objects,
        pixel_size_um=float(um),
    )


def _measure(canvas: _Canvas, kinds: list[str]) -> tuple[np.ndarray, tuple[SynthObject, ...]]:
    """Objects as the mask shows them; labels renumbered 1..n if a later artifact hid one."""
    mask = canvas.mask
    found = []
    for label, (kind, box) in enumerate(zip(kinds, canvas.boxes, strict=True), start=1):
        ys, xs = np.nonzero(mask[box] == label)
        if ys.size:
            found.append((label, kind, ys.size, box[0].start + ys.mean(), box[1].start + xs.mean()))
    if len(found) < len(kinds):
        lut = np.zeros(len(kinds) + 1, np.uint16)
        for new, (old, *_rest) in enumerate(found, start=1):
            lut[old] = new
        mask = lut[mask]
    objects = tuple(
        SynthObject(
            kind=kind,
            label=new,
            area_px=int(area),
            equivalent_diameter_px=float(math.sqrt(4 * area / math.pi)),
            centroid_y=float(cy),
            centroid_x=float(cx),
        )
        for new, (_old, kind, area, cy, cx) in enumerate(found, start=1)
    )
    return mask, objects


# Independently written renderers, each a different idea of how a brightfield image forms, so
# a model can be trained on some and judged on one it never saw (module: its make_frame).
RENDERERS = {
    "halo": "engines.data.synth",  # this module: round cells, transport-of-intensity halos
    "wave": "engines.data.render_wave",  # wave optics: transmission, defocus, pupil, sCMOS
    "monolayer": "engines.data.render_monolayer",  # procedural intensity layers: adherent cells
    "relief": "engines.data.render_relief",  # height field under oblique light, Beer-Lambert stain
    "caustic": "engines.data.render_caustic",  # ray displacement and caustics, level-set cells
}


def renderer(name: str) -> Callable[[np.random.Generator, SynthOptions], SynthFrame]:
    if name not in RENDERERS:
        raise ValueError(f"renderer {name!r}: expected one of {', '.join(RENDERERS)}")
    import importlib

    return importlib.import_module(RENDERERS[name]).make_frame


def frame_for(seed: int, index: int, options: SynthOptions = DEFAULT_OPTIONS,
              renderer_name: str = "halo") -> SynthFrame:
    """The frame `index` of the dataset `seed`: the same arguments always give the same arrays."""
    return renderer(renderer_name)(np.random.default_rng([seed, index]), options)


# --------------------------------------------------------------------------------------------
# Datasets


def _write_text(path: Path, text: str) -> None:
    replace_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _write_tiff(path: Path, array: np.ndarray, pixel_size_um: float) -> None:
    resolution = (1 / pixel_size_um, 1 / pixel_size_um)
    replace_atomically(
        path,
        lambda tmp: tifffile.imwrite(
            tmp, array, resolution=resolution, resolutionunit="MICROMETER", metadata=None
        ),
    )


def write_dataset(
    out: Path,
    count: int,
    seed: int,
    options: SynthOptions = DEFAULT_OPTIONS,
    *,
    progress: bool = True,
    renderer_name: str = "halo",
) -> Path:
    """Write `count` frames with masks, labels.csv, objects.csv and dataset.json into `out`.

    `source` in the CSVs is relative to out/frames (masks share the names under out/masks),
    which is what `artifactd train/eval --frames out/frames --masks out/masks` expect.
    """
    from tqdm import tqdm

    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    out = Path(out)
    (out / "frames").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    labels = io.StringIO()
    label_rows = csv.writer(labels, lineterminator="\n")
    label_rows.writerow(("source", "label"))
    objects = io.StringIO()
    object_rows = csv.writer(objects, lineterminator="\n")
    object_rows.writerow(OBJECT_COLUMNS)
    for index in tqdm(range(count), desc="synth", unit="frame", disable=not progress):
        frame = frame_for(seed, index, options, renderer_name)
        name = f"{index:05d}.tif"
        _write_tiff(out / "frames" / name, frame.image, frame.pixel_size_um)
        _write_tiff(out / "masks" / name, frame.mask, frame.pixel_size_um)
        source = name
        label_rows.writerow((source, frame.label))
        for obj in frame.objects:
            object_rows.writerow(
                (source, obj.kind, obj.label, obj.area_px, f"{obj.equivalent_diameter_px:.3f}",
                 f"{obj.centroid_y:.3f}", f"{obj.centroid_x:.3f}")
            )
    _write_text(out / "labels.csv", labels.getvalue())
    _write_text(out / "objects.csv", objects.getvalue())
    description = {
        "seed": seed, "count": count, "renderer": renderer_name, "options": asdict(options)
    }
    _write_text(out / "dataset.json", json.dumps(description, indent=2) + "\n")
    logger.info("wrote %d synthetic frames to %s", count, out)
    return out
