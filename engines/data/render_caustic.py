"""The caustic renderer: brightfield frames from geometric optics (ray displacement and caustics).

A fifth, independently written renderer, used only to measure how fast a model adapts to images
it has never seen. Its idea of how a brightfield image forms:

- The specimen is an optical path map ``phi(x, y)`` (um of path difference) plus an absorbance
  map. Each light ray crossing it is bent by the gradient of ``phi``; seen at a defocus distance
  ``z`` it lands displaced by ``d = z * grad(phi)``. Rays that bunch up make light, rays that
  spread out make shadow: the intensity is the inverse Jacobian of the ray mapping,
  ``I = 1 / |det(Id + z * Hessian(phi))|``, times the absorption ``exp(-a)``. Where the mapping
  folds (``det -> 0``) the intensity is a caustic; it saturates smoothly instead of diverging.
  Rays bent further than the objective's acceptance angle are lost, so steep things (a bubble's
  meniscus, the flank of a heap of cells) go dark whatever the focus. The image is then
  resampled at the displaced positions (first-order inverse of the ray map, shift capped at a few
  pixels) and blurred a little by the condenser's finite aperture.
- How it differs from a linear Laplacian (transport-of-intensity, "halo") model: that model is
  ``1 + k * laplacian(phi)``, symmetric in bright and dark and linear in the phase. Here the
  response is ``1 / det``, so it is strongly asymmetric (focusing makes narrow, very bright cores,
  defocusing makes broad, moderate shadows), it depends on both Hessian eigenvalues (a ridge and a
  dome of the same Laplacian look different), it saturates at folds, and it has an aperture
  cut-off on the slope itself, which a Laplacian model has no notion of.
- Each phase layer has its own defocus: cells, clumps, crystals and scratches lie in the cell
  plane (``z`` drawn per frame, either sign: over- or under-focus); a bubble floats higher and
  has its own ``z``, chosen so that it acts as a lens with a bright centre. Out-of-focus dirt is
  not imaged at all: it is a soft shadow multiplied onto the result.
- Cells are level sets of smooth anisotropic Gaussian random fields: per frame a coverage
  (sparse to confluent), a cell size (20-150 um), an elongation and direction (streams), thin
  lamellae at the outline rising to a plateau, nuclei from a second level set inside the bodies,
  cell-cell junctions in confluent sheets, granules (small positive phase bumps) and vacuoles
  (negative ones), and in some frames a granular stain (absorbance 0.2-0.8 over the bodies).
- Illumination is uneven (tilt, vignetting, low-frequency ripple, sometimes a well edge); the
  camera is a scientific CMOS: Poisson shot noise, read noise, pixel gain and offset
  non-uniformity, column offsets, 16- or 12-bit output in uint16, or uint8 with a gamma.

The mask rule: each artifact's footprint is the region where the artifact itself is (the opaque
or refracting body; for out-of-focus dirt, where its shadow is at least half as deep as at its
centre). Artifacts are drawn one after another and labelled 1..n in drawing order; a later one
overwrites an earlier one where they overlap. An artifact whose footprint inside the frame is
under MIN_FOOTPRINT_PX pixels is not drawn; after all are drawn, a label left with fewer than
MIN_FOOTPRINT_PX pixels (mostly covered by later ones) is dropped from the mask and the rest are
relabelled consecutively. Objects are measured from the final mask.

Speed: about 0.29 s per 1080 x 1080 frame on one core (mean of 20 frames pinned to one core with
taskset, artifact probability 0.5 or 1; slowest frame 0.38 s; measured while a training job
shared the machine's other core).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import fft as sfft
from scipy import ndimage as ndi

from engines.data.synth import (
    ARTIFACT_KINDS,
    DEFAULT_OPTIONS,
    SynthFrame,
    SynthObject,
    SynthOptions,
)

MIN_FOOTPRINT_PX = 20  # an artifact smaller than this inside the frame is not drawn / is dropped
PIXEL_SIZE_RANGE_UM = (0.3, 1.3)
FOLD_SOFTNESS = 0.35  # at a fold (det -> 0) the intensity saturates near 1 / FOLD_SOFTNESS
SHADOW_FLOOR = 0.4  # spreading rays dim the light at most this far (keeps phase objects grey)
MAX_SHIFT_PX = 3.0  # cap on the ray displacement, so the mask stays on what it labels
COUNT_WEIGHTS = (0.4, 0.25, 0.15, 0.12, 0.08)  # 1..5 artifacts in an artifact frame


# --------------------------------------------------------------------------------------------
# Random fields


def _radial(shape: tuple[int, int], sigma_px: float, stretch: float, angle: float) -> np.ndarray:
    """(k . Sigma . k) on the rfft2 grid of an anisotropic Gaussian of width sigma_px,
    stretched by `stretch` along `angle`: exp(-radial / 2) is its transfer function."""
    h, w = shape
    ky = (2 * np.pi * sfft.fftfreq(h)).astype(np.float32)[:, None]
    kx = (2 * np.pi * sfft.rfftfreq(w)).astype(np.float32)[None, :]
    ku = kx * math.cos(angle) + ky * math.sin(angle)
    kv = -kx * math.sin(angle) + ky * math.cos(angle)
    su, sv = sigma_px * math.sqrt(stretch), sigma_px / math.sqrt(stretch)
    return (ku * su) ** 2 + (kv * sv) ** 2


def _shot_fields(
    rng: np.random.Generator,
    shape: tuple[int, int],
    count: int,
    sigmas_px: tuple[float, ...],
    stretch: float,
    angle: float,
) -> list[np.ndarray]:
    """Sums of `count` anisotropic Gaussian kernels (peak 1) at the same random places (shot-noise
    fields), one per width: the level set at 0.5 of the wide one gives cell bodies of diameter
    ~2.35 sigma at any coverage; a narrow one puts a nucleus at each cell's centre."""
    ys = rng.integers(0, shape[0], count)
    xs = rng.integers(0, shape[1], count)
    points = sfft.rfft2(_splat(shape, ys, xs, np.ones(count)), workers=1)
    fields = []
    for sigma in sigmas_px:
        transfer = np.exp(-0.5 * _radial(shape, sigma, stretch, angle)) * (2 * np.pi * sigma**2)
        fields.append(sfft.irfft2(points * transfer, s=shape, workers=1).astype(np.float32))
    return fields


