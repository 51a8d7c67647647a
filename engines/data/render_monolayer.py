"""A third synthetic renderer: procedural brightfield frames of adherent cells, in intensity space.

The image is composed directly as multiplicative intensity layers, with no phase, no Laplacian
and no wave optics::

    counts = camera( blur( illumination * cells * artifacts ) )

- illumination: a smooth field per frame (tilt, vignetting, uneven lamp, sometimes the dark or
  bright shading of a well edge / meniscus);
- cells: a transmission factor near 1 built from procedural textures written here from numpy:
  smooth value noise (separable smoothstep interpolation done as two small matrix products),
  Worley/Voronoi fields on a jittered grid (confluent monolayers, epithelial islands), polygon
  stamps (spread fibroblasts with tapering processes, sparse cells), disc stamps (mitotic and
  dead cells), thresholded noise (granules, vacuoles) and a colorimetric stain in some frames;
- artifacts: one transmission factor per artifact, drawn in micrometres with its own shape code;
- blur: a Gaussian, a disc or an Airy-like point spread function;
- camera: Poisson-Gaussian noise with a per-frame photon count (SNR from ~6 to ~140), and
  sometimes row banding, a mild vertical smear or JPEG-like 8x8 block quantisation.

How it differs from engines/data/synth.py: synth renders cells as phase objects seen through
``1 + k * laplacian(phase)``; here there is no optical path at all, cells are painted as
intensity textures (membranes, nuclei, granules, stain), and the camera model, the shapes and
the sizes are all drawn by separately written code. A model chosen on one can be checked
on the other.

Mask rule: an artifact's footprint is where its own factor differs from 1 by more than
``FOOTPRINT_FRACTION`` of its peak difference (holes filled for solid kinds). Footprints are
labelled 1..n in drawing order, later wins; an artifact whose footprint inside the frame is
under ``MIN_FOOTPRINT_PX`` is not drawn at all.

Speed: 0.26 s per 1080 x 1080 frame on one core (mean of 40 frames, BLAS/OpenMP pinned to one
thread, on a 2-core machine shared with a training job); the slowest of the 40 took 0.37 s.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage as ndi
from scipy.signal import fftconvolve
from scipy.special import j1
from skimage.draw import polygon as fill_polygon

from engines.data.synth import (
    ARTIFACT_KINDS,
    DEFAULT_OPTIONS,
    SynthFrame,
    SynthObject,
    SynthOptions,
)

PIXEL_SIZE_RANGE_UM = (0.3, 1.3)
MIN_FOOTPRINT_PX = 20
FOOTPRINT_FRACTION = 0.2  # of an artifact's own peak |factor - 1|
ARTIFACTS_PER_FRAME = (1, 5)
SOLID_KINDS = ("debris", "bubble", "clump", "precipitate", "dirt")  # footprint holes are filled
CELL_STYLES = ("confluent", "fibroblast", "epithelial", "sparse")
CELL_STYLE_WEIGHTS = (0.3, 0.25, 0.25, 0.2)

F32 = np.float32


# ---------------------------------------------------------------------------------------------
# public entry point


def make_frame(rng: np.random.Generator, options: SynthOptions = DEFAULT_OPTIONS) -> SynthFrame:
    """One brightfield frame of adherent cells; artifacts at ``options.artifact_probability``."""
    if options.channels > 1 or options.planes > 1:
        raise ValueError(
            "the monolayer renderer draws single-plane, single-channel frames; "
            f"got channels={options.channels}, planes={options.planes}"
        )
    um = (
        options.pixel_size_um
        if options.pixel_size_um is not None
        else float(rng.uniform(*PIXEL_SIZE_RANGE_UM))
    )
    shape = (options.height, options.width)
    light = illumination(rng, shape, um)
    scene = cell_layer(rng, shape, um)
    artifacts = ArtifactLayer(shape)
    if rng.random() < options.artifact_probability:
        draw_artifacts(rng, artifacts, um, options.kinds)
    scene *= artifacts.factor
    scene *= light
    blurred = point_spread(rng, scene, um)
    image = camera(rng, blurred, options.dtype)
    mask, objects = artifacts.truth()
    return SynthFrame(
        image=image,
        mask=mask,
        label="artifact" if objects else "clean",
        objects=objects,
        pixel_size_um=um,
    )


# ---------------------------------------------------------------------------------------------
# procedural textures


def _loguniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def _smoothstep_matrix(n_out: int, n_lattice: int) -> np.ndarray:
    """(n_out, n_lattice) weights that interpolate a lattice onto n_out pixels with smoothstep."""
    t = (np.arange(n_out) + 0.5) * ((n_lattice - 1) / n_out)
    i = np.minimum(np.floor(t).astype(np.int64), n_lattice - 2)
    f = t - i
    f = f * f * (3 - 2 * f)
    weights = np.zeros((n_out, n_lattice), F32)
    weights[np.arange(n_out), i] = 1 - f
    weights[np.arange(n_out), i + 1] = f
    return weights


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], feature_px: float) -> np.ndarray:
    """Value noise with blobs about feature_px wide: a random lattice, interpolated separably."""
    h, w = shape
    gh, gw = max(2, int(h / max(feature_px, 1.0)) + 2), max(2, int(w / max(feature_px, 1.0)) + 2)
    lattice = rng.standard_normal((gh, gw)).astype(F32)
    return _smoothstep_matrix(h, gh) @ lattice @ _smoothstep_matrix(w, gw).T


def fractal_noise(
    rng: np.random.Generator,
    shape: tuple[int, int],
    feature_px: float,
    octaves: int = 4,
    persistence: float = 0.5,
) -> np.ndarray:
    """Sum of value-noise octaves, normalised to unit standard deviation."""
    total = np.zeros(shape, F32)
    amplitude = 1.0
    for _ in range(octaves):
        if feature_px < 3:
            break  # finer octaves cost the most and the blur removes them anyway
        total += amplitude * smooth_noise(rng, shape, feature_px)
        feature_px /= 2
        amplitude *= persistence
    std = float(total.std())
    return total / std if std > 0 else total


def speckle_field(
    rng: np.random.Generator, shape: tuple[int, int], size_px: float, density: float
) -> np.ndarray:
    """Isolated round spots in [0, 1]: peaks of blurred white noise (granules, vacuoles)."""
    noise = ndi.gaussian_filter(rng.standard_normal(shape, dtype=F32), max(size_px, 0.5))
    noise /= max(float(noise.std()), 1e-6)
    threshold = 2.2 - 1.6 * density  # density 0..1: from rare to crowded spots
    return np.clip((noise - threshold) / 0.8, 0, 1)


@dataclass(frozen=True)
class Window:
    """The part of the frame one stamp touches, with coordinates in px from the stamp's centre."""

    rows: slice
    cols: slice
    yy: np.ndarray  # (h, 1) float32
    xx: np.ndarray  # (1, w) float32

    @property
    def shape(self) -> tuple[int, int]:
        return (self.rows.stop - self.rows.start, self.cols.stop - self.cols.start)


