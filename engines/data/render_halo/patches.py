"""Patches: one object rendered in its bounding box, the canvas they are drawn on, shapes."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from engines.data.synth import MIN_OBJECT_PX


@dataclass(slots=True)
class Patch:
    """One object rendered in its bounding box; (y0, x0) is its top-left corner in the frame."""

    y0: int
    x0: int
    absorbance: np.ndarray  # float32; > 0 darkens, < 0 brightens
    footprint: np.ndarray | None = None  # bool: the mask truth; None for cells
    phase: np.ndarray | None = None  # float32, added to the optical path
    phase_scale: np.ndarray | None = None  # float32, multiplies what lies underneath (bubbles)


@dataclass(slots=True)
class Canvas:
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

    def draw_artifact(self, patch: Patch) -> bool:
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


def grid(half_h: int, half_w: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Open grid of patch coordinates around a sub-pixel-jittered centre."""
    y = np.arange(-half_h, half_h + 1, dtype=np.float32) - np.float32(rng.uniform(-0.5, 0.5))
    x = np.arange(-half_w, half_w + 1, dtype=np.float32) - np.float32(rng.uniform(-0.5, 0.5))
    return y[:, None], x[None, :]


def blob(
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
    y, x = grid(half, half, rng)
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


def ramp(rho_n: np.ndarray, radius_px: float, edge_px: float) -> np.ndarray:
    """1 inside, 0 outside, a linear edge `edge_px` wide centred on the outline."""
    return np.clip((1 - rho_n) * np.float32(radius_px / edge_px) + 0.5, 0, 1)


def log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def draw_contrast(rng: np.random.Generator) -> float:
    """Most artifacts are clearly visible; about one in five is subtle."""
    return rng.uniform(0.25, 0.5) if rng.random() < 0.2 else rng.uniform(0.75, 1.3)


def soften(rng: np.random.Generator, absorbance: np.ndarray, chance: float = 0.35) -> np.ndarray:
    """Sometimes blur an artifact's borders (slightly out of focus)."""
    if rng.random() < chance:
        return ndi.gaussian_filter(absorbance, rng.uniform(0.8, 2.5), truncate=3.0)
    return absorbance


def stamp_path(
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


def assemble(
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
