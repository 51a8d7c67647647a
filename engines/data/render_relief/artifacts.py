"""Artifacts: one function per kind, each a stamp of optical path, absorbance or haze."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from engines.data.render_relief.specimen import (
    F32,
    dome,
    loguniform,
    outline_radius,
    random_walk,
    rotated_half_extent,
    soft_inside,
    splat,
    window,
    wobble,
)
from engines.data.synth import ARTIFACT_KINDS

FOOTPRINT_FRACTION = 0.10  # of an artifact's own peak optical path or absorbance
DIRT_FOOTPRINT_FRACTION = 0.20  # of a dirt shadow's own peak dimming


@dataclass(slots=True)
class Stamp:
    """One artifact's contribution on its in-frame box, and its mask footprint there."""

    box: tuple[slice, slice]
    footprint: np.ndarray  # bool
    opd: np.ndarray | None = None
    absorbance: np.ndarray | None = None
    haze: np.ndarray | None = None


def own_footprint(*layers: np.ndarray | None) -> np.ndarray:
    """Where any of the artifact's own layers exceeds FOOTPRINT_FRACTION of its own peak."""
    out = None
    for layer in layers:
        if layer is None:
            continue
        mag = np.abs(layer)
        peak = float(mag.max()) if mag.size else 0.0
        part = mag > FOOTPRINT_FRACTION * peak if peak > 0 else np.zeros(mag.shape, bool)
        out = part if out is None else out | part
    return out


def field_area_um2(shape: tuple[int, int], um: float) -> float:
    return shape[0] * shape[1] * um * um


def random_centre(rng: np.random.Generator, shape: tuple[int, int]) -> tuple[float, float]:
    return rng.uniform(0, shape[0]), rng.uniform(0, shape[1])


def dust(rng: np.random.Generator, shape: tuple[int, int], um: float) -> Stamp | None:
    """A few tiny opaque specks close together (a fleck and its crumbs)."""
    cy, cx = random_centre(rng, shape)
    n = int(rng.integers(1, 7))
    sizes = [loguniform(rng, 2.5, 10)] + [loguniform(rng, 1, 4) for _ in range(n - 1)]
    radii = np.array(sizes) / um
    spread = rng.uniform(0, 12) / um
    offsets = rng.normal(0, spread, (n, 2)) * (np.arange(n) > 0)[:, None]
    half = spread * 3 + radii.max() + 2
    win = window(shape, cy, cx, half, half)
    if win is None:
        return None
    absorb = np.zeros((win.yy.shape[0], win.xx.shape[1]), F32)
    for r, (dy, dx) in zip(radii, offsets, strict=True):
        rho, _ = outline_radius(win.yy - F32(dy), win.xx - F32(dx), r, r * rng.uniform(0.6, 1),
                                rng.uniform(0, 3.2), wobble(rng, 0.2))
        absorb = np.maximum(absorb, F32(rng.uniform(1.2, 3.0)) * soft_inside(rho, r))
    return Stamp(win.box, own_footprint(absorb), opd=absorb * F32(0.05), absorbance=absorb)


def debris(rng: np.random.Generator, shape: tuple[int, int], um: float) -> Stamp | None:
    """An irregular opaque or translucent fragment with a mottled interior and a thick edge."""
    cy, cx = random_centre(rng, shape)
    a = loguniform(rng, 8, 50) / um
    b = a * rng.uniform(0.4, 1.0)
    theta = rng.uniform(0, math.pi)
    half_h, half_w = rotated_half_extent(a * 1.6, b * 1.6, theta)
    win = window(shape, cy, cx, half_h, half_w)
    if win is None:
        return None
    rho, _ = outline_radius(win.yy, win.xx, a, b, theta, wobble(rng, 0.45, range(2, 10)))
    body = soft_inside(rho, b)
    mottle = ndi.gaussian_filter(rng.normal(size=body.shape).astype(F32), max(1.0, 2 / um))
    mottle = F32(0.75) + F32(0.25) * mottle / (float(np.abs(mottle).max()) + 1e-6)
    od = rng.uniform(0.6, 2.2) if rng.random() < 0.7 else rng.uniform(0.15, 0.5)
    absorb = F32(od) * body * mottle
    opd = F32(rng.uniform(1, 5) * rng.uniform(0.05, 0.15)) * body
    return Stamp(win.box, own_footprint(opd, absorb), opd=opd, absorbance=absorb)


