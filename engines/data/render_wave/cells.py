"""Cells: one cell line per frame, laid out on a Voronoi tiling so neighbours share membranes."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from engines.data.render_wave.noise import F32, TAU, smooth_noise
from engines.data.render_wave.optics import Microscope, lost_light

CELL_LINES = ("spread", "epithelial", "confluent", "sparse")


@dataclass(frozen=True, slots=True)
class CellLine:
    name: str
    spacing_um: float  # lattice spacing of cell centres (across the cell axis)
    stretch: float  # tiling anisotropy along the frame's main cell axis
    jitter: float  # fraction of the spacing
    alive: float  # fraction of sites that hold a cell
    islands: bool  # epithelial patches: only sites inside smooth islands hold cells
    tiles: bool  # cells reach their Voronoi border: membranes with a cleft between neighbours
    body_um: tuple[float, float]  # minor radius of the cell body
    elongation: tuple[float, float]
    axis_spread: float  # radians of per-cell orientation scatter around the frame axis
    processes: tuple[int, int]  # count of lamellipodia / filopodia / long processes
    process_um: tuple[float, float]
    body_phase: tuple[float, float]  # rad at the thickest point of the cytoplasm
    nucleus_um: tuple[float, float]  # nucleus diameter
    mitotic: float
    dead: float


def draw_cell_line(rng: np.random.Generator) -> CellLine:
    name = str(rng.choice(CELL_LINES, p=[0.3, 0.25, 0.27, 0.18]))
    if name == "spread":  # fibroblast / MSC: large, elongated, long processes and lamellipodia
        spacing = rng.uniform(60, 150)
        return CellLine(name, spacing, 1.0, 0.45, rng.uniform(0.55, 1.0), False, False,
                        (rng.uniform(7, 10), rng.uniform(11, 16)), (1.3, 3.5),
                        rng.choice([0.4, math.pi]), (1, 5), (15, 0.55 * spacing),
                        (0.4, 1.2), (11, 19), rng.uniform(0.01, 0.06), rng.uniform(0, 0.05))
    if name == "epithelial":  # polygonal cells in patches
        spacing = rng.uniform(18, 36)
        return CellLine(name, spacing, 1.0, 0.3, 1.0, True, True,
                        (0.68 * spacing, 0.8 * spacing), (1.0, 1.3), math.pi, (0, 1), (3, 8),
                        (0.3, 0.8), (9, 15), rng.uniform(0.01, 0.05), rng.uniform(0, 0.04))
    if name == "confluent":  # a monolayer tiling the field, often elongated and aligned
        spacing = rng.uniform(14, 32)
        return CellLine(name, spacing, rng.choice([1.0, rng.uniform(1.5, 3.0)]), 0.35, 1.0, False,
                        True, (1.2 * spacing, 1.5 * spacing), (1.0, 1.2), 0.3, (0, 0), (1, 2),
                        (0.25, 0.7), (8, 14), rng.uniform(0.005, 0.04), rng.uniform(0, 0.03))
    spacing = rng.uniform(55, 140)  # sparse: scattered small cells, some spread, more round/dead
    return CellLine(name, spacing, 1.0, 0.5, rng.uniform(0.3, 0.7), False, False,
                    (6, 14), (1.0, 2.2), math.pi, (0, 3), (8, 40), (0.3, 1.0), (9, 16),
                    rng.uniform(0.04, 0.15), rng.uniform(0.03, 0.15))


@dataclass(slots=True)
class Tiling:
    label: np.ndarray  # (H, W) int32 site of each pixel, -1 = no cell
    du_um: np.ndarray  # (H, W) offset from the site along the cell axis, um
    dv_um: np.ndarray  # across it
    count: int


def tile_sites(
    rng: np.random.Generator, line: CellLine, shape: tuple[int, int], um: float
) -> Tiling:
    """Nearest-site (anisotropic Voronoi) tiling, rotated to a random axis and smoothly warped
    so membranes are not straight; computed as one distance transform on a rotated canvas."""
    h, w = shape
    s_px = line.spacing_um / um
    axis = rng.uniform(0, math.pi)
    ca, sa = math.cos(axis), math.sin(axis)
    warp_px = rng.uniform(0.05, 0.25) * s_px
    margin = min(0.7 * s_px * line.stretch, 160.0) + 2 * warp_px + 2
    hc = int(h * abs(ca) + w * abs(sa) + 2 * margin) + 2
    wc = int(h * abs(sa) + w * abs(ca) + 2 * margin) + 2

    # A hexagonal lattice, stretched along the canvas x (the cell axis), jittered.
    dy, dx = s_px * math.sqrt(3) / 2, s_px * line.stretch
    rows = np.arange(0, hc + dy, dy)
    cols = np.arange(0, wc + dx, dx)
    sy = np.repeat(rows, len(cols))
    sx = np.tile(cols, len(rows)) + (np.arange(len(rows)) % 2 * dx / 2).repeat(len(cols))
    sy = sy + rng.uniform(-1, 1, sy.size) * line.jitter * dy
    sx = sx + rng.uniform(-1, 1, sx.size) * line.jitter * dx
    keep = (sy >= 0) & (sy < hc) & (sx >= 0) & (sx < wc)
    sy, sx = sy[keep], sx[keep]
    n = sy.size
    alive = rng.random(n) < line.alive
    if line.islands:
        scale = rng.uniform(120, 350) / um
        coarse = rng.standard_normal((int(hc / scale) + 3, int(wc / scale) + 3))
        island = ndi.map_coordinates(coarse, [sy / scale, sx / scale], order=1)
        # Islands cover 30-80 % of the sites, so no field is an empty gap between patches.
        alive &= island > np.quantile(island, 1 - rng.uniform(0.3, 0.8))

    iy, ix = sy.astype(np.int64), sx.astype(np.int64)
    site_of = np.full(hc * wc, -1, np.int32)
    site_of[iy * wc + ix] = np.arange(n, dtype=np.int32)
    empty = np.ones((hc, wc), bool)
    empty[iy, ix] = False
    nearest = ndi.distance_transform_edt(
        empty, sampling=(1.0, 1.0 / line.stretch), return_distances=False, return_indices=True
    )
    nearest_flat = (nearest[0].astype(np.int64) * wc + nearest[1]).ravel()

    # Output pixels -> canvas coordinates (rotation about the centres, plus the warp).
    yy = (np.arange(h, dtype=F32) - F32(h / 2))[:, None]
    xx = (np.arange(w, dtype=F32) - F32(w / 2))[None, :]
    cy = ca * yy - sa * xx + F32(hc / 2) + F32(warp_px) * smooth_noise(rng, shape, 2.5 * s_px)
    cx = sa * yy + ca * xx + F32(wc / 2) + F32(warp_px) * smooth_noise(rng, shape, 2.5 * s_px)
    row = np.clip(np.rint(cy), 0, hc - 1).astype(np.int64)
    col = np.clip(np.rint(cx), 0, wc - 1).astype(np.int64)
    at = row * wc + col
    label = site_of[nearest_flat[at]]
    label = np.where(alive[np.maximum(label, 0)] & (label >= 0), label, -1).astype(np.int32)
    safe = np.maximum(label, 0)
    du = (cx - sx[safe].astype(F32)) * F32(um)
    dv = (cy - sy[safe].astype(F32)) * F32(um)
    return Tiling(label=label, du_um=du, dv_um=dv, count=n)


@dataclass(slots=True)
class CellTraits:
    """Per-site parameters (arrays of length n), drawn from the line."""
    radius: np.ndarray  # body minor radius, um
    elongation: np.ndarray
    turn_cos: np.ndarray  # orientation of the cell relative to the tiling axis
    turn_sin: np.ndarray
    bend: np.ndarray
    harmonics: np.ndarray  # (n, 3, 2): amplitude*cos, amplitude*sin of outline modes 2, 3, 5
    lobe_len: np.ndarray  # (n, J) process reach beyond the body, um
    lobe_kappa: np.ndarray  # (n, J) narrowness (von Mises concentration)
    lobe_cos: np.ndarray  # (n, J)
    lobe_sin: np.ndarray
    skirt: np.ndarray  # thickness of the thin lamella around the body, relative
    power: np.ndarray  # dome exponent (0.5 = sphere for round cells)
    phase: np.ndarray  # rad at the thickest point
    absorb: np.ndarray  # absorption per rad of phase
    nuc_a: np.ndarray  # nucleus semi-axes, um
    nuc_b: np.ndarray
    nuc_u: np.ndarray  # nucleus offset from the site
    nuc_v: np.ndarray
    nuc_phase: np.ndarray
    nucleoli: np.ndarray  # (n, 3, 2) positions in nucleus units; nucleolus radius below
    nucleolus_um: np.ndarray
    dead: np.ndarray  # bool


LOBES = 4


def draw_traits(rng: np.random.Generator, line: CellLine, n: int) -> CellTraits:
    u = lambda lo, hi, size=n: rng.uniform(lo, hi, size)  # noqa: E731
    radius = u(*line.body_um)
    elong = u(*line.elongation)
    turn = rng.normal(0, line.axis_spread, n) if line.axis_spread < 3 else u(0, TAU)
    rough = u(0.03, 0.12)
    harm_amp = rough[:, None] * np.array([1.0, 0.6, 0.35])[None, :] * rng.random((n, 3))
    harm_ang = u(0, TAU, (n, 3))
    lobes = rng.integers(line.processes[0], line.processes[1] + 1, n)
    lobe_len = u(*line.process_um, (n, LOBES)) * (np.arange(LOBES)[None, :] < lobes[:, None])
    # Mostly tapering processes, some very thin filopodia, some wide lamellipodia fans.
    kind = rng.random((n, LOBES))
    kappa = np.where(
        kind < 0.6,
        u(4, 25, (n, LOBES)),
        np.where(kind < 0.8, u(300, 1500, (n, LOBES)), u(1.5, 5, (n, LOBES))),
    )
    lobe_len = np.where(kind >= 0.8, lobe_len * 0.4, lobe_len)
    # Bipolar cells: the first two processes leave along the long axis, opposite each other.
    lobe_ang = u(0, TAU, (n, LOBES))
    bipolar = rng.random(n) < 0.6
    lobe_ang[bipolar, 0] = rng.normal(0, 0.2, bipolar.sum())
    lobe_ang[bipolar, 1] = math.pi + rng.normal(0, 0.2, bipolar.sum())
    nuc_d = u(*line.nucleus_um)
    nuc_a = np.minimum(nuc_d / 2 * u(1.0, 1.4), 0.8 * radius * elong)
    nuc_b = np.minimum(nuc_d / 2 / u(1.0, 1.3), 0.75 * radius)
    traits = CellTraits(
        radius=radius, elongation=elong, turn_cos=np.cos(turn), turn_sin=np.sin(turn),
        bend=rng.normal(0, 0.15, n),
        harmonics=np.stack([harm_amp * np.cos(harm_ang), harm_amp * np.sin(harm_ang)], -1),
        lobe_len=lobe_len, lobe_kappa=kappa, lobe_cos=np.cos(lobe_ang), lobe_sin=np.sin(lobe_ang),
        skirt=u(0.12, 0.35), power=np.full(n, 0.7), phase=u(*line.body_phase), absorb=u(0.01, 0.05),
        nuc_a=nuc_a, nuc_b=nuc_b, nuc_u=u(-0.3, 0.3) * radius, nuc_v=u(-0.15, 0.15) * radius,
        nuc_phase=u(0.15, 0.6), nucleoli=rng.uniform(-0.5, 0.5, (n, 3, 2))
        * (rng.random((n, 3, 1)) < np.array([1.0, 0.7, 0.4])[None, :, None]),
        nucleolus_um=u(0.7, 1.6), dead=np.zeros(n, bool),
    )
    _round_up(rng, traits, rng.random(n) < line.mitotic, dead=False)
    _round_up(rng, traits, rng.random(n) < line.dead, dead=True)
    return traits


def _round_up(
    rng: np.random.Generator, traits: CellTraits, which: np.ndarray, *, dead: bool
) -> None:
    """Mitotic cells round up (bright, high phase); dead ones shrivel (small, crenated, dark)."""
    k = int(which.sum())
    if not k:
        return
    traits.radius[which] = rng.uniform(4, 8, k) if dead else rng.uniform(6, 10, k)
    traits.elongation[which] = rng.uniform(1.0, 1.25, k)
    traits.lobe_len[which] = 0
    traits.skirt[which] = 0
    traits.power[which] = 1.0 if dead else 0.5
    traits.phase[which] = rng.uniform(0.3, 0.7, k) if dead else rng.uniform(1.4, 2.4, k)
    traits.absorb[which] = rng.uniform(0.08, 0.25, k) if dead else rng.uniform(0.01, 0.04, k)
    traits.nuc_phase[which] = 0
    traits.nuc_a[which] = traits.nuc_b[which] = 1e-3
    if dead:  # crenated outline: strong high modes
        traits.harmonics[which, 2, 0] = rng.uniform(0.1, 0.25, k)
        traits.harmonics[which, 1, 1] = rng.uniform(0.05, 0.15, k)
    traits.dead[which] = dead


@dataclass(slots=True)
class CellLayer:
    phase: np.ndarray
    absorption: np.ndarray
    cytoplasm: np.ndarray  # relative thickness of cytoplasm (0 outside cells and in nuclei)
    nucleus: np.ndarray  # bool
    dead: np.ndarray  # bool, pixels of dead cells


def shape_cells(tiling: Tiling, tr: CellTraits, line: CellLine, um: float) -> CellLayer:
    """Evaluate every cell's outline, dome, processes and nucleus at once, per pixel."""
    h, w = tiling.label.shape
    reach = tr.radius * tr.elongation * (1.4 + np.abs(tr.bend)) + tr.lobe_len.max(1) + tr.radius
    lab = tiling.label.ravel()
    safe = np.maximum(lab, 0)
    du_all, dv_all = tiling.du_um.ravel(), tiling.dv_um.ravel()
    near = (lab >= 0) & (du_all * du_all + dv_all * dv_all < (reach[safe] ** 2).astype(F32))
    sub = np.flatnonzero(near)
    lb = lab[sub]
    du0, dv0 = du_all[sub], dv_all[sub]
    c, s = tr.turn_cos.astype(F32)[lb], tr.turn_sin.astype(F32)[lb]
    du = c * du0 + s * dv0
    dv = -s * du0 + c * dv0
    radius = tr.radius.astype(F32)[lb]
    dv = dv - tr.bend.astype(F32)[lb] * du * du / radius  # banana-shaped cells, curved processes

    # Body: an ellipse with a wavy outline (Fourier modes 2, 3, 5).
    ub = du / tr.elongation.astype(F32)[lb]
    rb = np.hypot(ub, dv) + F32(1e-4)
    c1, s1 = ub / rb, dv / rb
    c2, s2 = c1 * c1 - s1 * s1, 2 * s1 * c1
    c3, s3 = c2 * c1 - s2 * s1, s2 * c1 + c2 * s1
    c5, s5 = c3 * c2 - s3 * s2, s3 * c2 + c3 * s2
    hm = tr.harmonics.astype(F32)[lb]
    wave = hm[:, 0, 0] * c2 - hm[:, 0, 1] * s2 + hm[:, 1, 0] * c3 - hm[:, 1, 1] * s3
    wave += hm[:, 2, 0] * c5 - hm[:, 2, 1] * s5
    sb = rb / (radius * (1 + wave))
    body = np.clip(1 - sb * sb, 0, 1) ** tr.power.astype(F32)[lb]
    skirt = np.clip(1 - sb / F32(1.35), 0, 1) ** F32(0.35) * tr.skirt.astype(F32)[lb]

    # Processes: von Mises lobes of reach in the cell's own polar angle, tapering outward,
    # with a ruffled edge (mode 8) like lamellipodia.
    rp = np.hypot(du, dv) + F32(1e-4)
    cp, sp = du / rp, dv / rp
    lobe = np.zeros_like(rp)
    for j in range(LOBES):
        length = tr.lobe_len[:, j].astype(F32)[lb]
        if not length.any():
            continue
        cos_off = cp * tr.lobe_cos[:, j].astype(F32)[lb] + sp * tr.lobe_sin[:, j].astype(F32)[lb]
        lobe += length * np.exp(tr.lobe_kappa[:, j].astype(F32)[lb] * (cos_off - 1))
    c8 = 2 * (2 * (2 * cp * cp - 1) ** 2 - 1) ** 2 - 1
    lobe *= 1 + F32(0.12) * c8
    reaches = lobe > radius * 0.3
    process = np.clip(1 - rp / (radius + lobe), 0, 1) ** F32(0.5) * F32(0.28) * reaches
    thickness = np.maximum(np.maximum(body, skirt), process)

    # Nucleus: an ellipse dome on top of the body, with nucleoli.
    qn = ((du - tr.nuc_u.astype(F32)[lb]) / tr.nuc_a.astype(F32)[lb]) ** 2
    qn += ((dv - tr.nuc_v.astype(F32)[lb]) / tr.nuc_b.astype(F32)[lb]) ** 2
    in_nucleus = qn < 1
    nucleus = np.sqrt(np.clip(1 - qn, 0, 1)) * tr.nuc_phase.astype(F32)[lb]
    phase = thickness * tr.phase.astype(F32)[lb] + nucleus
    inn = np.flatnonzero(in_nucleus)
    if inn.size:
        lbn = lb[inn]
        for j in range(3):
            pos = tr.nucleoli[lbn, j]
            if not pos.any():
                continue
            ou = tr.nuc_u[lbn] + pos[:, 0] * tr.nuc_a[lbn]
            ov = tr.nuc_v[lbn] + pos[:, 1] * tr.nuc_b[lbn]
            q = ((du[inn] - ou) ** 2 + (dv[inn] - ov) ** 2) / tr.nucleolus_um[lbn] ** 2
            phase[inn] += (np.exp(-q) * 0.35 * (np.abs(pos).sum(1) > 0)).astype(F32)

    out_phase = np.zeros(h * w, F32)
    out_phase[sub] = phase
    out_abs = np.zeros(h * w, F32)
    out_abs[sub] = phase * tr.absorb.astype(F32)[lb]
    cyto = np.zeros(h * w, F32)
    cyto[sub] = thickness * ~in_nucleus
    nuc = np.zeros(h * w, bool)
    nuc[sub] = in_nucleus
    dead = np.zeros(h * w, bool)
    dead[sub] = tr.dead[lb] & (thickness > 0)
    layer = CellLayer(out_phase.reshape(h, w), out_abs.reshape(h, w), cyto.reshape(h, w),
                      nuc.reshape(h, w), dead.reshape(h, w))
    _membranes(layer, tiling.label, um, 1.2 if line.tiles else 3.0)
    return layer