def window(shape: tuple[int, int], cy: float, cx: float, reach: float) -> Window | None:
    top, bottom = max(0, int(cy - reach)), min(shape[0], int(cy + reach) + 2)
    left, right = max(0, int(cx - reach)), min(shape[1], int(cx + reach) + 2)
    if bottom - top < 1 or right - left < 1:
        return None
    yy = (np.arange(top, bottom, dtype=F32) - F32(cy))[:, None]
    xx = (np.arange(left, right, dtype=F32) - F32(cx))[None, :]
    return Window(slice(top, bottom), slice(left, right), yy, xx)


def wobbly_radius(
    rng: np.random.Generator, roughness: float, harmonics: int = 5
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """r(theta) / mean radius for an irregular outline: random angular harmonics 2..harmonics+1.

    The returned function takes cos(theta) and sin(theta) and builds cos(k theta + phase) by
    repeated complex multiplication, which is much cheaper than arctan2 and cos per pixel."""
    amps = roughness * rng.uniform(0.3, 1.0, harmonics) / np.arange(1, harmonics + 1) ** 0.8
    phases = rng.uniform(0, 2 * np.pi, harmonics)

    def radius(cos_t: np.ndarray, sin_t: np.ndarray) -> np.ndarray:
        re, im = cos_t * cos_t - sin_t * sin_t, 2 * cos_t * sin_t  # exp(2i theta)
        r = np.ones_like(re)
        for a, p in zip(amps, phases, strict=True):
            r = r + a * (re * math.cos(p) - im * math.sin(p))
            re, im = re * cos_t - im * sin_t, re * sin_t + im * cos_t
        return np.maximum(r, 0.25)

    return radius


def blob(
    rng: np.random.Generator,
    win: Window,
    radius_px: float,
    *,
    roughness: float,
    elongation: float = 1.0,
    edge_px: float = 0.8,
    dy: float = 0.0,
    dx: float = 0.0,
) -> np.ndarray:
    """Soft occupancy in [0, 1] of an irregular, possibly elongated blob centred at (dy, dx)."""
    angle = rng.uniform(0, np.pi)
    c, s = math.cos(angle), math.sin(angle)
    y, x = win.yy - dy, win.xx - dx
    u = (y * c + x * s) / max(elongation, 0.05)
    v = -y * s + x * c
    r = np.sqrt(u * u + v * v) + F32(1e-6)
    edge = radius_px * wobbly_radius(rng, roughness)(u / r, v / r)
    return np.clip((edge - r) / max(edge_px, 0.3) + 0.5, 0, 1).astype(F32)


def polygon_mask(shape: tuple[int, int], ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Filled polygon as float 0/1. Pillow's scanline fill (a scikit-image dependency) is used
    because skimage.draw.polygon tests every pixel of the bounding box: too slow for processes."""
    canvas = Image.new("L", (shape[1], shape[0]), 0)
    ImageDraw.Draw(canvas).polygon(list(zip(xs.tolist(), ys.tolist(), strict=True)), fill=1)
    return np.asarray(canvas, dtype=F32)


def ring(r: np.ndarray, radius: float, width: float) -> np.ndarray:
    return np.exp(-(((r - radius) / max(width, 0.3)) ** 2)).astype(F32)


# ---------------------------------------------------------------------------------------------
# illumination


def illumination(rng: np.random.Generator, shape: tuple[int, int], um: float) -> np.ndarray:
    """Relative lamp field, 1 at the centre: tilt, vignetting, uneven lamp, maybe a well edge."""
    h, w = shape
    scale = max(h, w) / 2
    yy = ((np.arange(h, dtype=F32) - h / 2) / scale)[:, None]
    xx = ((np.arange(w, dtype=F32) - w / 2) / scale)[None, :]
    angle = rng.uniform(0, 2 * np.pi)
    field = 1 + F32(rng.uniform(0, 0.08)) * (yy * math.sin(angle) + xx * math.cos(angle))
    field = field * (1 - F32(rng.uniform(0, 0.25)) * (yy * yy + xx * xx))
    field = field * (
        1 + F32(rng.uniform(0, 0.03)) * fractal_noise(rng, shape, max(h, w) / 3, octaves=2)
    )
    if rng.random() < 0.2:
        field = field * well_edge(rng, shape, um)
    return field.astype(F32)


def well_edge(rng: np.random.Generator, shape: tuple[int, int], um: float) -> np.ndarray:
    """Shading near a circular well wall: a strong dark or bright gradient from a side or corner."""
    h, w = shape
    well_radius = _loguniform(rng, 1500, 4000) / um  # 96- to 24-well plates, in px
    toward = rng.uniform(0, 2 * np.pi)  # where the wall lies, seen from the frame centre
    reach = rng.uniform(-0.3, 0.3) * max(h, w)  # how far into the frame the wall comes
    cy = h / 2 - math.sin(toward) * (well_radius - max(h, w) / 2 + reach)
    cx = w / 2 - math.cos(toward) * (well_radius - max(h, w) / 2 + reach)
    inside = well_radius - np.hypot(
        np.arange(h, dtype=F32)[:, None] - cy, np.arange(w, dtype=F32)[None, :] - cx
    )
    width = rng.uniform(0.1, 0.5) * max(h, w)  # the meniscus gradient
    gradient = np.exp(-np.maximum(inside, 0) / width)
    strength = (
        rng.uniform(0.3, 0.8) if rng.random() < 0.7 else -rng.uniform(0.2, 0.5)
    )  # dark or bright
    wall = 1 - rng.uniform(0.6, 0.95) * np.clip(
        -inside / (8 / um) + 0.5, 0, 1
    )  # the plastic itself
    return ((1 - strength * gradient) * wall).astype(F32)


# ---------------------------------------------------------------------------------------------
# cells: the clean scene


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


def cell_layer(rng: np.random.Generator, shape: tuple[int, int], um: float) -> np.ndarray:
    """Transmission of the cell layer (1 = empty medium) for one drawn cell-line style."""
    look = draw_cell_look(rng)
    granules = speckle_field(rng, shape, rng.uniform(0.3, 0.8) / um, rng.uniform(0.3, 0.9))
    vacuoles = speckle_field(rng, shape, rng.uniform(0.8, 2.5) / um, 0.2) if look.vacuoles else None
    if look.style in ("confluent", "epithelial"):
        layer = tiled_cells(rng, shape, um, look, granules, vacuoles)
    else:
        layer = np.ones(shape, F32)
        count = spread_cell_count(rng, shape, um, look)
        for _ in range(count):
            stamp_spread_cell(rng, layer, um, look, granules, vacuoles)
    stamp_round_cells(rng, layer, um, look)
    # faint out-of-focus unevenness of the medium / plastic
    layer *= 1 + F32(rng.uniform(0, 0.01)) * fractal_noise(rng, shape, 60 / um, octaves=3)
    return layer


def spread_cell_count(
    rng: np.random.Generator, shape: tuple[int, int], um: float, look: CellLook
) -> int:
    field_um2 = shape[0] * shape[1] * um * um
    coverage = rng.uniform(0.3, 1.2) if look.style == "fibroblast" else rng.uniform(0.03, 0.3)
    cell_um2 = 0.25 * look.cell_um**2  # spread cells fill a fraction of their bounding circle
    return int(min(80, max(1, round(coverage * field_um2 / cell_um2))))


def voronoi(
    rng: np.random.Generator, shape: tuple[int, int], spacing: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Worley field: per pixel the nearest seed's id and (F2 - F1) / 2, the distance to the nearest
    cell border. Seeds sit on a jittered grid, rotated, stretched and warped so no grid axis shows.
    Returns (label, border_px, seed_y, seed_x), seeds in px of the frame."""
    h, w = shape
    angle = rng.uniform(0, np.pi)
    stretch = rng.uniform(1.0, 1.7)  # cells elongated along one direction, as in many monolayers
    c, s = F32(math.cos(angle)), F32(math.sin(angle))
    ys = np.arange(h, dtype=F32)[:, None] - F32(h / 2)
    xs = np.arange(w, dtype=F32)[None, :] - F32(w / 2)
    warp = F32(spacing * rng.uniform(0.1, 0.3))
    v = (ys * c - xs * s) + warp * smooth_noise(rng, shape, spacing * 2)
    u = (ys * s + xs * c) / F32(stretch) + warp * smooth_noise(rng, shape, spacing * 2)
    half = math.hypot(h, w) / 2 + 2 * spacing
    n_grid = int(2 * half / spacing) + 3
    seed_v = (
        (
            (np.arange(n_grid)[:, None] - 1 + rng.uniform(0.1, 0.9, (n_grid, n_grid))) * spacing
            - half
        )
        .astype(F32)
        .ravel()
    )
    seed_u = (
        (
            (np.arange(n_grid)[None, :] - 1 + rng.uniform(0.1, 0.9, (n_grid, n_grid))) * spacing
            - half
        )
        .astype(F32)
        .ravel()
    )
    gv = np.clip(((v + half) / spacing).astype(np.int64) + 1, 1, n_grid - 2)
    gu = np.clip(((u + half) / spacing).astype(np.int64) + 1, 1, n_grid - 2)
    f1 = np.full(shape, np.inf, F32)
    f2 = np.full(shape, np.inf, F32)
    label = np.zeros(shape, np.int64)
    for ov in (-1, 0, 1):
        for ou in (-1, 0, 1):
            idx = (gv + ov) * n_grid + (gu + ou)
            d = (v - seed_v[idx]) ** 2 + (u - seed_u[idx]) ** 2
            closer = d < f1
            f2 = np.where(closer, f1, np.minimum(f2, d))
            f1 = np.where(closer, d, f1)
            label = np.where(closer, idx, label)
    border = (np.sqrt(f2) - np.sqrt(f1)) / 2
    # seeds back in frame coordinates (the small warp is ignored: nuclei sit a little off-centre)
    seed_y = seed_v * c + seed_u * F32(stretch) * s + F32(h / 2)
    seed_x = -seed_v * s + seed_u * F32(stretch) * c + F32(w / 2)
    return label, border.astype(F32), seed_y, seed_x


def tiled_cells(
    rng: np.random.Generator,
    shape: tuple[int, int],
    um: float,
    look: CellLook,
    granules: np.ndarray,
    vacuoles: np.ndarray | None,
) -> np.ndarray:
    """Confluent monolayer or epithelial islands of Voronoi cells.

    The Voronoi field is computed on a coarser grid when cells are big."""
    spacing_px = look.cell_um / um
    step = max(1, int(spacing_px / 9))  # keep >= ~9 px per cell on the coarse grid
    coarse = (-(-shape[0] // step), -(-shape[1] // step))
    label_c, border_c, seed_y, seed_x = voronoi(rng, coarse, spacing_px / step)
    n = seed_y.size
    seed_y, seed_x = seed_y * step + (step - 1) / 2, seed_x * step + (step - 1) / 2
    present = cell_presence(rng, shape, um, look, seed_y, seed_x)
    # per-cell values are looked up on the coarse grid and upsampled linearly, so that nothing
    # shows the coarse grid's staircase; only the nuclei use the nearest-cell label at full size
    smooth = Upsampler(coarse, shape, step)
    label = smooth.nearest(label_c)
    body = smooth(present[label_c].astype(F32))
    border = smooth(border_c, soften=False) * F32(step)
    tone = look.body * rng.uniform(0.5, 1.5, n).astype(F32) * present
    layer = 1 - smooth(tone[label_c])
    membrane_px = max(rng.uniform(0.4, 1.2) / um, 0.8)
    layer += F32(look.membrane) * np.exp(-((border / membrane_px) ** 2)) * body
    ys = np.arange(shape[0], dtype=F32)[:, None]
    xs = np.arange(shape[1], dtype=F32)[None, :]
    dy = ys - seed_y[label]
    dx = xs - seed_x[label]
    layer -= nuclei(rng, dy, dx, label, n, spacing_px, look) * body
    perinuclear = np.exp(-(dy * dy + dx * dx) / F32((0.45 * spacing_px) ** 2)) * body
    layer -= (
        F32(look.granular) * rng.uniform(0.3, 1.0, n).astype(F32)[label] * granules * perinuclear
    )
    if vacuoles is not None:
        layer += F32(look.vacuoles) * vacuoles * perinuclear
    if look.stained:
        stain = smooth((stain_per_cell(rng, n, look) * present)[label_c])
        thin_edge = 1 - 0.6 * np.exp(
            -border / F32(0.7 / um)
        )  # less cytoplasm, less stain, at cell borders
        layer *= 1 - stain * thin_edge * (1 + 0.5 * granules)
    layer -= F32(look.edge) * free_edge(body, rng.uniform(1.0, 3.0) / um)
    return layer.astype(F32)


class Upsampler:
    """Coarse grid (cells `step` px wide) to full frame: linear interpolation as two matmuls."""

    def __init__(self, coarse: tuple[int, int], shape: tuple[int, int], step: int) -> None:
        self.shape, self.step = shape, step
        self.rows = _linear_matrix(shape[0], coarse[0], step)
        self.cols = _linear_matrix(shape[1], coarse[1], step)

    def __call__(self, values: np.ndarray, soften: bool = True) -> np.ndarray:
        if self.step == 1:
            return values.astype(F32)
        values = values.astype(F32)
        if (
            soften
        ):  # per-cell steps follow coarse pixels; a slight blur turns the staircase into a curve
            values = ndi.gaussian_filter(values, 0.8)
        return self.rows @ values @ self.cols.T

    def nearest(self, values: np.ndarray) -> np.ndarray:
        return np.repeat(np.repeat(values, self.step, 0), self.step, 1)[
            : self.shape[0], : self.shape[1]
        ]


def _linear_matrix(n_out: int, n_coarse: int, step: int) -> np.ndarray:
    t = np.clip((np.arange(n_out) + 0.5) / step - 0.5, 0, n_coarse - 1)
    i = np.minimum(np.floor(t).astype(np.int64), max(n_coarse - 2, 0))
    f = (t - i).astype(F32)
    weights = np.zeros((n_out, n_coarse), F32)
    weights[np.arange(n_out), i] = 1 - f
    weights[np.arange(n_out), np.minimum(i + 1, n_coarse - 1)] += f
    return weights


def cell_presence(
    rng: np.random.Generator,
    shape: tuple[int, int],
    um: float,
    look: CellLook,
    seed_y: np.ndarray,
    seed_x: np.ndarray,
) -> np.ndarray:
    """Which Voronoi cells hold a cell: almost all in a monolayer, islands for epithelia."""
    field = fractal_noise(rng, shape, rng.uniform(150, 400) / um, octaves=3)
    iy = np.clip(seed_y.astype(np.int64), 0, shape[0] - 1)
    ix = np.clip(seed_x.astype(np.int64), 0, shape[1] - 1)
    threshold = rng.uniform(-2.5, -0.8) if look.style == "confluent" else rng.uniform(-0.5, 0.8)
    return field[iy, ix] > threshold


def free_edge(body: np.ndarray, width_px: float) -> np.ndarray:
    """Positive just inside a free cell edge, negative (a bright halo) just outside it."""
    inner = ndi.gaussian_filter(body, max(width_px / 2, 0.5))
    outer = ndi.gaussian_filter(body, max(width_px * 1.5, 1.0))
    return (body * (1 - inner) * 3 - (outer - body).clip(0, None) * 0.6).astype(F32)


def nuclei(
    rng: np.random.Generator,
    dy: np.ndarray,
    dx: np.ndarray,
    label: np.ndarray,
    n: int,
    spacing_px: float,
    look: CellLook,
) -> np.ndarray:
    """Darkening by nuclei (slightly dark ellipses, bright rim, dark nucleoli) around each seed."""
    a = (spacing_px * rng.uniform(0.22, 0.32, n)).astype(F32)[label]
    b = a * rng.uniform(0.6, 0.95, n).astype(F32)[label]
    theta = rng.uniform(0, np.pi, n)
    c, s = np.cos(theta).astype(F32)[label], np.sin(theta).astype(F32)[label]
    u, v = (dy * c + dx * s) / a, (-dy * s + dx * c) / b
    q = np.sqrt(u * u + v * v)
    inside = np.clip((1 - q) * a / 1.2 + 0.5, 0, 1)
    rim = np.exp(-(((q - 1.05) * a / 1.0) ** 2))
    offset = rng.uniform(-0.4, 0.4, n).astype(F32)[label]  # along the long axis, in nucleus radii
    nucleolus = np.exp(-((u - offset) ** 2 + (v * 1.2) ** 2) / 0.03)
    depth = look.nucleus * inside - 0.4 * look.nucleus * rim + look.nucleolus * nucleolus * inside
    return depth.astype(F32)


def stain_per_cell(rng: np.random.Generator, n: int, look: CellLook) -> np.ndarray:
    stained = rng.random(n) < look.stained
    return (stained * rng.uniform(*look.stain_depth, n)).astype(F32)


def stamp_spread_cell(
    rng: np.random.Generator,
    layer: np.ndarray,
    um: float,
    look: CellLook,
    granules: np.ndarray,
    vacuoles: np.ndarray | None,
) -> None:
    """One spread cell: irregular body, tapering processes, nucleus, granules, maybe stain."""
    size_px = look.cell_um * rng.uniform(0.6, 1.4) / um
    body_r = size_px * (0.18 if look.style == "fibroblast" else 0.4)
    processes = int(rng.integers(2, 6)) if look.style == "fibroblast" else int(rng.integers(0, 3))
    cy, cx = rng.uniform(-0.1, 1.1) * layer.shape[0], rng.uniform(-0.1, 1.1) * layer.shape[1]
    win = window(layer.shape, cy, cx, size_px * 0.75 + 4)
    if win is None:
        return
    top, left = win.rows.start, win.cols.start
    ys, xs = body_outline(rng, body_r, rng.uniform(0.4, 1.0))
    occupancy = polygon_mask(win.shape, ys + cy - top, xs + cx - left)
    for _ in range(processes):
        ys, xs = tapering_process(
            rng, body_r, size_px * rng.uniform(0.3, 0.75), body_r * rng.uniform(0.5, 1.0)
        )
        np.maximum(occupancy, polygon_mask(win.shape, ys + cy - top, xs + cx - left), out=occupancy)
    if not occupancy.any():
        return
    occupancy = ndi.gaussian_filter(occupancy, max(0.7, rng.uniform(0.3, 0.8) / um))
    r2 = win.yy**2 + win.xx**2
    perinuclear = np.exp(-r2 / F32((1.3 * body_r) ** 2))
    factor = 1 - look.body * occupancy
    factor -= look.edge * 3 * occupancy * (1 - occupancy)  # a dark line along the free edge
    factor -= look.granular * granules[win.rows, win.cols] * perinuclear * occupancy
    if vacuoles is not None:
        factor += look.vacuoles * vacuoles[win.rows, win.cols] * perinuclear * occupancy
    if rng.random() < look.stained:
        factor *= 1 - rng.uniform(*look.stain_depth) * occupancy * (0.5 + 0.5 * perinuclear)
    layer[win.rows, win.cols] *= factor
    single_nucleus(rng, layer, cy, cx, body_r, um, look)


def body_outline(
    rng: np.random.Generator, radius: float, elongation: float
) -> tuple[np.ndarray, np.ndarray]:
    theta = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    r = radius * wobbly_radius(rng, 0.25)(np.cos(theta), np.sin(theta))
    angle = rng.uniform(0, np.pi)
    u, v = r * np.cos(theta), r * np.sin(theta) * elongation
    return u * math.sin(angle) + v * math.cos(angle), u * math.cos(angle) - v * math.sin(angle)


def tapering_process(
    rng: np.random.Generator, start_r: float, length: float, base_width: float
) -> tuple[np.ndarray, np.ndarray]:
    """A polygon around a gently curving centreline whose width tapers to ~1 px at the tip."""
    steps = 24
    heading = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.12, steps))
    seg = (start_r * 0.5 + length) / steps
    cy = np.cumsum(np.sin(heading) * seg)
    cx = np.cumsum(np.cos(heading) * seg)
    half = np.maximum(base_width / 2 * (1 - np.linspace(0, 1, steps)) ** 1.3, 0.6)
    ny, nx = np.cos(heading), -np.sin(heading)
    ys = np.concatenate([cy + ny * half, (cy - ny * half)[::-1]])
    xs = np.concatenate([cx + nx * half, (cx - nx * half)[::-1]])
    return ys, xs


def single_nucleus(
    rng: np.random.Generator,
    layer: np.ndarray,
    cy: float,
    cx: float,
    body_r: float,
    um: float,
    look: CellLook,
) -> None:
    a = min(body_r * rng.uniform(0.45, 0.7), rng.uniform(5, 9) / um)
    win = window(layer.shape, cy, cx, a * 1.3 + 3)
    if win is None:
        return
    inside = blob(rng, win, a, roughness=0.05, elongation=rng.uniform(0.6, 0.95), edge_px=1.2)
    rim = inside * (1 - inside) * 4
    nucleolus = blob(
        rng, win, max(a * 0.18, 0.8), roughness=0.1, edge_px=0.8, dy=rng.uniform(-0.3, 0.3) * a
    )
    layer[win.rows, win.cols] *= 1 - (
        look.nucleus * inside - 0.5 * look.nucleus * rim + look.nucleolus * nucleolus
    )


def stamp_round_cells(
    rng: np.random.Generator, layer: np.ndarray, um: float, look: CellLook
) -> None:
    """Rounded mitotic cells (bright disc, dark rim, halo) and dead cells (small, dark, rough)."""
    field_mm2 = layer.shape[0] * layer.shape[1] * um * um / 1e6
    crowd = 1.0 if look.style in ("confluent", "epithelial") else 0.5
    for _ in range(rng.poisson(rng.uniform(0, 25) * field_mm2 * crowd)):
        mitotic_cell(rng, layer, um)
    for _ in range(rng.poisson(rng.uniform(0, 30) * field_mm2 * crowd)):
        dead_cell(rng, layer, um)


def mitotic_cell(rng: np.random.Generator, layer: np.ndarray, um: float) -> None:
    radius = rng.uniform(5, 10) / um
    win = window(
        layer.shape,
        rng.uniform(0, layer.shape[0]),
        rng.uniform(0, layer.shape[1]),
        radius * 1.8 + 3,
    )
    if win is None:
        return
    r = np.sqrt(win.yy**2 + win.xx**2) * F32(rng.uniform(0.9, 1.1))
    inside = np.clip((radius - r) / 1.0 + 0.5, 0, 1)
    factor = 1 + rng.uniform(0.05, 0.25) * inside * np.exp(-((r / radius) ** 2))
    factor -= rng.uniform(0.1, 0.3) * ring(r, radius * 0.95, max(0.8 / um, 0.8))
    factor += rng.uniform(0.05, 0.15) * ring(r, radius * 1.2, radius * 0.15)
    layer[win.rows, win.cols] *= factor.astype(F32)


def dead_cell(rng: np.random.Generator, layer: np.ndarray, um: float) -> None:
    radius = rng.uniform(3, 7) / um
    win = window(
        layer.shape, rng.uniform(0, layer.shape[0]), rng.uniform(0, layer.shape[1]), radius * 2 + 3
    )
    if win is None:
        return
    shrunk = blob(
        rng,
        win,
        radius,
        roughness=rng.uniform(0.2, 0.45),
        elongation=rng.uniform(0.6, 1.0),
        edge_px=1.0,
    )
    halo = blob(rng, win, radius * 1.4, roughness=0.1, edge_px=radius * 0.4) - shrunk
    factor = 1 - rng.uniform(0.15, 0.45) * shrunk + rng.uniform(0, 0.08) * halo.clip(0, None)
    layer[win.rows, win.cols] *= factor.astype(F32)


# ---------------------------------------------------------------------------------------------
# artifacts


@dataclass(frozen=True)
class Drawn:
    """One artifact: its transmission factor over a window of the frame (1 = no effect)."""

    rows: slice
    cols: slice
    factor: np.ndarray


class ArtifactLayer:
    """The product of all drawn artifact factors and the instance mask of their footprints."""

    def __init__(self, shape: tuple[int, int]) -> None:
        self.factor = np.ones(shape, F32)
        self.mask = np.zeros(shape, np.uint16)
        self.kinds: list[str] = []

    def add(self, kind: str, drawn: Drawn) -> bool:
        """Composite one artifact; False (nothing drawn) if its footprint is < MIN_FOOTPRINT_PX."""
        difference = np.abs(drawn.factor - 1)
        peak = float(difference.max())
        if peak <= 0:
            return False
        footprint = difference > FOOTPRINT_FRACTION * peak
        if kind in SOLID_KINDS:
            footprint = ndi.binary_fill_holes(footprint)
        if int(footprint.sum()) < MIN_FOOTPRINT_PX:
            return False
        self.factor[drawn.rows, drawn.cols] *= drawn.factor
        self.kinds.append(kind)
        self.mask[drawn.rows, drawn.cols][footprint] = len(self.kinds)  # later wins
        return True

    def truth(self) -> tuple[np.ndarray, tuple[SynthObject, ...]]:
        """Relabel to 1..n (an artifact covered by later ones disappears); measure each label."""
        counts = np.bincount(self.mask.ravel(), minlength=len(self.kinds) + 1)
        kept = [old for old in range(1, len(self.kinds) + 1) if counts[old] > 0]
        lookup = np.zeros(len(self.kinds) + 1, np.uint16)
        lookup[kept] = np.arange(1, len(kept) + 1, dtype=np.uint16)
        mask = lookup[self.mask]
        objects = []
        if kept:
            flat = mask.ravel()
            rows, cols = np.divmod(np.arange(flat.size), mask.shape[1])
            sum_y = np.bincount(flat, weights=rows, minlength=len(kept) + 1)
            sum_x = np.bincount(flat, weights=cols, minlength=len(kept) + 1)
            for new, old in enumerate(kept, start=1):
                area = int(counts[old])
                cy, cx = sum_y[new] / area, sum_x[new] / area
                objects.append(
                    SynthObject(
                        kind=self.kinds[old - 1],
                        label=new,
                        area_px=area,
                        equivalent_diameter_px=float(math.sqrt(4 * area / math.pi)),
                        centroid_y=float(cy),
                        centroid_x=float(cx),
                    )
                )
        return mask, tuple(objects)


def draw_artifacts(
    rng: np.random.Generator, layer: ArtifactLayer, um: float, kinds: tuple[str, ...]
) -> None:
    """1-5 artifacts of the allowed kinds; those too small to show are redrawn (boundedly)."""
    wanted = int(rng.integers(ARTIFACTS_PER_FRAME[0], ARTIFACTS_PER_FRAME[1] + 1))
    shape = layer.factor.shape
    drawn, tries = 0, 0
    while drawn < wanted and tries < wanted * 8:
        tries += 1
        kind = str(rng.choice(kinds))
        artifact = ARTIFACT_DRAWERS[kind](rng, shape, um)
        if artifact is not None and layer.add(kind, artifact):
            drawn += 1


def _random_centre(rng: np.random.Generator, shape: tuple[int, int]) -> tuple[float, float]:
    return float(rng.uniform(0, shape[0])), float(rng.uniform(0, shape[1]))


def dust(rng: np.random.Generator, shape: tuple[int, int], um: float) -> Drawn | None:
    """Small, very dark, sharp specks; sometimes a tight group of them (one artifact)."""
    specks = 1 if rng.random() < 0.7 else int(rng.integers(2, 7))
    radius = math.sqrt(_loguniform(rng, 20, 400) / math.pi) / um
    spread = radius * rng.uniform(1.5, 4) if specks > 1 else 0.0
    win = window(shape, *_random_centre(rng, shape), radius * 1.6 + spread + 3)
    if win is None:
        return None
    factor = np.ones(win.shape, F32)
    for i in range(specks):
        r = radius * (1.0 if i == 0 else rng.uniform(0.3, 0.8))
        dy, dx = rng.normal(0, spread / 2 + 1e-6, 2) if i else (0.0, 0.0)
        speck = blob(
            rng,
            win,
            r,
            roughness=rng.uniform(0.1, 0.35),
            elongation=rng.uniform(0.6, 1),
            edge_px=0.7,
            dy=dy,
            dx=dx,
        )
        factor *= 1 - rng.uniform(0.5, 0.92) * speck
    return Drawn(win.rows, win.cols, factor)


def debris(rng: np.random.Generator, shape: tuple[int, int], um: float) -> Drawn | None:
    """Irregular dark fragments with an inner texture and a few bright chips."""
    radius = math.sqrt(_loguniform(rng, 80, 6000) / math.pi) / um
    win = window(shape, *_random_centre(rng, shape), radius * 2.2 + 4)
    if win is None:
        return None
    occupancy = np.zeros(win.shape, F32)
    for _ in range(int(rng.integers(1, 4))):
        dy, dx = rng.normal(0, radius * 0.4, 2)
        part = blob(
            rng,
            win,
            radius * rng.uniform(0.5, 1.0),
            roughness=rng.uniform(0.3, 0.6),
            elongation=rng.uniform(0.35, 1.0),
            edge_px=rng.uniform(0.7, 2.0),
            dy=dy,
            dx=dx,
        )
        np.maximum(occupancy, part, out=occupancy)
    texture = 0.75 + 0.35 * fractal_noise(rng, win.shape, max(radius / 3, 3), octaves=3)
    chips = speckle_field(rng, win.shape, max(radius / 10, 0.7), 0.3)
    depth = rng.uniform(0.25, 0.7)
    factor = 1 - np.clip(depth * texture, 0.05, 0.95) * occupancy + 0.3 * chips * occupancy
    return Drawn(win.rows, win.cols, factor.astype(F32))


def fibre(rng: np.random.Generator, shape: tuple[int, int], um: float) -> Drawn | None:
    """A long thin curved dark thread (lint, hair), up to field-crossing, often light-cored."""
    field_px = math.hypot(*shape)
    length = min(_loguniform(rng, 80, 2500) / um, field_px * 1.5)
    half_width = _loguniform(rng, 1.5, 15) / um / 2
    path_y, path_x = smooth_curve(rng, length, turning=rng.uniform(0.2, 3.0))
    cy, cx = _random_centre(rng, shape)
    path_y, path_x = path_y + cy - path_y.mean(), path_x + cx - path_x.mean()
    pad = half_width + 4
    top, bottom = int(max(0, path_y.min() - pad)), int(min(shape[0], path_y.max() + pad + 1))
    left, right = int(max(0, path_x.min() - pad)), int(min(shape[1], path_x.max() + pad + 1))
    if bottom <= top or right <= left:
        return None
    line = np.ones((bottom - top, right - left), bool)
    iy, ix = np.round(path_y - top).astype(np.int64), np.round(path_x - left).astype(np.int64)
    keep = (iy >= 0) & (iy < line.shape[0]) & (ix >= 0) & (ix < line.shape[1])
    if not keep.any():
        return None
    line[iy[keep], ix[keep]] = False
    distance = ndi.distance_transform_edt(line).astype(F32)
    body = np.clip(half_width - distance + 0.5, 0, 1)
    core = np.exp(-((distance / max(half_width * 0.4, 0.5)) ** 2)) * rng.uniform(0, 0.6)
    factor = 1 - rng.uniform(0.3, 0.85) * body * (1 - core)
    return Drawn(slice(top, bottom), slice(left, right), factor.astype(F32))


def smooth_curve(
    rng: np.random.Generator, length: float, turning: float
) -> tuple[np.ndarray, np.ndarray]:
    """Points every ~0.7 px along a curve whose heading wanders smoothly by ~`turning` radians."""
    n = max(8, int(length / 0.7))
    bend = ndi.gaussian_filter1d(
        rng.standard_normal(n), sigma=n / rng.uniform(3, 12), mode="nearest"
    )
    bend *= turning / max(float(np.abs(np.cumsum(bend)).max()), 1e-6)
    heading = rng.uniform(0, 2 * np.pi) + np.cumsum(bend)
    return np.cumsum(np.sin(heading) * 0.7), np.cumsum(np.cos(heading) * 0.7)


def bubble(rng: np.random.Generator, shape: tuple[int, int], um: float) -> Drawn | None:
    """Discs: thick dark rim, thin bright inner ring, bright or grey centre; sometimes several."""
    radius = _loguniform(rng, 10, 150) / um
    count = 1 if rng.random() < 0.7 else int(rng.integers(2, 5))
    win = window(shape, *_random_centre(rng, shape), radius * (1.3 + 0.8 * (count > 1)) + 4)
    if win is None:
        return None
    factor = np.ones(win.shape, F32)
    for i in range(count):
        r0 = radius * (1.0 if i == 0 else rng.uniform(0.3, 0.9))
        dy, dx = rng.normal(0, radius * 0.5, 2) if i else (0.0, 0.0)
        r = np.sqrt((win.yy - dy) ** 2 + (win.xx - dx) ** 2)
        rim = r0 * rng.uniform(0.08, 0.25)
        dark_rim = np.clip((r0 - r) / 0.8 + 0.5, 0, 1) * np.clip(
            (r - (r0 - rim)) / (rim * 0.35) + 0.5, 0, 1
        )
        centre = np.clip((r0 - rim - r) / 1.0 + 0.5, 0, 1)
        shade = rng.uniform(1.05, 1.3) if rng.random() < 0.6 else rng.uniform(0.85, 0.98)
        one = (1 - rng.uniform(0.4, 0.75) * dark_rim) * (1 + (shade - 1) * centre)
        one += rng.uniform(0.1, 0.3) * ring(r, r0 - rim * 1.05, max(rim * 0.12, 0.6))
        factor *= one.astype(F32)
    return Drawn(win.rows, win.cols, factor)


def clump(rng: np.random.Generator, shape: tuple[int, int], um: float) -> Drawn | None:
    """Detached cells piled up: a dense aggregate of small rounded blobs, dark where they stack."""
    radius = _loguniform(rng, 20, 300) / um
    cell_r = rng.uniform(4, 8) / um
    win = window(shape, *_random_centre(rng, shape), radius * 1.5 + cell_r * 2 + 4)
    if win is None:
        return None
    outline = blob(
        rng,
        win,
        radius,
        roughness=rng.uniform(0.15, 0.4),
        elongation=rng.uniform(0.5, 1.0),
        edge_px=cell_r,
    )
    inside_y, inside_x = np.nonzero(outline > 0.5)
    if inside_y.size == 0:
        return None
    piling = rng.uniform(1.0, 2.5)
    count = int(min(3000, max(3, piling * inside_y.size / (math.pi * cell_r**2))))
    pick = rng.integers(0, inside_y.size, count)
    density = np.zeros(win.shape, F32)
    stamps = [
        rounded_cell_stamp(
            cell_r * rng.uniform(0.7, 1.25), rng.uniform(0.25, 0.7), rng.uniform(-0.35, 0.4)
        )
        for _ in range(8)
    ]
    for y, x, which in zip(
        inside_y[pick], inside_x[pick], rng.integers(0, len(stamps), count), strict=True
    ):
        add_stamp(density, stamps[which], int(y), int(x))
    density += rng.uniform(0.05, 0.4) * ndi.gaussian_filter(
        outline, cell_r
    )  # stacked cells absorb more
    return Drawn(win.rows, win.cols, np.exp(-density).astype(F32))


def rounded_cell_stamp(radius: float, rim_density: float, centre_density: float) -> np.ndarray:
    """Optical density of one rounded cell: body, dark rim, bright (negative) or dark centre."""
    half = math.ceil(radius * 1.3) + 1
    grid = np.arange(-half, half + 1, dtype=F32)
    r = np.sqrt(grid[:, None] ** 2 + grid[None, :] ** 2)
    inside = np.clip(radius - r + 0.5, 0, 1)
    centre = np.exp(-((r / (radius * 0.55)) ** 2))
    rim = ring(r, radius * 0.85, max(radius * 0.25, 0.8))
    return (0.08 * inside + rim_density * rim + centre_density * centre).astype(F32)


def add_stamp(canvas: np.ndarray, stamp: np.ndarray, y: int, x: int) -> None:
    half = stamp.shape[0] // 2
    top, left = y - half, x - half
    t0, l0 = max(0, -top), max(0, -left)
    t1 = min(stamp.shape[0], canvas.shape[0] - top)
    l1 = min(stamp.shape[1], canvas.shape[1] - left)
    if t1 > t0 and l1 > l0:
        canvas[top + t0 : top + t1, left + l0 : left + l1] += stamp[t0:t1, l0:l1]


def precipitate(rng: np.random.Generator, shape: tuple[int, int], um: float) -> Drawn | None:
    """Crystals: dark angular polygons with bright facets, or clusters of needles from one point."""
    size = _loguniform(rng, 4, 60) / um
    win = window(shape, *_random_centre(rng, shape), size * 1.6 + 4)
    if win is None:
        return None
    cy, cx = -float(win.yy[0, 0]), -float(win.xx[0, 0])  # the centre in window coordinates
    factor = np.ones(win.shape, F32)
    if rng.random() < 0.6:
        for _ in range(int(rng.integers(1, 6))):
            oy, ox = rng.normal(0, size * 0.35, 2)
            faceted_crystal(rng, factor, cy + oy, cx + ox, size * rng.uniform(0.3, 0.7))
    else:
        needle_cluster(rng, factor, cy, cx, size)
    return Drawn(win.rows, win.cols, factor)


def faceted_crystal(
    rng: np.random.Generator, factor: np.ndarray, cy: float, cx: float, radius: float
) -> None:
    corners = int(rng.integers(3, 8))
    theta = np.sort(rng.uniform(0, 2 * np.pi, corners))
    r = radius * rng.uniform(0.6, 1.0, corners)
    ys, xs = cy + r * np.sin(theta), cx + r * np.cos(theta)
    hub_y, hub_x = cy + rng.normal(0, radius * 0.15), cx + rng.normal(0, radius * 0.15)
    for i in range(corners):  # each facet of the fan catches the light differently
        j = (i + 1) % corners
        rr, cc = fill_polygon([hub_y, ys[i], ys[j]], [hub_x, xs[i], xs[j]], shape=factor.shape)
        factor[rr, cc] *= rng.uniform(1.1, 1.45) if rng.random() < 0.3 else rng.uniform(0.25, 0.7)


def needle_cluster(
    rng: np.random.Generator, factor: np.ndarray, cy: float, cx: float, size: float
) -> None:
    for _ in range(int(rng.integers(4, 25))):
        theta = rng.uniform(0, 2 * np.pi)
        length = size * rng.uniform(0.4, 1.4)
        half = max(rng.uniform(0.3, 1.2) / 2 * size / 20, 0.6)
        ty, tx = cy + length * math.sin(theta), cx + length * math.cos(theta)
        ny, nx = math.cos(theta) * half, -math.sin(theta) * half
        rr, cc = fill_polygon(
            [cy + ny, ty + ny, ty - ny, cy - ny],
            [cx + nx, tx + nx, tx - nx, cx - nx],
            shape=factor.shape,
        )
        factor[rr, cc] *= rng.uniform(0.3, 0.7) if rng.random() < 0.8 else rng.uniform(1.1, 1.3)


def dirt(rng: np.random.Generator, shape: tuple[int, int], um: float) -> Drawn | None:
    """Out-of-focus dirt on the optics: large, soft, faint (3-15 %) dark blob, maybe fringed."""
    radius = _loguniform(rng, 25, 250) / um
    win = window(shape, *_random_centre(rng, shape), radius * 1.6 + 4)
    if win is None:
        return None
    contrast = rng.uniform(0.03, 0.15)
    soft = blob(
        rng,
        win,
        radius,
        roughness=rng.uniform(0.05, 0.2),
        elongation=rng.uniform(0.7, 1),
        edge_px=radius * rng.uniform(0.2, 0.6),
    )
    if rng.random() < 0.4:  # a defocused speck shows concentric fringes
        r = np.sqrt(win.yy**2 + win.xx**2)
        fringes = 0.5 + 0.5 * np.cos(2 * np.pi * r / (radius * rng.uniform(0.2, 0.4)))
        soft = soft * (0.4 + 0.6 * fringes)
    return Drawn(win.rows, win.cols, (1 - contrast * soft).astype(F32))


def scratch(rng: np.random.Generator, shape: tuple[int, int], um: float) -> Drawn | None:
    """A long straight thin line, bright or dark, across part of the field."""
    length = min(_loguniform(rng, 150, 2000) / um, math.hypot(*shape) * 1.2)
    half_width = rng.uniform(0.5, 2.5) / um / 2
    theta = rng.uniform(0, np.pi)
    cy, cx = _random_centre(rng, shape)
    dy, dx = math.sin(theta) * length / 2, math.cos(theta) * length / 2
    pad = half_width + 3
    top, bottom = (
        int(max(0, min(cy - dy, cy + dy) - pad)),
        int(min(shape[0], max(cy - dy, cy + dy) + pad + 1)),
    )
    left, right = (
        int(max(0, min(cx - dx, cx + dx) - pad)),
        int(min(shape[1], max(cx - dx, cx + dx) + pad + 1)),
    )
    if bottom <= top or right <= left:
        return None
    yy = np.arange(top, bottom, dtype=F32)[:, None] - F32(cy)
    xx = np.arange(left, right, dtype=F32)[None, :] - F32(cx)
    along = yy * F32(math.sin(theta)) + xx * F32(math.cos(theta))
    across = np.abs(-yy * F32(math.cos(theta)) + xx * F32(math.sin(theta)))
    line = np.clip(half_width - across + 0.5, 0, 1) * np.clip(length / 2 - np.abs(along), 0, 1)
    contrast = rng.uniform(0.1, 0.45) * (1 if rng.random() < 0.5 else -1)
    return Drawn(slice(top, bottom), slice(left, right), (1 + contrast * line).astype(F32))


ARTIFACT_DRAWERS: dict[
    str, Callable[[np.random.Generator, tuple[int, int], float], Drawn | None]
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


# ---------------------------------------------------------------------------------------------
# optics and camera


def point_spread(rng: np.random.Generator, intensity: np.ndarray, um: float) -> np.ndarray:
    """Blur with a Gaussian (most frames), a defocus disc or an Airy-like pattern."""
    choice = rng.random()
    if choice < 0.6:
        return ndi.gaussian_filter(intensity, max(rng.uniform(0.25, 0.8) / um, 0.4), mode="reflect")
    radius = max(rng.uniform(0.4, 1.2) / um, 1.0)
    kernel = disc_kernel(radius) if choice < 0.8 else airy_kernel(radius)
    half = kernel.shape[0] // 2
    padded = np.pad(intensity, half, mode="reflect")
    return fftconvolve(padded, kernel, mode="valid").astype(F32)


def disc_kernel(radius: float) -> np.ndarray:
    half = math.ceil(radius) + 1
    grid = np.arange(-half, half + 1, dtype=F32)
    kernel = np.clip(radius - np.sqrt(grid[:, None] ** 2 + grid[None, :] ** 2) + 0.5, 0, 1)
    return kernel / kernel.sum()


def airy_kernel(first_zero: float) -> np.ndarray:
    """(2 J1(x) / x)^2 with its first dark ring at `first_zero` px, cut after the second ring."""
    half = math.ceil(first_zero * 2.3) + 1
    grid = np.arange(-half, half + 1, dtype=np.float64)
    x = np.sqrt(grid[:, None] ** 2 + grid[None, :] ** 2) * (3.8317 / first_zero) + 1e-9
    kernel = (2 * j1(x) / x) ** 2
    return (kernel / kernel.sum()).astype(F32)


def camera(rng: np.random.Generator, intensity: np.ndarray, dtype: str) -> np.ndarray:
    """Poisson-Gaussian sensor, per-frame exposure; occasional banding, smear or JPEG blocks."""
    if dtype == "uint8":
        full_scale, level = 255, rng.uniform(40, 230)
    elif rng.random() < 0.25:  # a 12-bit camera written into uint16
        full_scale, level = 4095, _loguniform(rng, 500, 3500)
    else:
        full_scale, level = 65535, _loguniform(rng, 500, 50000)
    offset = level * rng.uniform(0, 0.08)
    # electrons at the background: SNR ~12 to ~140, and a few dim, noisy frames down to ~6
    photons = _loguniform(rng, 150, 20000) if rng.random() < 0.9 else _loguniform(rng, 40, 150)
    gain = (level - offset) / photons
    electrons = np.maximum(intensity, 0) * F32(photons)
    if photons < 50:
        electrons = rng.poisson(electrons).astype(F32)
    else:  # Poisson is Gaussian with variance = mean this far up, and much cheaper
        electrons += np.sqrt(electrons) * rng.standard_normal(electrons.shape, dtype=F32)
    electrons += F32(rng.uniform(1, 8)) * rng.standard_normal(electrons.shape, dtype=F32)
    counts = F32(offset) + F32(gain) * electrons
    noise_dn = gain * math.sqrt(photons)
    if rng.random() < 0.15:
        counts += row_banding(rng, counts.shape, noise_dn)
    if rng.random() < 0.1:
        counts = vertical_smear(rng, counts)
    if rng.random() < 0.1:
        counts = block_quantise(counts, step=noise_dn * rng.uniform(0.1, 0.6))
    return np.clip(np.round(counts), 0, full_scale).astype(dtype)


def row_banding(rng: np.random.Generator, shape: tuple[int, int], noise_dn: float) -> np.ndarray:
    rows = rng.normal(0, noise_dn * rng.uniform(0.1, 0.5), shape[0])
    period = rng.uniform(8, 200)
    rows += (
        noise_dn
        * rng.uniform(0, 0.5)
        * np.sin(2 * np.pi * np.arange(shape[0]) / period + rng.uniform(0, 6.3))
    )
    return rows.astype(F32)[:, None]


def vertical_smear(rng: np.random.Generator, counts: np.ndarray) -> np.ndarray:
    smeared = ndi.uniform_filter1d(counts, int(rng.integers(3, 9)), axis=0)
    mix = F32(rng.uniform(0.1, 0.4))
    return (1 - mix) * counts + mix * smeared


def block_quantise(counts: np.ndarray, step: float) -> np.ndarray:
    """JPEG-like loss: 8x8 DCT blocks with coefficients rounded, coarser for higher frequencies."""
    h, w = counts.shape
    ph, pw = -h % 8, -w % 8
    padded = np.pad(counts, ((0, ph), (0, pw)), mode="edge")
    k = np.arange(8)
    dct = np.sqrt(2 / 8) * np.cos(np.pi * (2 * k[None, :] + 1) * k[:, None] / 16)
    dct[0] /= np.sqrt(2)
    dct = dct.astype(F32)
    blocks = padded.reshape(padded.shape[0] // 8, 8, padded.shape[1] // 8, 8).transpose(0, 2, 1, 3)
    coef = dct @ blocks @ dct.T
    steps = F32(max(step, 1e-3)) * (1 + 0.5 * (k[:, None] + k[None, :])).astype(F32)
    coef = np.round(coef / steps) * steps
    restored = (dct.T @ coef @ dct).transpose(0, 2, 1, 3).reshape(padded.shape)
    return restored[:h, :w]