def fibre(rng: np.random.Generator, shape: tuple[int, int], um: float) -> Stamp | None:
    """A long curved cylinder (textile fibre or hair): thickness 2*sqrt(r^2 - d^2) across it."""
    hair = rng.random() < 0.2
    width_um = rng.uniform(30, 80) if hair else loguniform(rng, 3, 15)
    length_um = loguniform(rng, 300, 1500) if hair else loguniform(rng, 80, 800)
    length_um = min(length_um, 0.1 * field_area_um2(shape, um) / width_um) if hair else length_um
    cy, cx = random_centre(rng, shape)
    heading = rng.uniform(0, 2 * math.pi)
    ys, xs = random_walk(rng, cy, cx, heading, length_um / um, rng.uniform(0.002, 0.03) * um)
    r_px = width_um / 2 / um
    dn = rng.uniform(0.03, 0.12)
    od_per_um = (rng.uniform(1.5, 3) if hair else rng.uniform(0.3, 2.5) if rng.random() < 0.6
                 else rng.uniform(0.03, 0.2)) / width_um  # opaque, or translucent/birefringent
    m = int(r_px) + 3
    y0, y1 = max(int(ys.min()) - m, -m), min(int(ys.max()) + m, shape[0] + m)
    x0, x1 = max(int(xs.min()) - m, -m), min(int(xs.max()) + m, shape[1] + m)
    oy0, oy1, ox0, ox1 = max(y0, 0), min(y1, shape[0]), max(x0, 0), min(x1, shape[1])
    if oy0 >= oy1 or ox0 >= ox1:
        return None
    line = np.ones((y1 - y0, x1 - x0), bool)
    iy, ix = np.rint(ys).astype(int) - y0, np.rint(xs).astype(int) - x0
    # Path points far outside the patch do not matter.
    near = (iy >= 0) & (iy < line.shape[0]) & (ix >= 0) & (ix < line.shape[1])
    line[iy[near], ix[near]] = False
    d = ndi.distance_transform_edt(line)[oy0 - y0:oy1 - y0, ox0 - x0:ox1 - x0]
    t = (2 * np.sqrt(np.clip(r_px * r_px - d * d, 0, None)) * um).astype(F32)
    absorb, opd = t * F32(od_per_um), t * F32(dn)
    box = (slice(oy0, oy1), slice(ox0, ox1))
    return Stamp(box, own_footprint(opd, absorb), opd=opd, absorbance=absorb)


def bubble(rng: np.random.Generator, shape: tuple[int, int], um: float) -> Stamp | None:
    """An air bubble: total reflection at its edge makes a thick dark annulus, a bright inside."""
    cy, cx = random_centre(rng, shape)
    radius = min(loguniform(rng, 15, 100) / um, 0.45 * min(shape))
    rim = rng.uniform(0.12, 0.3)
    win = window(shape, cy, cx, radius + 2, radius + 2)
    if win is None:
        return None
    rho, _ = outline_radius(
        win.yy, win.xx, radius, radius * rng.uniform(0.92, 1.0), rng.uniform(0, 3.2)
    )
    disc = soft_inside(rho, radius)
    ring = np.clip((rho - F32(1 - rim)) / F32(rim * 0.35), 0, 1) * disc  # steep inner edge
    bright = F32(-math.log1p(rng.uniform(0.08, 0.3)))
    absorb = F32(rng.uniform(1.2, 2.5)) * ring + bright * disc * (1 - ring)
    opd = F32(rng.uniform(0.02, 0.08)) * ring  # the meniscus also casts a little relief
    return Stamp(win.box, rho <= 1, opd=opd, absorbance=absorb.astype(F32))


