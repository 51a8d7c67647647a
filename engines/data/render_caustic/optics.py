"""Ray optics, illumination and camera: where bent rays land and how bright, then the sensor."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from engines.data.render_caustic.fields import random_field, smoothstep

FOLD_SOFTNESS = 0.35  # at a fold (det -> 0) the intensity saturates near 1 / FOLD_SOFTNESS
SHADOW_FLOOR = 0.4  # spreading rays dim the light at most this far (keeps phase objects grey)
MAX_SHIFT_PX = 3.0  # cap on the ray displacement, so the mask stays on what it labels


@dataclass(slots=True)
class Rays:
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
    def empty(cls, shape: tuple[int, int]) -> Rays:
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
class Optics:
    z_um: float  # defocus of the cell plane; the sign is over- or under-focus
    aperture_rad: float  # rays bent further than this miss the objective
    condenser_na: float  # finite illumination aperture: blurs caustics by z * NA


def curvature_scale(opd: np.ndarray, inside: np.ndarray) -> float:
    """A high percentile of the largest Hessian eigenvalue magnitude over the cells (um/px^2)."""
    gy, gx = np.gradient(opd[::2, ::2])  # half resolution is plenty for a scale estimate
    gyy, gyx = np.gradient(gy)
    gxx = np.gradient(gx, axis=1)
    largest = np.abs(gyy + gxx) / 2 + np.sqrt(((gyy - gxx) / 2) ** 2 + gyx**2)
    values = largest[inside[::2, ::2]]
    if values.size < 50:
        return 0.0
    return float(np.percentile(values, 99.0)) / 4.0  # /4: derivatives were taken on a 2x grid


def draw_optics(rng: np.random.Generator, cell_scale: float, um: float) -> Optics:
    """Choose the defocus so the strongest cell curvature gives a chosen caustic strength, so the
    cells are visible but (mostly) do not fold, whatever their size and the pixel size."""
    strength = rng.uniform(0.25, 0.6)
    k = strength / max(cell_scale, 1e-9)
    z = float(np.clip(k * um**2, 2.0, 60.0)) * (1 if rng.random() < 0.5 else -1)
    aperture = rng.uniform(0.15, 0.4)
    return Optics(z_um=z, aperture_rad=aperture, condenser_na=rng.uniform(0.02, 0.08))


def limit_slope(opd: np.ndarray, um: float, aperture_rad: float) -> None:
    """Scale a clean scene's optical path down (in place) until its steepest cells bend rays by
    well under the aperture: only artifacts (bubbles, heaps) should lose light that way."""
    gy, gx = np.gradient(opd[::2, ::2])
    steep = float(np.percentile(np.hypot(gy, gx), 99.95)) / (2 * um)
    limit = 0.4 * aperture_rad
    if steep > limit:
        opd *= limit / steep


def image_intensity(rays: Rays, absorbance: np.ndarray, optics: Optics, um: float) -> np.ndarray:
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


def illumination(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Uneven light: tilt, vignetting, a faint low-frequency ripple, sometimes a well's edge."""
    h, w = shape
    yy = np.linspace(-1, 1, h, dtype=np.float32)[:, None]
    xx = np.linspace(-1, 1, w, dtype=np.float32)[None, :]
    oy, ox = rng.uniform(-0.5, 0.5, 2)
    light = 1 + rng.uniform(-0.08, 0.08) * yy + rng.uniform(-0.08, 0.08) * xx
    light = light - rng.uniform(0.0, 0.2) * ((yy - oy) ** 2 + (xx - ox) ** 2) / 2
    small = (max(h // 16, 4), max(w // 16, 4))
    ripple = random_field(rng, small, max(small) / 6)
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
    fall = smoothstep((r - radius) / rng.uniform(0.2, 0.8) + 0.5)
    return 1 - rng.uniform(0.3, 0.85) * fall


@dataclass(frozen=True, slots=True)
class Camera:
    full_scale: int  # 65535 (16-bit) or 4095 (12-bit)
    offset_dn: float
    gain_dn_per_e: float
    background_e: float  # electrons per pixel of the unobstructed light
    read_e: float
    prnu: float  # pixel gain non-uniformity
    dsnu_dn: float  # pixel offset non-uniformity
    column_dn: float  # column offsets of a CMOS readout
    gamma: float  # for uint8 output


def draw_camera(rng: np.random.Generator) -> Camera:
    full_scale = 65535 if rng.random() < 0.6 else 4095
    offset = full_scale * rng.uniform(0.0015, 0.025)
    background = math.exp(rng.uniform(math.log(800), math.log(25000)))
    level = rng.uniform(0.2, 0.55) * full_scale  # where the unobstructed background sits
    return Camera(
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


def expose(rng: np.random.Generator, light: np.ndarray, camera: Camera, dtype: str) -> np.ndarray:
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
