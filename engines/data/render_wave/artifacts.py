"""Artifacts: each is a patch of absorption and phase with its footprint (the mask truth)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from engines.data.render_wave.noise import F32, TAU, log_uniform, smooth_noise
from engines.data.render_wave.optics import Microscope, lost_light
from engines.data.synth import ARTIFACT_KINDS


@dataclass(slots=True)
class Piece:
    y0: int  # top-left corner in frame pixels (may lie outside the frame)
    x0: int
    absorption: np.ndarray
    phase: np.ndarray  # already wrapped into [-pi, pi): only exp(i*phase) matters
    footprint: np.ndarray  # bool
    far: bool = False  # lies on a dirty optical surface far from focus


@dataclass(frozen=True, slots=True)
class Spot:
    cy: float
    cx: float
    scope: Microscope
    shape: tuple[int, int]

    def grid(
        self, half_y: float, half_x: float, margin: int = 8
    ) -> tuple[int, int, np.ndarray, np.ndarray]:
        """Open grids (px, relative to the spot) of a patch reaching half_y/half_x around it,
        cropped to the frame plus `margin` (nothing further out can be seen)."""
        h, w = self.shape
        y0 = max(int(self.cy - half_y) - 1, -margin)
        y1 = min(int(self.cy + half_y) + 2, h + margin)
        x0 = max(int(self.cx - half_x) - 1, -margin)
        x1 = min(int(self.cx + half_x) + 2, w + margin)
        y1, x1 = max(y1, y0 + 3), max(x1, x0 + 3)
        yy = (np.arange(y0, y1, dtype=F32) - F32(self.cy))[:, None]
        xx = (np.arange(x0, x1, dtype=F32) - F32(self.cx))[None, :]
        return y0, x0, yy, xx


def _outline(
    rng: np.random.Generator, yy, xx, radius_px: float, rough: float, elong: float = 1.0
) -> np.ndarray:
    """Normalised radius of an irregular blob (< 1 inside)."""
    a = rng.uniform(0, math.pi)
    u = (xx * F32(math.cos(a)) + yy * F32(math.sin(a))) / F32(elong)
    v = -xx * F32(math.sin(a)) + yy * F32(math.cos(a))
    theta = np.arctan2(v, u)
    r = np.ones_like(theta)
    for k in range(2, 8):
        r += F32(rough * rng.standard_normal() / k) * np.cos(k * theta + F32(rng.uniform(0, TAU)))
    return np.hypot(u, v) / (F32(radius_px) * np.maximum(r, F32(0.35)))


def _wrap(phase: np.ndarray) -> np.ndarray:
    return (np.remainder(phase + math.pi, TAU) - math.pi).astype(F32)


def _piece(y0, x0, absorption, phase, footprint, *, far=False) -> Piece:
    shape = footprint.shape
    return Piece(y0, x0, np.broadcast_to(absorption, shape).astype(F32),
                 _wrap(np.broadcast_to(phase, shape)), np.broadcast_to(footprint, shape), far)


def dust(rng: np.random.Generator, at: Spot) -> Piece:
    """A small opaque speck, sharp."""
    r = math.sqrt(log_uniform(rng, 20, 600) / math.pi) / at.scope.um
    y0, x0, yy, xx = at.grid(2 * r + 2, 2 * r + 2)
    s = _outline(rng, yy, xx, r, rng.uniform(0.1, 0.35), rng.uniform(1.0, 1.8))
    cover = np.clip((1 - s) * F32(r) + F32(0.5), 0, 1)
    return _piece(
        y0, x0, cover * F32(rng.uniform(2, 5)), cover * F32(rng.uniform(0, 1)), cover > 0.5
    )


def debris(rng: np.random.Generator, at: Spot) -> Piece:
    """An irregular absorbing fragment, textured, made of a few lumps."""
    size = log_uniform(rng, 15, 150) / at.scope.um
    y0, x0, yy, xx = at.grid(size, size)
    cover = np.zeros(np.broadcast_shapes(yy.shape, xx.shape), F32)
    for _ in range(int(rng.integers(1, 5))):
        r = size / 2 * rng.uniform(0.4, 1.0)
        oy, ox = rng.normal(0, size / 5, 2)
        s = _outline(rng, yy - F32(oy), xx - F32(ox), r, rng.uniform(0.3, 0.6), rng.uniform(1, 2.5))
        cover = np.maximum(cover, np.clip((1 - s) * F32(r) + F32(0.5), 0, 1))
    grain = ndi.gaussian_filter(rng.standard_normal(cover.shape).astype(F32), rng.uniform(1, 3))
    grain = 1 + F32(0.4 / max(grain.std(), 1e-6)) * grain
    absorb = cover * np.clip(grain, 0.2, 2) * F32(rng.uniform(0.4, 2.0))
    phase = ndi.gaussian_filter(cover, 1.0) * F32(rng.uniform(0.3, 2.0))
    absorb += lost_light(phase, at.scope.cutoff_px)
    return _piece(y0, x0, absorb, phase, cover > 0.5)


def _curve(
    rng: np.random.Generator, length_px: float, wiggle: float
) -> tuple[np.ndarray, np.ndarray]:
    """A smooth random centreline through (0, 0), sampled every half pixel."""
    n = max(int(2 * length_px), 4)
    s = np.linspace(-0.5, 0.5, n)
    heading = rng.uniform(0, TAU) + sum(
        wiggle * rng.standard_normal() / k * np.sin(TAU * k * s + rng.uniform(0, TAU))
        for k in (1, 2, 3)
    )
    ys = np.cumsum(np.sin(heading)) * 0.5
    xs = np.cumsum(np.cos(heading)) * 0.5
    return ys - ys[n // 2], xs - xs[n // 2]


def _thread(
    at: Spot, ys: np.ndarray, xs: np.ndarray, half_px: float
) -> tuple[int, int, np.ndarray]:
    """Distance (px) to a centreline, over its bounding box cropped to the frame."""
    pad = half_px + 3
    h, w = at.shape
    top = max(int(at.cy + ys.min() - pad), -8)
    left = max(int(at.cx + xs.min() - pad), -8)
    bottom = min(int(at.cy + ys.max() + pad) + 2, h + 8)
    right = min(int(at.cx + xs.max() + pad) + 2, w + 8)
    if bottom <= top or right <= left:
        return top, left, np.full((1, 1), np.inf, F32)
    empty = np.ones((bottom - top, right - left), bool)
    py = np.rint(at.cy + ys).astype(int) - top
    px = np.rint(at.cx + xs).astype(int) - left
    ok = (py >= 0) & (py < empty.shape[0]) & (px >= 0) & (px < empty.shape[1])
    if not ok.any():
        return top, left, np.full((1, 1), np.inf, F32)
    empty[py[ok], px[ok]] = False
    return top, left, ndi.distance_transform_edt(empty).astype(F32)


def fibre(rng: np.random.Generator, at: Spot) -> Piece:
    """A long thin curved strongly absorbing thread (hair-like when thick)."""
    um = at.scope.um
    hair = rng.random() < 0.15
    width = rng.uniform(30, 80) if hair else log_uniform(rng, 2, 15)
    half = max(width / 2 / um, 0.6)
    diag_um = math.hypot(*at.shape) * um
    length = log_uniform(rng, 80, max(1.5 * diag_um, 100)) / um
    ys, xs = _curve(rng, length, rng.uniform(0.3, 2.5))
    y0, x0, d = _thread(at, ys, xs, half)
    profile = np.sqrt(np.clip(1 - (d / F32(half)) ** 2, 0, 1))
    if half < 1.5:  # thin: area coverage of the pixel rather than a sampled cylinder
        profile = np.clip(F32(half + 0.5) - d, 0, 1)
    absorb = profile * F32(rng.uniform(2, 4) if hair else rng.uniform(0.8, 3))
    phase = profile * F32(rng.uniform(1, 6))
    absorb += lost_light(phase, at.scope.cutoff_px)
    return _piece(y0, x0, absorb, phase, d <= F32(half + 0.5))


def scratch(rng: np.random.Generator, at: Spot) -> Piece:
    """A long straight or gently curved thin groove: mostly phase, a little absorption."""
    um = at.scope.um
    half = max(log_uniform(rng, 0.5, 4) / 2 / um, 0.5)
    length = rng.uniform(0.3, 1.5) * math.hypot(*at.shape)
    a = rng.uniform(0, math.pi)
    bend = rng.choice([0.0, rng.normal(0, 1.5 / length)])
    reach_y = abs(math.sin(a)) * length / 2 + abs(bend) * length**2 / 4 + half + 3
    reach_x = abs(math.cos(a)) * length / 2 + abs(bend) * length**2 / 4 + half + 3
    y0, x0, yy, xx = at.grid(reach_y, reach_x)
    u = xx * F32(math.cos(a)) + yy * F32(math.sin(a))
    v = -xx * F32(math.sin(a)) + yy * F32(math.cos(a))
    d = np.abs(v - F32(bend) * u * u) / np.sqrt(1 + (F32(2 * bend) * u) ** 2)
    along = np.clip((F32(length / 2) - np.abs(u)) / F32(3), 0, 1)  # tapered ends
    profile = np.exp(-((d / F32(half)) ** 2)) * along
    absorb = profile * F32(rng.uniform(0.02, 0.2))
    phase = -profile * F32(rng.uniform(0.4, 1.5))
    return _piece(y0, x0, absorb, phase, (d <= max(half, 0.75)) & (along > 0.3))


def bubble(rng: np.random.Generator, at: Spot) -> Piece:
    """An air/mounting-medium bubble: a strong negative phase lens. Its steep rim throws light
    out of the aperture (the thick dark ring); its centre concentrates light (bright)."""
    scope = at.scope
    radius_um = log_uniform(rng, 15, 200)
    r_px = radius_um / scope.um
    y0, x0, yy, xx = at.grid(r_px + 3, r_px + 3)
    rho = np.hypot(yy, xx).astype(np.float64)
    s = rho / r_px
    flat = rng.uniform(0.25, 1.0)  # squeezed between slide and coverslip
    depth = TAU / scope.wavelength_um * 0.33 * 2 * radius_um * flat
    phase = -depth * np.sqrt(np.clip(1 - s * s, 0, 1))
    absorb = lost_light(phase, scope.cutoff_px)
    absorb -= F32(rng.uniform(0.2, 0.6)) * np.clip(1 - (s / 0.35) ** 2, 0, 1).astype(F32)
    return _piece(y0, x0, absorb, phase, s <= 1 + 0.5 / r_px)


def clump(rng: np.random.Generator, at: Spot) -> Piece:
    """Detached cells piled in a heap: many rounded, refractile, somewhat absorbing cells."""
    um = at.scope.um
    size_um = log_uniform(rng, 25, 320)
    cell_um = rng.uniform(8, 16)
    n = int(np.clip(0.8 * (size_um / cell_um) ** 2, 3, 250))
    half = (size_um / 2 + cell_um) / um
    y0, x0, yy, xx = at.grid(half, half)
    phase = np.zeros((yy.shape[0], xx.shape[1]), F32)
    absorb = np.zeros_like(phase)
    r = np.sqrt(rng.random(n)) * size_um / 2 * 0.85 / um
    a = rng.uniform(0, TAU, n)
    radii = rng.uniform(0.4, 0.6, n) * cell_um / um
    for cy, cx, rc in zip(r * np.sin(a), r * np.cos(a), radii, strict=True):
        box, sy, sx = _near(yy, xx, cy, cx, rc)
        d2 = (sy - F32(cy)) ** 2 + (sx - F32(cx)) ** 2
        dome = np.sqrt(np.clip(1 - d2 / F32(rc * rc), 0, 1))
        phase[box] += dome * F32(rng.uniform(1.0, 2.2))
        absorb[box] += dome * F32(rng.uniform(0.08, 0.4))
    absorb += lost_light(phase, at.scope.cutoff_px)
    footprint = ndi.binary_fill_holes(ndi.binary_closing(phase > 0.05, iterations=2))
    return _piece(y0, x0, absorb, phase, footprint)


def _convex(yy, xx, cy: float, cx: float, corners: np.ndarray) -> np.ndarray:
    """Pixel coverage of the convex polygon around (cy, cx) with corners given as offsets that
    surround that centre (either winding)."""
    inside = np.full(np.broadcast_shapes(yy.shape, xx.shape), np.inf, F32)
    for (ay, ax), (by, bx) in zip(corners, np.roll(corners, -1, axis=0), strict=True):
        ny, nx = -(bx - ax), by - ay
        norm = math.hypot(ny, nx) or 1.0
        ny, nx = ny / norm, nx / norm
        if ay * ny + ax * nx > 0:  # make the normal point away from the centre
            ny, nx = -ny, -nx
        dist = ((yy - F32(cy + ay)) * F32(ny) + (xx - F32(cx + ax)) * F32(nx))
        inside = np.minimum(inside, -dist)
    return np.clip(inside + F32(0.5), 0, 1)


def _near(yy, xx, cy: float, cx: float, reach: float):
    """Slices of an open-grid patch within `reach` px of (cy, cx), and the sub-grids."""
    oy, ox = float(yy[0, 0]), float(xx[0, 0])
    iy = slice(max(int(cy - reach - oy) - 1, 0), max(int(cy + reach - oy) + 2, 0))
    ix = slice(max(int(cx - reach - ox) - 1, 0), max(int(cx + reach - ox) + 2, 0))
    return (iy, ix), yy[iy], xx[:, ix]


def precipitate(rng: np.random.Generator, at: Spot) -> Piece:
    """Crystals: dark angular polygons and sea-urchin clusters of needles around a core."""
    um = at.scope.um
    spread = log_uniform(rng, 4, 60) / um
    y0, x0, yy, xx = at.grid(spread + 35 / um, spread + 35 / um)
    cover = np.zeros((yy.shape[0], xx.shape[1]), F32)
    for _ in range(int(np.clip(1 + spread * um / 4 * rng.random(), 1, 25))):
        cy, cx = rng.normal(0, spread / 2, 2)
        if rng.random() < 0.6:  # an angular crystal
            k = int(rng.integers(3, 8))
            ang = rng.uniform(0, TAU) + TAU * (np.arange(k) + rng.uniform(-0.3, 0.3, k)) / k
            rad = rng.uniform(1.5, 10) / um * rng.uniform(0.6, 1.0, k) + 0.7
            box, sy, sx = _near(yy, xx, cy, cx, rad.max() + 2)
            corners = np.stack([rad * np.sin(ang), rad * np.cos(ang)], 1)
            cover[box] = np.maximum(cover[box], _convex(sy, sx, cy, cx, corners))
            continue
        core = rng.uniform(0.8, 2.5) / um
        needles = [(a, rng.uniform(4, 30) / um, max(rng.uniform(0.5, 1.5) / um, 0.8))
                   for a in rng.uniform(0, TAU, int(rng.integers(4, 16)))]
        box, sy, sx = _near(yy, xx, cy, cx, max(n[1] for n in needles) + core + 2)
        part = np.clip(F32(core + 0.5) - np.hypot(sy - F32(cy), sx - F32(cx)), 0, 1)
        for a, length, width in needles:
            along = np.array([math.sin(a), math.cos(a)]) * length
            across = np.array([math.cos(a), -math.sin(a)]) * width / 2
            corners = np.stack([-across, along - across, along + across, across]) - along / 2
            part = np.maximum(part, _convex(sy, sx, cy + along[0] / 2, cx + along[1] / 2, corners))
        cover[box] = np.maximum(cover[box], part)
    absorb = cover * F32(rng.uniform(1.0, 3.0))
    phase = cover * F32(rng.uniform(0.3, 1.2))
    return _piece(y0, x0, absorb, phase, cover > 0.5)


def dirt(rng: np.random.Generator, at: Spot) -> Piece:
    """Dirt on a far optical surface: drawn there, seen as a faint broad shadow (maybe ringed).
    Footprint: its support blurred by the far plane's blur, above a quarter."""
    scope = at.scope
    r = log_uniform(rng, 20, 200) / scope.um
    blur = scope.dirt_blur_um / scope.um
    reach = r * 1.6 + 2 * blur
    y0, x0, yy, xx = at.grid(reach, reach, margin=int(min(3 * blur + 8, 400)))
    s = _outline(rng, yy, xx, r, rng.uniform(0.2, 0.5), rng.uniform(1, 1.8))
    body = np.clip(1 - s * s, 0, 1) ** F32(0.5)
    grain = 1 + F32(0.3) * smooth_noise(rng, body.shape, max(r / 4, 2))
    absorb = body * grain * F32(rng.uniform(0.6, 2.5))
    phase = body * F32(rng.uniform(0, 2))
    step = max(1, int(blur / 4))
    coarse = ndi.gaussian_filter((s[::step, ::step] < 1).astype(F32), blur / step)
    footprint = np.repeat(np.repeat(coarse, step, 0), step, 1)[: s.shape[0], : s.shape[1]] > 0.25
    return _piece(y0, x0, absorb, phase, footprint, far=True)


DRAW = {"dust": dust, "debris": debris, "fibre": fibre, "bubble": bubble, "clump": clump,
        "precipitate": precipitate, "dirt": dirt, "scratch": scratch}
assert set(DRAW) == set(ARTIFACT_KINDS)