def _membranes(layer: CellLayer, label: np.ndarray, um: float, cleft_um: float) -> None:
    """Neighbouring cells thin out towards their shared border: a fine cleft line where they
    tile, a gentle taper where spread cells meet (no straight cut edges)."""
    border = np.zeros(label.shape, bool)
    border[:, 1:] |= label[:, 1:] != label[:, :-1]
    border[1:, :] |= label[1:, :] != label[:-1, :]
    gap_um = ndi.distance_transform_edt(~border).astype(F32) * F32(um)
    cleft = 1 - np.exp(-gap_um / F32(cleft_um))
    layer.phase *= cleft
    layer.absorption *= cleft
    layer.cytoplasm *= cleft


def texture_cells(rng: np.random.Generator, layer: CellLayer, um: float, *, stained: bool) -> None:
    """Cytoplasm texture: dark granules and/or bright vacuoles; optionally a dark stain."""
    h, w = layer.phase.shape
    style = str(rng.choice(["granular", "vacuolated", "both", "smooth"], p=[0.35, 0.25, 0.2, 0.2]))
    cyto = layer.cytoplasm
    if style in ("granular", "both") or stained:
        grains = _dots(rng, (h, w), rng.uniform(0.08, 0.4) * um * um, rng.uniform(0.3, 0.6) / um)
        grains *= cyto
        layer.phase += grains * F32(rng.uniform(0.08, 0.3))
        darkness = rng.uniform(0.4, 1.5) if stained else rng.uniform(0.02, 0.1)
        layer.absorption += grains * F32(darkness)
    if style in ("vacuolated", "both"):
        vac = _dots(rng, (h, w), rng.uniform(0.004, 0.02) * um * um, rng.uniform(0.4, 1.0) / um)
        # Vacuoles gather in the thick cytoplasm around the nucleus, not out in the lamella.
        vac = np.clip((vac - F32(0.25)) * F32(3), 0, 1) * np.clip(cyto * F32(2) - F32(0.6), 0, 1)
        layer.phase -= vac * F32(rng.uniform(0.04, 0.12))
        layer.absorption -= vac * layer.absorption * F32(0.5)  # clear lumen: less absorbing
    if stained:  # colorimetric stain: the whole body absorbs
        layer.absorption += (cyto + layer.nucleus * F32(0.6)) * F32(rng.uniform(0.3, 1.2))
    layer.absorption += layer.dead * _dots(rng, (h, w), 0.3 * um * um, 0.5 / um) * F32(0.15)


def _dots(
    rng: np.random.Generator, shape: tuple[int, int], per_px: float, sigma_px: float
) -> np.ndarray:
    """Random round dots of peak ~1 (Bernoulli impulses through a Gaussian)."""
    sigma_px = max(sigma_px, 0.5)
    impulses = (rng.random(shape, dtype=F32) < F32(min(per_px, 0.5))).astype(F32)
    impulses *= F32(TAU * sigma_px * sigma_px)
    return ndi.gaussian_filter(impulses, sigma_px, truncate=3.0)


def draw_cells(rng: np.random.Generator, shape: tuple[int, int], scope: Microscope) -> CellLayer:
    line = draw_cell_line(rng)
    tiling = tile_sites(rng, line, shape, scope.um)
    traits = draw_traits(rng, line, tiling.count)
    layer = shape_cells(tiling, traits, line, scope.um)
    texture_cells(rng, layer, scope.um, stained=rng.random() < 0.2)
    layer.absorption += lost_light(layer.phase, scope.cutoff_px)
    return layer