def _random_field(
    rng: np.random.Generator,
    shape: tuple[int, int],
    sigma_px: float,
    *,
    stretch: float = 1.0,
    angle: float = 0.0,
    detail: float = 0.0,
) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian random field, smooth on the scale sigma_px.

    stretch > 1 elongates the blobs along `angle`; `detail` mixes in a 3x finer component so
    that level sets get ragged, branching outlines instead of round ones. Noise is drawn only
    where the spectrum is not negligible, straight into Fourier space (one inverse FFT).
    """
    radial = _radial(shape, sigma_px, stretch, angle)
    spectrum = np.exp(-0.5 * radial)
    if detail > 0:
        spectrum += detail * np.exp(-0.5 * radial / 9.0)
    keep = spectrum > 1e-3
    coefficients = np.zeros(spectrum.shape, np.complex64)
    n = int(keep.sum())
    coefficients[keep] = (rng.standard_normal(n) + 1j * rng.standard_normal(n)) * spectrum[keep]
    values = sfft.irfft2(coefficients, s=shape, workers=1).astype(np.float32)
    values -= values.mean()
    return values / max(float(values[::3, ::3].std()), 1e-12)


def _splat(
    shape: tuple[int, int], ys: np.ndarray, xs: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """Point weights summed into a frame-sized array (for granules, vacuoles)."""
    flat = ys.astype(np.int64) * shape[1] + xs.astype(np.int64)
    summed = np.bincount(flat, weights, minlength=shape[0] * shape[1])
    return summed.reshape(shape).astype(np.float32)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


# --------------------------------------------------------------------------------------------
# Ray optics


@dataclass(slots=True)
class _Rays:
    """Per-pixel sums that define the ray map: the Jacobian's z*Hessian terms, the deflection
    angle (for the aperture cut-off) and the displacement in pixels."""

    jyy: np.ndarray
    jxy: np.ndarray
    jxx: np.ndarray
    ay: np.ndarray
    ax: np.ndarray
    dy: np.ndarray
    dx: np.ndarray

    @classmethod
    def empty(cls, shape: tuple[int, int]) -> _Rays:
        return cls(*(np.zeros(shape, np.float32) for _ in range(7)))

    def add_phase(
        self, opd_um: np.ndarray, z_um: float, um: float, y0: int = 0, x0: int = 0
    ) -> None:
        """Add a layer of optical path at defocus z_um, its patch's top-left corner at (y0, x0).

        With pixel coordinates, the Jacobian term is (z / um^2) * Hessian_px and the landing
        shift in pixels is the same factor times the gradient in um-of-path per pixel.
        """
        gy, gx = np.gradient(opd_um)
        gyy, gyx = np.gradient(gy)
        gxx = np.gradient(gx, axis=1)
        k = z_um / um**2
        where = (slice(y0, y0 + opd_um.shape[0]), slice(x0, x0 + opd_um.shape[1]))
        self.jyy[where] += k * gyy
        self.jxy[where] += k * gyx
        self.jxx[where] += k * gxx
        self.ay[where] += gy / um
        self.ax[where] += gx / um
        self.dy[where] += k * gy
        self.dx[where] += k * gx


@dataclass(frozen=True, slots=True)
class _Optics:
    z_um: float  # defocus of the cell plane; the sign is over- or under-focus
    aperture_rad: float  # rays bent further than this miss the objective
    condenser_na: float  # finite illumination aperture: blurs caustics by z * NA


def _curvature_scale(opd: np.ndarray, inside: np.ndarray) -> float:
    """A high percentile of the largest Hessian eigenvalue magnitude over the cells (um/px^2)."""
    gy, gx = np.gradient(opd[::2, ::2])  # half resolution is plenty for a scale estimate
    gyy, gyx = np.gradient(gy)
    gxx = np.gradient(gx, axis=1)
    largest = np.abs(gyy + gxx) / 2 + np.sqrt(((gyy - gxx) / 2) ** 2 + gyx**2)
    values = largest[inside[::2, ::2]]
    if values.size < 50:
        return 0.0
    return float(np.percentile(values, 99.0)) / 4.0  # /4: derivatives were taken on a 2x grid


def _draw_optics(rng: np.random.Generator, cell_scale: float, um: float) -> _Optics:
    """Choose the defocus so the strongest cell curvature gives a chosen caustic strength, so the
    cells are visible but (mostly) do not fold, whatever their size and the pixel size."""
    strength = rng.uniform(0.25, 0.6)
    k = strength / max(cell_scale, 1e-9)
    z = float(np.clip(k * um**2, 2.0, 60.0)) * (1 if rng.random() < 0.5 else -1)
    aperture = rng.uniform(0.15, 0.4)
    return _Optics(z_um=z, aperture_rad=aperture, condenser_na=rng.uniform(0.02, 0.08))


def _limit_slope(opd: np.ndarray, um: float, aperture_rad: float) -> None:
    """Scale a clean scene's optical path down (in place) until its steepest cells bend rays by
    well under the aperture: only artifacts (bubbles, heaps) should lose light that way."""
    gy, gx = np.gradient(opd[::2, ::2])
    steep = float(np.percentile(np.hypot(gy, gx), 99.95)) / (2 * um)
    limit = 0.4 * aperture_rad
    if steep > limit:
        opd *= limit / steep


def _image_intensity(rays: _Rays, absorbance: np.ndarray, optics: _Optics, um: float) -> np.ndarray:
    """Relative intensity at the camera: inverse Jacobian x aperture x absorption, then landed at
    the displaced positions and blurred by the condenser aperture."""
    det = (1 + rays.jyy) * (1 + rays.jxx) - rays.jxy**2
    focus = 1.0 / np.sqrt(det * det + FOLD_SOFTNESS**2)  # folds saturate instead of diverging
    focus = np.maximum(focus, SHADOW_FLOOR)
    bend2 = (rays.ay**2 + rays.ax**2) / optics.aperture_rad**2
    kept = 1.0 / (1.0 + bend2**3)  # rays bent past the objective's acceptance angle are lost
    intensity = (focus * kept * np.exp(-absorbance)).astype(np.float32)
    intensity = _land(intensity, rays.dy, rays.dx)
    blur_px = float(np.clip(abs(optics.z_um) * optics.condenser_na / um, 0.5, 2.5))
    return ndi.gaussian_filter(intensity, blur_px, truncate=3.0)


def _land(intensity: np.ndarray, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """Move each ray's intensity to where it lands (first-order inverse map, capped shift)."""
    shift = np.sqrt(dy * dy + dx * dx)
    if float(shift.max()) < 0.05:
        return intensity
    scale = np.minimum(1.0, MAX_SHIFT_PX / np.maximum(shift, 1e-6))
    h, w = intensity.shape
    yy = np.arange(h, dtype=np.float32)[:, None] - dy * scale
    xx = np.arange(w, dtype=np.float32)[None, :] - dx * scale
    return ndi.map_coordinates(intensity, [yy, xx], order=1, mode="nearest", output=np.float32)