def clump(rng: np.random.Generator, shape: tuple[int, int], um: float) -> Stamp | None:
    """A heap of many rounded (dead, detached) cells: tall, so strong relief and absorption."""
    cy, cx = random_centre(rng, shape)
    cap = math.sqrt(0.49 * shape[0] * shape[1] / math.pi)  # at most ~49 % of the field
    radius = min(loguniform(rng, 15, 120) / um, cap)
    cell_r = rng.uniform(4, 8) / um
    n = int(np.clip(1.2 * (radius / cell_r) ** 2, 5, 250))
    win = window(shape, cy, cx, radius * 1.3 + cell_r, radius * 1.3 + cell_r)
    if win is None:
        return None
    rho, _ = outline_radius(win.yy, win.xx, radius, radius * rng.uniform(0.6, 1),
                            rng.uniform(0, 3.2), wobble(rng, 0.35))
    t = (loguniform(rng, 2, 12) * dome(rho, 0.7)).astype(F32)  # a low mound the cells pile on
    reach = radius * np.sqrt(rng.random(n)) * 1.1
    angle = rng.uniform(0, 2 * math.pi, n)
    for py, px in zip(reach * np.sin(angle), reach * np.cos(angle), strict=True):
        r = cell_r * rng.uniform(0.75, 1.25)
        sub = window(t.shape, py - win.yy[0, 0], px - win.xx[0, 0], r, r)
        if sub is not None:
            t[sub.box] += F32(2 * r * um * 0.7) * dome(np.sqrt(sub.yy**2 + sub.xx**2) / F32(r), 0.5)
    opd = t * F32(rng.uniform(0.03, 0.06))
    absorb = t * F32(rng.uniform(0.01, 0.05))  # dead cells take up stain
    return Stamp(win.box, own_footprint(opd), opd=opd, absorbance=absorb)


def precipitate(rng: np.random.Generator, shape: tuple[int, int], um: float) -> Stamp | None:
    """Crystals: faceted pyramids with dark cores, or a bundle of needles radiating from a point."""
    cy, cx = random_centre(rng, shape)
    if rng.random() < 0.65:
        return crystals(rng, shape, um, cy, cx)
    return needle_bundle(rng, shape, um, cy, cx)


def crystals(rng, shape, um, cy, cx) -> Stamp | None:
    n = int(rng.integers(1, 13))
    sizes = np.array([loguniform(rng, 4, 25) for _ in range(n)]) / um
    spread = rng.uniform(3, 40) / um
    offsets = rng.normal(0, spread / 2, (n, 2)) * (np.arange(n) > 0)[:, None]
    half = float(np.abs(offsets).max() + sizes.max()) + 2
    win = window(shape, cy, cx, half, half)
    if win is None:
        return None
    t = np.zeros((win.yy.shape[0], win.xx.shape[1]), F32)
    core = np.zeros_like(t)
    for size, (dy, dx) in zip(sizes, offsets, strict=True):
        sides = int(rng.integers(3, 7))
        turn = rng.uniform(0, 2 * math.pi)
        normals = [
            (math.sin(turn + 2 * math.pi * i / sides), math.cos(turn + 2 * math.pi * i / sides))
            for i in range(sides)
        ]
        yy, xx = win.yy - F32(dy), win.xx - F32(dx)
        facets = [yy * F32(sy) + xx * F32(sx) for sy, sx in normals]
        rho = np.max(np.stack(np.broadcast_arrays(*facets)), 0)
        rho = rho / F32(size)  # polygon "radius": 1 on the facet edges, flat facets between
        t = np.maximum(t, F32(rng.uniform(1, 4)) * np.clip(1 - rho, 0, None))
        core = np.maximum(core, np.clip((F32(0.5) - rho) * F32(size), 0, 1))
    opd = t * F32(rng.uniform(0.1, 0.3))  # crystals have a high refractive index
    absorb = core * F32(rng.uniform(0.5, 2.0)) + t * F32(0.05)
    return Stamp(win.box, own_footprint(opd, absorb), opd=opd, absorbance=absorb)