# --------------------------------------------------------------------------------------------
# Cells


@dataclass(frozen=True, slots=True)
class _CellLook:
    coverage: float  # fraction of the field under cell bodies
    size_um: float  # typical cell size: sets the field's correlation length
    stretch: float  # > 1: elongated cells in streams along `angle`
    angle: float
    raggedness: float  # fine component in the field: branching, irregular outlines
    lamella: float  # how fast a body rises from its outline to its plateau (field std units)
    thickness_um: float  # optical path of a cell body's plateau
    nucleus_um: float  # extra optical path of a nucleus
    nucleus_size: float  # nucleus width / cell width
    granules_per_100um2: float
    vacuoles_per_100um2: float
    stain: float  # 0: unstained; else absorbance over the bodies


def _draw_cell_look(rng: np.random.Generator) -> _CellLook:
    stained = rng.random() < 0.3
    return _CellLook(
        coverage=rng.uniform(0.04, 0.95),
        size_um=math.exp(rng.uniform(math.log(20), math.log(150))),
        stretch=1.0 if rng.random() < 0.4 else rng.uniform(1.5, 6.0),
        angle=rng.uniform(0, np.pi),
        raggedness=rng.uniform(0.1, 0.35),
        lamella=rng.uniform(0.1, 0.5),
        thickness_um=rng.uniform(0.1, 0.45),
        nucleus_um=rng.uniform(0.05, 0.3),
        nucleus_size=rng.uniform(0.25, 0.45),
        granules_per_100um2=rng.uniform(0.3, 5.0),
        vacuoles_per_100um2=rng.uniform(0.0, 0.8),
        stain=rng.uniform(0.2, 0.8) if stained else 0.0,
    )


@dataclass(slots=True)
class _Cells:
    opd: np.ndarray  # um
    body: np.ndarray  # 0..1: how far into a cell body (0 outside)
    inside: np.ndarray  # bool
    absorbance: np.ndarray


def _cell_bodies(
    rng: np.random.Generator, shape: tuple[int, int], um: float, look: _CellLook
) -> _Cells:
    """Bodies and nuclei as level sets of random fields: where the field is above 0.5 is a cell,
    and the height above it is how deep into the cell (a thin lamella at the outline, a plateau
    and a dome inside; valleys between touching cells are the junctions of a confluent sheet)."""
    sigma_px = max(look.size_um / um / 2.35, 1.5)
    cell_px2 = 4.37 * sigma_px**2  # area of an isolated cell, the 0.5 level of one kernel
    count = int(min(-0.6 * math.log(1 - look.coverage) * shape[0] * shape[1] / cell_px2, 20000)) + 1
    widths = (sigma_px, sigma_px * look.nucleus_size)
    wide, narrow = _shot_fields(rng, shape, count, widths, look.stretch, look.angle)
    rough = _random_field(
        rng, shape, sigma_px / 2, stretch=look.stretch, angle=look.angle, detail=0.6
    )
    g = wide + look.raggedness * rough
    depth = np.maximum(g - 0.5, 0) / look.lamella
    inside = depth > 0
    body = (1 - np.exp(-depth)).astype(np.float32)
    dome = np.minimum(np.maximum(g - 0.5, 0), 1.5) / 1.5
    nucleus = _smoothstep((narrow + 0.15 * rough - 0.5) / 0.3) * inside
    opd = look.thickness_um * (0.6 * body + 0.4 * dome) + look.nucleus_um * nucleus
    absorbance = (0.01 * body).astype(np.float32)
    return _Cells(opd.astype(np.float32), body, inside, absorbance)


def _bumps(
    rng: np.random.Generator,
    cells: _Cells,
    um: float,
    per_100um2: float,
    sigma_um: float,
    strength: float,
    k: float,
) -> np.ndarray:
    """Small Gaussian phase bumps at random places inside cells, each with a peak caustic
    strength |k * curvature| up to `strength` (so a granule stays a grey dot, not a black one)."""
    shape = cells.opd.shape
    where = np.flatnonzero(cells.inside[::2, ::2].ravel())
    area_um2 = 4 * where.size * um * um
    n = min(int(per_100um2 * area_um2 / 100), 20000)
    if n == 0 or where.size == 0:
        return np.zeros(shape, np.float32)
    pick = where[rng.integers(0, where.size, n)]
    half_w = (shape[1] + 1) // 2
    ys = np.minimum(2 * (pick // half_w) + rng.integers(0, 2, n), shape[0] - 1)
    xs = np.minimum(2 * (pick % half_w) + rng.integers(0, 2, n), shape[1] - 1)
    sigma_px = max(sigma_um / um, 0.8)
    peak = strength * rng.uniform(0.3, 1.0, n) * sigma_px**2 / max(abs(k), 1e-9)
    weights = peak * 2 * np.pi * sigma_px**2 * cells.body[ys, xs]
    return ndi.gaussian_filter(_splat(shape, ys, xs, weights), sigma_px, truncate=3.0)


def _add_texture(
    rng: np.random.Generator, cells: _Cells, um: float, look: _CellLook, k: float
) -> None:
    """Granules (denser, higher index: positive bumps), vacuoles (lower index: negative), and a
    granular stain that follows the granules."""
    granules = _bumps(rng, cells, um, look.granules_per_100um2, rng.uniform(0.4, 0.9), 0.45, k)
    vacuoles = _bumps(rng, cells, um, look.vacuoles_per_100um2, rng.uniform(1.0, 2.5), 0.35, k)
    cells.opd += granules - vacuoles
    if look.stain > 0:
        grain = granules / max(float(granules.max()), 1e-9)
        stain = look.stain * cells.body * (0.8 + 0.5 * np.sqrt(grain))
        cells.absorbance += np.minimum(stain, 1.0).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Artifacts


@dataclass(slots=True)
class _Piece:
    """One artifact drawn in a patch inside the frame; (y0, x0) is the patch's top-left corner."""

    y0: int
    x0: int
    footprint: np.ndarray  # bool: the mask truth
    absorbance: np.ndarray | None = None
    opd_um: np.ndarray | None = None
    z_um: float | None = None  # None: lies in the cell plane (the frame's defocus)
    shadow: np.ndarray | None = None  # out-of-focus transmission, multiplied onto the image


@dataclass(frozen=True, slots=True)
class _Grid:
    """Pixel-centre coordinates (in frame pixels) of a patch clipped to the frame."""

    y0: int
    x0: int
    yy: np.ndarray  # (h, 1)
    xx: np.ndarray  # (1, w)

    @property
    def shape(self) -> tuple[int, int]:
        return self.yy.shape[0], self.xx.shape[1]


@dataclass(frozen=True, slots=True)
class _Field:
    """What artifact drawing needs to know about the frame."""

    shape: tuple[int, int]
    um: float
    z_um: float

    @property
    def side_um(self) -> float:
        return min(self.shape) * self.um

    def grid(self, y_lo: float, y_hi: float, x_lo: float, x_hi: float) -> _Grid | None:
        h, w = self.shape
        y0, y1 = max(math.floor(y_lo), 0), min(math.ceil(y_hi) + 1, h)
        x0, x1 = max(math.floor(x_lo), 0), min(math.ceil(x_hi) + 1, w)
        if y1 - y0 < 2 or x1 - x0 < 2:
            return None
        yy = np.arange(y0, y1, dtype=np.float32)[:, None]
        xx = np.arange(x0, x1, dtype=np.float32)[None, :]
        return _Grid(y0, x0, yy, xx)

    def around(self, cy: float, cx: float, half: float) -> _Grid | None:
        return self.grid(cy - half, cy + half, cx - half, cx + half)

    def point(self, rng: np.random.Generator) -> tuple[float, float]:
        return rng.uniform(0, self.shape[0]), rng.uniform(0, self.shape[1])


def _lognormal(
    rng: np.random.Generator, median: float, sigma: float, lo: float, hi: float
) -> float:
    return float(np.clip(median * math.exp(sigma * rng.standard_normal()), lo, max(lo, hi)))


def _outline(rng: np.random.Generator, corners: int, roughness: float):
    """A random star-shaped outline: relative radius as a function of angle, from `corners`
    random vertices (angular fragments) plus low harmonics (lumpy ones)."""
    angles = np.sort(rng.uniform(0, 2 * np.pi, corners))
    radii = rng.uniform(1 - roughness, 1.0, corners)
    orders = np.arange(2, 6)
    amps = roughness * 0.25 * rng.standard_normal(4) / orders
    phases = rng.uniform(0, 2 * np.pi, 4)

    def relative_radius(theta: np.ndarray) -> np.ndarray:
        r = np.interp(theta, angles, radii, period=2 * np.pi)
        for order, amp, phase in zip(orders, amps, phases, strict=True):
            r = r + amp * np.cos(order * theta + phase)
        return np.maximum(r, 0.3)

    return relative_radius


def _blob(
    grid: _Grid, cy: float, cx: float, radius: float, outline, elongation: float, angle: float
) -> np.ndarray:
    """Signed distance-like depth (px) into a star-shaped blob: > 0 inside."""
    dy, dx = grid.yy - cy, grid.xx - cx
    u = dx * math.cos(angle) + dy * math.sin(angle)
    v = (-dx * math.sin(angle) + dy * math.cos(angle)) / elongation
    r = np.sqrt(u * u + v * v)
    theta = np.mod(np.arctan2(v, u), 2 * np.pi)
    return (radius * outline(theta) - r) * (0.5 + 0.5 * elongation)


def _dust(rng: np.random.Generator, f: _Field) -> _Piece | None:
    """A small, nearly opaque speck with a soft one-pixel edge."""
    radius = max(_lognormal(rng, 7.0, 0.55, 2.5, 60.0) / 2 / f.um, 2.8)
    cy, cx = f.point(rng)
    grid = f.around(cy, cx, radius * 1.5 + 3)
    if grid is None:
        return None
    outline = _outline(rng, 7, 0.3)
    depth = _blob(grid, cy, cx, radius, outline, rng.uniform(0.6, 1.0), rng.uniform(0, np.pi))
    cover = np.clip(0.5 + depth / 1.2, 0, 1).astype(np.float32)
    opacity = math.exp(rng.uniform(math.log(1.6), math.log(4.5)))
    return _Piece(grid.y0, grid.x0, cover >= 0.5, absorbance=opacity * cover)


def _texture(rng: np.random.Generator, shape: tuple[int, int], sigma_px: float) -> np.ndarray:
    noise = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma_px)
    return noise / max(float(noise.std()), 1e-9)


def _debris(rng: np.random.Generator, f: _Field) -> _Piece | None:
    """An irregular, angular fragment: opaque with a mottled inside; some are refractile too."""
    area_um2 = _lognormal(rng, 700.0, 0.9, 60.0, 0.15 * f.side_um**2)
    radius = max(math.sqrt(area_um2 / math.pi) / f.um, 3.0)
    elongation = rng.uniform(0.35, 1.0)
    cy, cx = f.point(rng)
    grid = f.around(cy, cx, radius * 1.3 / math.sqrt(elongation) + 3)
    if grid is None:
        return None
    outline = _outline(rng, int(rng.integers(5, 12)), rng.uniform(0.25, 0.55))
    depth = _blob(grid, cy, cx, radius, outline, elongation, rng.uniform(0, np.pi))
    cover = np.clip(0.5 + depth / 1.5, 0, 1).astype(np.float32)
    mottle = np.clip(0.7 + 0.3 * _texture(rng, grid.shape, max(radius / 6, 1.0)), 0.2, 1.5)
    opacity = rng.uniform(0.5, 2.5)
    opd = None
    if rng.random() < 0.5:
        opd = (rng.uniform(0.2, 1.0) * _smoothstep(depth / max(radius * 0.3, 2))).astype(np.float32)
    return _Piece(grid.y0, grid.x0, cover >= 0.5, absorbance=opacity * cover * mottle, opd_um=opd)


def _path(rng: np.random.Generator, f: _Field, length_px: float, wiggle: float) -> np.ndarray:
    """Points every half pixel along a gently curving path (a fibre), shape (n, 2) as (y, x)."""
    n = max(int(length_px / 0.5), 8)
    wander = np.cumsum(rng.normal(0, wiggle, n))  # a random walk of the heading...
    bend = rng.normal(0, wiggle * 0.3) * np.arange(n)  # ...on top of a steady curl
    heading = rng.uniform(0, 2 * np.pi) + ndi.gaussian_filter1d(wander + bend, 20)
    steps = 0.5 * np.stack([np.sin(heading), np.cos(heading)], axis=1)
    start = np.array(f.point(rng)) - steps.sum(axis=0) * rng.uniform(0, 1)
    return start + np.cumsum(steps, axis=0)


def _tube(grid: _Grid, points: np.ndarray, sigma_px: float) -> np.ndarray:
    """A tube of 0..1 profile around dense path points: splat, blur, normalise by the peak a
    straight line of that point density would give."""
    h, w = grid.shape
    iy = np.rint(points[:, 0] - grid.y0).astype(np.int64)
    ix = np.rint(points[:, 1] - grid.x0).astype(np.int64)
    ok = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
    density = np.bincount(iy[ok] * w + ix[ok], minlength=h * w).reshape(h, w).astype(np.float32)
    line_peak = 2.0 / (math.sqrt(2 * np.pi) * sigma_px)  # 2 points per pixel of length
    return np.minimum(ndi.gaussian_filter(density, sigma_px, truncate=3.0) / line_peak, 1.0)


def _fibre(rng: np.random.Generator, f: _Field) -> _Piece | None:
    """A long, thin, curving opaque thread (lint, hair); some are translucent and refract."""
    width_px = max(_lognormal(rng, 6.0, 0.6, 2.0, 45.0) / f.um, 2.0)
    length_px = _lognormal(rng, 250.0, 0.8, 40.0, 2.5 * f.side_um) / f.um
    points = _path(rng, f, length_px, wiggle=rng.uniform(0.002, 0.03))
    sigma = width_px / 2.35  # the half-maximum width of the blurred line is the fibre width
    lo, hi = points.min(axis=0) - 3 * sigma - 2, points.max(axis=0) + 3 * sigma + 2
    grid = f.grid(lo[0], hi[0], lo[1], hi[1])
    if grid is None:
        return None
    profile = _tube(grid, points, sigma)
    opacity = rng.uniform(0.4, 2.2)
    opd = rng.uniform(0.2, 1.2) * profile if rng.random() < 0.4 else None
    absorbance = opacity * np.sqrt(profile)  # a round cross-section
    return _Piece(grid.y0, grid.x0, profile >= 0.5, absorbance=absorbance, opd_um=opd)


def _bubble(rng: np.random.Generator, f: _Field) -> _Piece | None:
    """An air bubble: a lens of strongly negative optical path. Its steep meniscus bends rays out
    of the aperture (thick dark rim); its centre focuses light at its own defocus (bright)."""
    radius_um = _lognormal(rng, 30.0, 0.7, 8.0, 0.45 * f.side_um)
    radius = max(radius_um / f.um, 4.0)
    cy, cx = f.point(rng)
    grid = f.around(cy, cx, radius + 3)
    if grid is None:
        return None
    rho2 = ((grid.yy - cy) ** 2 + (grid.xx - cx) ** 2) / radius**2
    thickness_um = min(2 * radius_um, rng.uniform(30.0, 150.0))  # flattened under the coverslip
    depth_um = 0.33 * thickness_um  # air (n = 1) in medium (n = 1.33)
    opd = (-depth_um * np.sqrt(np.clip(1 - rho2, 0, 1))).astype(np.float32)
    centre_curvature = depth_um / radius_um**2  # 1/um, positive: a diverging lens of air
    z = -rng.uniform(0.3, 0.9) / centre_curvature  # where its virtual focus makes a bright centre
    return _Piece(grid.y0, grid.x0, rho2 <= 1.0, absorbance=0.02 * (rho2 <= 1), opd_um=opd, z_um=z)


def _clump(rng: np.random.Generator, f: _Field) -> _Piece | None:
    """A heap of detached, rounded cells: many high-phase, absorbing domes; those nearer the
    middle sit higher. Composited by maximum height (the top cell is what light sees)."""
    area_um2 = _lognormal(rng, 2500.0, 1.1, 300.0, 0.49 * f.side_um**2)
    cell_um = rng.uniform(4.0, 9.0)
    cell_um = max(cell_um, math.sqrt(area_um2 / (math.pi * 1200)))  # at most ~1500 cells
    count = max(int(1.6 * area_um2 / (math.pi * cell_um**2)), 3)
    heap_px = math.sqrt(area_um2 / math.pi) / f.um
    cell_px = max(cell_um / f.um, 2.5)
    cy, cx = f.point(rng)
    grid = f.around(cy, cx, 1.4 * heap_px + 2 * cell_px + 3)
    if grid is None:
        return None
    outline = _outline(rng, 6, 0.35)
    theta = rng.uniform(0, 2 * np.pi, count)
    reach = heap_px * np.sqrt(rng.uniform(0, 1, count)) * outline(theta)
    ys, xs = cy + reach * np.sin(theta), cx + reach * np.cos(theta)
    lift = rng.uniform(0.3, 2.0) * (1 - (reach / (1.4 * heap_px)) ** 2)
    opd = np.zeros(grid.shape, np.float32)
    absorbance = np.zeros(grid.shape, np.float32)
    footprint = np.zeros(grid.shape, bool)
    tall, dark = rng.uniform(0.4, 1.2), rng.uniform(0.15, 0.6)
    for y, x, up in zip(ys, xs, lift, strict=True):
        r = cell_px * rng.uniform(0.75, 1.25)
        top = up + tall * rng.uniform(0.7, 1.3)
        _stamp_cell(grid, opd, absorbance, footprint, y, x, r, top, dark)
    footprint = ndi.binary_fill_holes(ndi.binary_closing(footprint, iterations=2))
    return _Piece(grid.y0, grid.x0, footprint, absorbance=absorbance, opd_um=opd)


def _stamp_cell(
    grid: _Grid,
    opd: np.ndarray,
    absorbance: np.ndarray,
    footprint: np.ndarray,
    y: float,
    x: float,
    r: float,
    top_um: float,
    dark: float,
) -> None:
    """One rounded cell (a dome) into the heap's patch."""
    y0, y1 = max(int(y - r - grid.y0), 0), min(int(y + r - grid.y0) + 2, opd.shape[0])
    x0, x1 = max(int(x - r - grid.x0), 0), min(int(x + r - grid.x0) + 2, opd.shape[1])
    if y0 >= y1 or x0 >= x1:
        return
    dy = grid.yy[y0:y1] - y
    dx = grid.xx[:, x0:x1] - x
    dome = np.sqrt(np.clip(1 - (dy * dy + dx * dx) / (r * r), 0, 1))
    where = (slice(y0, y1), slice(x0, x1))
    np.maximum(opd[where], top_um * dome, out=opd[where])
    absorbance[where] += dark * dome
    footprint[where] |= dome > 0


def _crystal(
    grid: _Grid, cy: float, cx: float, size_px: float, rng: np.random.Generator
) -> np.ndarray:
    """Depth (px) into a convex polygon: the distance to its nearest edge (< 0 outside)."""
    sides = int(rng.choice([4, 4, 5, 6, 6]))
    turn = rng.uniform(0, 2 * np.pi)
    aspect = rng.uniform(1.0, 3.0)
    corners = turn + np.arange(sides) * 2 * np.pi / sides + rng.uniform(-0.15, 0.15, sides)
    vy = size_px * np.sin(corners) / aspect
    vx = size_px * np.cos(corners)
    c, s = math.cos(turn), math.sin(turn)
    py, px = cy + vx * s + vy * c, cx + vx * c - vy * s
    area2 = float(np.sum(px * np.roll(py, -1) - np.roll(px, -1) * py))
    orient = 1.0 if area2 > 0 else -1.0  # so that the inside is on the positive side of each edge
    depth = np.full(grid.shape, np.inf, np.float32)
    for i in range(sides):
        ey, ex = py[(i + 1) % sides] - py[i], px[(i + 1) % sides] - px[i]
        norm = math.hypot(ey, ex) or 1.0
        signed = orient * (ex * (grid.yy - py[i]) - ey * (grid.xx - px[i])) / norm
        depth = np.minimum(depth, signed)
    return depth


def _needles(
    grid: _Grid, cy: float, cx: float, size_px: float, um: float, rng: np.random.Generator
) -> np.ndarray:
    """A bundle of thin straight needles radiating from one point: 0..1 profile."""
    count = int(rng.integers(8, 40))
    spread = rng.uniform(0.4, 2 * np.pi)
    base = rng.uniform(0, 2 * np.pi)
    half_w = max(rng.uniform(0.4, 1.2) / um, 0.9)
    profile = np.zeros(grid.shape, np.float32)
    for angle in base + rng.uniform(-spread / 2, spread / 2, count):
        length = size_px * rng.uniform(0.4, 1.0)
        uy, ux = math.sin(angle), math.cos(angle)
        along = np.clip((grid.yy - cy) * uy + (grid.xx - cx) * ux, 0, length)
        dist = np.hypot(grid.yy - cy - along * uy, grid.xx - cx - along * ux)
        np.maximum(profile, np.clip(1.5 - dist / half_w, 0, 1), out=profile)
    return profile


def _precipitate(rng: np.random.Generator, f: _Field) -> _Piece | None:
    """Crystals: a cluster of faceted polygons with dark cores (each facet shaded differently,
    a pyramid of high optical path: caustic lines on the ridges), or a bundle of needles."""
    size_px = max(_lognormal(rng, 10.0, 0.5, 3.0, 60.0) / f.um, 4.0)
    cy, cx = f.point(rng)
    spread = size_px * rng.uniform(0.0, 2.5)
    grid = f.around(cy, cx, spread + size_px * 1.6 + 3)
    if grid is None:
        return None
    if rng.random() < 0.3:
        profile = _needles(grid, cy, cx, size_px * 2, f.um, rng)
        return _Piece(grid.y0, grid.x0, profile >= 0.5, absorbance=rng.uniform(0.8, 2.0) * profile,
                      opd_um=rng.uniform(0.1, 0.5) * profile)
    opd = np.zeros(grid.shape, np.float32)
    absorbance = np.zeros(grid.shape, np.float32)
    for _ in range(int(rng.integers(1, 12)) if spread > 0 else 1):
        y, x = cy + rng.normal(0, spread / 2 + 1e-6), cx + rng.normal(0, spread / 2 + 1e-6)
        size = size_px * rng.uniform(0.4, 1.0)
        depth = _crystal(grid, y, x, size, rng)
        inner = np.clip(depth / (0.5 * size), 0, 1)
        cover = np.clip(0.5 + depth, 0, 1)
        core = rng.uniform(0.8, 2.5) * inner**1.5 + rng.uniform(0.15, 0.6) * cover
        np.maximum(absorbance, core, out=absorbance)
        np.maximum(opd, rng.uniform(0.3, 1.2) * inner, out=opd)
    return _Piece(grid.y0, grid.x0, absorbance >= 0.1, absorbance=absorbance, opd_um=opd)


def _dirt(rng: np.random.Generator, f: _Field) -> _Piece | None:
    """Dirt far out of focus (on the coverslip or condenser): a broad, soft, faint shadow."""
    radius = _lognormal(rng, 60.0, 0.6, 15.0, 0.35 * f.side_um) / f.um
    radius = max(radius, 5.0)
    soft = radius * rng.uniform(0.25, 0.6)
    cy, cx = f.point(rng)
    grid = f.around(cy, cx, radius * 1.3 + soft + 3)
    if grid is None:
        return None
    outline = _outline(rng, 6, 0.25)
    depth = _blob(grid, cy, cx, radius, outline, rng.uniform(0.6, 1.0), rng.uniform(0, np.pi))
    profile = _smoothstep(0.5 + depth / (2 * soft))  # 0.5 on the outline, 1 well inside
    contrast = rng.uniform(0.03, 0.15)
    shadow = (1 - contrast * profile).astype(np.float32)
    return _Piece(grid.y0, grid.x0, profile >= 0.5, shadow=shadow)


def _scratch(rng: np.random.Generator, f: _Field) -> _Piece | None:
    """A straight groove in the dish: a thin line of negative optical path (a strong caustic
    line, bright or dark by focus) with a little absorption."""
    length = _lognormal(rng, 0.8, 0.5, 0.3, 1.5) * max(f.shape)
    width_px = max(rng.uniform(1.0, 4.0) / f.um, 1.6)
    angle = rng.uniform(0, np.pi)
    cy, cx = f.point(rng)
    uy, ux = math.sin(angle), math.cos(angle)
    ey, ex = cy + uy * length / 2, cx + ux * length / 2
    sy, sx = cy - uy * length / 2, cx - ux * length / 2
    pad = 2 * width_px + 3
    grid = f.grid(min(sy, ey) - pad, max(sy, ey) + pad, min(sx, ex) - pad, max(sx, ex) + pad)
    if grid is None:
        return None
    along = (grid.yy - sy) * uy + (grid.xx - sx) * ux
    across = np.abs(-(grid.yy - sy) * ux + (grid.xx - sx) * uy)
    ends = np.clip(np.minimum(along, length - along) / 2, 0, 1)
    sigma = width_px / 2.35
    profile = (np.exp(-0.5 * (across / sigma) ** 2) * ends).astype(np.float32)
    strength = rng.uniform(0.4, 1.3)  # peak |z * curvature| of the groove
    groove_um = strength * (sigma * f.um) ** 2 / abs(f.z_um)
    footprint = (across <= max(width_px / 2, 1.0)) & (ends > 0)
    return _Piece(grid.y0, grid.x0, footprint, absorbance=rng.uniform(0.03, 0.2) * profile,
                  opd_um=-groove_um * profile)


DRAW = {
    "dust": _dust,
    "debris": _debris,
    "fibre": _fibre,
    "bubble": _bubble,
    "clump": _clump,
    "precipitate": _precipitate,
    "dirt": _dirt,
    "scratch": _scratch,
}
assert set(DRAW) == set(ARTIFACT_KINDS)


@dataclass(slots=True)
class _Scene:
    """Everything the artifacts are drawn into."""

    frame: _Field
    rays: _Rays
    absorbance: np.ndarray
    shadow: np.ndarray
    mask: np.ndarray
    kinds: list[str] = field(default_factory=list)

    def draw(self, piece: _Piece, kind: str) -> bool:
        if int(piece.footprint.sum()) < MIN_FOOTPRINT_PX:
            return False
        h, w = piece.footprint.shape
        where = (slice(piece.y0, piece.y0 + h), slice(piece.x0, piece.x0 + w))
        self.kinds.append(kind)
        self.mask[where][piece.footprint] = len(self.kinds)
        if piece.absorbance is not None:
            self.absorbance[where] += piece.absorbance
        if piece.opd_um is not None:
            z = self.frame.z_um if piece.z_um is None else piece.z_um
            self.rays.add_phase(piece.opd_um, z, self.frame.um, piece.y0, piece.x0)
        if piece.shadow is not None:
            self.shadow[where] *= piece.shadow
        return True


def _draw_one(
    rng: np.random.Generator, scene: _Scene, kinds: tuple[str, ...], tries: int = 8
) -> bool:
    kind = kinds[int(rng.integers(len(kinds)))]
    for _ in range(tries):
        piece = DRAW[kind](rng, scene.frame)
        if piece is not None and scene.draw(piece, kind):
            return True
    return False


def _draw_artifacts(rng: np.random.Generator, scene: _Scene, kinds: tuple[str, ...]) -> None:
    """1..5 artifacts; if none survives in the mask, keep drawing (the last one drawn is never
    covered, so one success is enough)."""
    count = 1 + int(rng.choice(len(COUNT_WEIGHTS), p=COUNT_WEIGHTS))
    for _ in range(count):
        _draw_one(rng, scene, kinds)
    for _ in range(30):
        if _surviving(scene.mask, len(scene.kinds)).any():
            return
        _draw_one(rng, scene, kinds)


def _surviving(mask: np.ndarray, n: int) -> np.ndarray:
    counts = np.bincount(mask.ravel(), minlength=n + 1)
    keep = counts >= MIN_FOOTPRINT_PX
    keep[0] = False
    return keep


def _measure(mask: np.ndarray, kinds: list[str]) -> tuple[np.ndarray, tuple[SynthObject, ...]]:
    """Drop labels left under MIN_FOOTPRINT_PX, relabel 1..n in drawing order, measure objects."""
    keep = _surviving(mask, len(kinds))
    lut = np.zeros(len(kinds) + 1, np.uint16)
    lut[keep] = np.arange(1, int(keep.sum()) + 1)
    mask = lut[mask]
    ys, xs = np.nonzero(mask)
    labels = mask[ys, xs]
    n = int(keep.sum())
    area = np.bincount(labels, minlength=n + 1)
    sum_y = np.bincount(labels, ys.astype(np.float64), minlength=n + 1)
    sum_x = np.bincount(labels, xs.astype(np.float64), minlength=n + 1)
    objects = []
    for old, new in enumerate(lut):
        if new == 0:
            continue
        a = int(area[new])
        objects.append(SynthObject(kinds[old - 1], int(new), a, math.sqrt(4 * a / math.pi),
                                   float(sum_y[new] / a), float(sum_x[new] / a)))
    return mask, tuple(objects)


# --------------------------------------------------------------------------------------------
# Illumination and camera


def _illumination(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Uneven light: tilt, vignetting, a faint low-frequency ripple, sometimes a well's edge."""
    h, w = shape
    yy = np.linspace(-1, 1, h, dtype=np.float32)[:, None]
    xx = np.linspace(-1, 1, w, dtype=np.float32)[None, :]
    oy, ox = rng.uniform(-0.5, 0.5, 2)
    light = 1 + rng.uniform(-0.08, 0.08) * yy + rng.uniform(-0.08, 0.08) * xx
    light = light - rng.uniform(0.0, 0.2) * ((yy - oy) ** 2 + (xx - ox) ** 2) / 2
    small = (max(h // 16, 4), max(w // 16, 4))
    ripple = _random_field(rng, small, max(small) / 6)
    ripple = ndi.zoom(ripple, (h / small[0], w / small[1]), order=1)[:h, :w]
    light = light * (1 + rng.uniform(0.0, 0.04) * ripple)
    if rng.random() < 0.15:
        light = light * _well_edge(rng, yy, xx)
    return light.astype(np.float32)


def _well_edge(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """The meniscus near a well's wall: light falls off across a curved edge."""
    direction = rng.uniform(0, 2 * np.pi)
    radius = rng.uniform(2.0, 6.0)
    centre_y = -math.sin(direction) * (radius - rng.uniform(0.3, 1.2))
    centre_x = -math.cos(direction) * (radius - rng.uniform(0.3, 1.2))
    r = np.sqrt((yy - centre_y) ** 2 + (xx - centre_x) ** 2)
    fall = _smoothstep((r - radius) / rng.uniform(0.2, 0.8) + 0.5)
    return 1 - rng.uniform(0.3, 0.85) * fall


@dataclass(frozen=True, slots=True)
class _Camera:
    full_scale: int  # 65535 (16-bit) or 4095 (12-bit)
    offset_dn: float
    gain_dn_per_e: float
    background_e: float  # electrons per pixel of the unobstructed light
    read_e: float
    prnu: float  # pixel gain non-uniformity
    dsnu_dn: float  # pixel offset non-uniformity
    column_dn: float  # column offsets of a CMOS readout
    gamma: float  # for uint8 output


def _draw_camera(rng: np.random.Generator) -> _Camera:
    full_scale = 65535 if rng.random() < 0.6 else 4095
    offset = full_scale * rng.uniform(0.0015, 0.025)
    background = math.exp(rng.uniform(math.log(800), math.log(25000)))
    level = rng.uniform(0.2, 0.55) * full_scale  # where the unobstructed background sits
    return _Camera(
        full_scale=full_scale,
        offset_dn=offset,
        gain_dn_per_e=(level - offset) / background,
        background_e=background,
        read_e=rng.uniform(1.0, 2.5),
        prnu=rng.uniform(0.002, 0.012),
        dsnu_dn=full_scale * rng.uniform(0.0, 0.0006),
        column_dn=full_scale * rng.uniform(0.0, 0.0008),
        gamma=rng.uniform(1.0, 2.2),
    )


def _expose(rng: np.random.Generator, light: np.ndarray, camera: _Camera, dtype: str) -> np.ndarray:
    h, w = light.shape
    prnu = 1 + camera.prnu * rng.standard_normal((h, w)).astype(np.float32)
    electrons = rng.poisson(np.maximum(light * prnu * camera.background_e, 0)).astype(np.float32)
    electrons += camera.read_e * rng.standard_normal((h, w)).astype(np.float32)
    dn = camera.offset_dn + camera.gain_dn_per_e * electrons
    dn += camera.dsnu_dn * rng.standard_normal((h, w)).astype(np.float32)
    dn += camera.column_dn * rng.standard_normal((1, w)).astype(np.float32)
    dn = np.clip(np.rint(dn), 0, camera.full_scale)
    if dtype == "uint16":
        return dn.astype(np.uint16)
    level = np.clip((dn - camera.offset_dn) / (camera.full_scale - camera.offset_dn), 0, 1)
    return np.rint(255 * level ** (1 / camera.gamma)).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# A frame


def _check_single_plane(options: SynthOptions) -> None:
    if options.channels > 1 or options.planes > 1:
        raise ValueError(
            "the caustic renderer draws single-plane, single-channel frames; "
            f"got channels={options.channels}, planes={options.planes}"
        )


def _pixel_size(rng: np.random.Generator, options: SynthOptions) -> float:
    if options.pixel_size_um is not None:
        return float(options.pixel_size_um)
    lo, hi = PIXEL_SIZE_RANGE_UM
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def make_frame(rng: np.random.Generator, options: SynthOptions = DEFAULT_OPTIONS) -> SynthFrame:
    """One brightfield frame with its artifact mask, deterministic given the generator's state."""
    _check_single_plane(options)
    um = _pixel_size(rng, options)
    shape = (options.height, options.width)
    look = _draw_cell_look(rng)
    cells = _cell_bodies(rng, shape, um, look)
    optics = _draw_optics(rng, _curvature_scale(cells.opd, cells.inside), um)
    _add_texture(rng, cells, um, look, optics.z_um / um**2)
    _limit_slope(cells.opd, um, optics.aperture_rad)
    rays = _Rays.empty(shape)
    rays.add_phase(ndi.gaussian_filter(cells.opd, 1.0, truncate=3.0), optics.z_um, um)
    scene = _Scene(_Field(shape, um, optics.z_um), rays, cells.absorbance,
                   np.ones(shape, np.float32), np.zeros(shape, np.uint16))
    if rng.random() < options.artifact_probability:
        _draw_artifacts(rng, scene, tuple(options.kinds))
    intensity = _image_intensity(rays, scene.absorbance, optics, um) * scene.shadow
    image = _expose(rng, intensity * _illumination(rng, shape), _draw_camera(rng), options.dtype)
    mask, objects = _measure(scene.mask, scene.kinds)
    return SynthFrame(image, mask, "artifact" if objects else "clean", objects, um)