def needle_bundle(rng, shape, um, cy, cx) -> Stamp | None:
    n = int(rng.integers(6, 40))
    length = rng.uniform(10, 70) / um
    main, spread = rng.uniform(0, math.pi), rng.uniform(0.2, math.pi)
    win = window(shape, cy, cx, length + 3, length + 3)
    if win is None:
        return None
    sigma = max(0.5, rng.uniform(0.6, 1.5) / um / 2.355)
    ys, xs, ws = [], [], []
    for _ in range(n):
        angle = main + rng.uniform(-spread, spread) + (math.pi if rng.random() < 0.5 else 0)
        steps = np.arange(0, length * rng.uniform(0.5, 1.0), 0.5)
        ys.append(steps * math.sin(angle) - float(win.yy[0, 0]))
        xs.append(steps * math.cos(angle) - float(win.xx[0, 0]))
        ws.append(np.full(steps.size, rng.uniform(0.5, 1.5)))
    patch = (win.yy.shape[0], win.xx.shape[1])
    lines = splat(patch, np.concatenate(ys), np.concatenate(xs), np.concatenate(ws))
    # Scaled so that a needle's peak equals the weight of its points.
    t = ndi.gaussian_filter(lines, sigma) * F32(0.5 * math.sqrt(2 * math.pi) * sigma)
    opd = t * F32(rng.uniform(0.15, 0.3))
    absorb = t * F32(rng.uniform(0.2, 0.8))
    return Stamp(win.box, own_footprint(opd, absorb), opd=opd, absorbance=absorb)


def dirt(rng: np.random.Generator, shape: tuple[int, int], um: float) -> Stamp | None:
    """Out-of-focus dirt on a lens or the far side of the dish: a broad soft 3-15 % shadow."""
    cy, cx = random_centre(rng, shape)
    radius = loguniform(rng, 20, 150) / um
    win = window(shape, cy, cx, radius * 1.6, radius * 1.6)
    if win is None:
        return None
    rho, _ = outline_radius(win.yy, win.xx, radius, radius * rng.uniform(0.7, 1),
                            rng.uniform(0, 3.2), wobble(rng, 0.15))
    profile = 1 / (1 + np.exp((rho - F32(0.8)) / F32(0.12)))  # a defocused edge is a wide ramp
    if rng.random() < 0.4:  # the faint diffraction ring of an out-of-focus disc
        ring = np.exp(-(((rho - F32(1.05)) / F32(0.07)) ** 2))
        profile = profile + F32(rng.uniform(0.15, 0.4)) * ring
    profile = profile / float(profile.max())
    dimming = rng.uniform(0.03, 0.15)
    haze = (-np.log1p(-dimming * profile)).astype(F32)
    return Stamp(win.box, profile > DIRT_FOOTPRINT_FRACTION, haze=haze)


def scratch(rng: np.random.Generator, shape: tuple[int, int], um: float) -> Stamp | None:
    """A long straight groove in the glass: a V-shaped dip in optical path, relief on both sides."""
    cy, cx = random_centre(rng, shape)
    angle = rng.uniform(0, math.pi)
    half_len = loguniform(rng, 150, 2000) / um / 2
    w = rng.uniform(1.5, 6) / um / 2 + 0.5  # half width, px
    half_h, half_w = rotated_half_extent(half_len, w + 2, angle)
    win = window(shape, cy, cx, half_h, half_w)
    if win is None:
        return None
    c, s = F32(math.cos(angle)), F32(math.sin(angle))
    along = win.xx * c + win.yy * s
    across = np.abs(win.yy * c - win.xx * s)
    on_line = np.abs(along) <= F32(half_len)
    groove = np.clip(1 - across / F32(w), 0, None) * on_line
    # The groove's depth in the glass times (n_glass - n_medium).
    depth_opd = rng.uniform(0.2, 1.0) * rng.uniform(0.15, 0.2)
    opd = (-depth_opd * groove).astype(F32)
    edge = np.exp(-((across / F32(0.4 * w)) ** 2))
    absorb = (F32(rng.uniform(0.05, 0.4)) * edge * on_line).astype(F32)
    return Stamp(win.box, own_footprint(opd, absorb), opd=opd, absorbance=absorb)


ARTIFACT_DRAWERS: dict[
    str, Callable[[np.random.Generator, tuple[int, int], float], Stamp | None]
] = {
    "dust": dust,
    "debris": debris,
    "fibre": fibre,
    "bubble": bubble,
    "clump": clump,
    "precipitate": precipitate,
    "dirt": dirt,
    "scratch": scratch,
}
assert set(ARTIFACT_DRAWERS) == set(ARTIFACT_KINDS)
