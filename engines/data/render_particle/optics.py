"""From layers of particles to light on the camera, and the camera itself."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from scipy.signal import fftconvolve

from engines.data.render_particle.clouds import PARTICLE_SIGMA_PX, Cloud, splat

MIN_LIGHT = 0.02  # nothing in brightfield is perfectly black: stray light


@dataclass(frozen=True, slots=True)
class Optics:
    z_cell_um: float  # defocus of the cell plane (either sign)
    z_bottom_um: float  # the plate's floor, a little below the cells
    z_float_um: float  # floating things, well above the cells
    shadow_angle: float  # condenser half-angle: an out-of-focus shadow spreads this wide
    ring_angle: float  # forward-scattered light kept by the objective lands at this angle
    kept: float  # fraction of scattered light the objective keeps
    psf_sigma_px: float


def draw_optics(rng: np.random.Generator, um: float) -> Optics:
    z = float(rng.choice((-1, 1)) * rng.uniform(0.5, 5.0))
    shadow = float(rng.uniform(0.03, 0.25))
    return Optics(
        z_cell_um=z, z_bottom_um=z - float(rng.uniform(1, 4)),
        z_float_um=z + float(rng.uniform(3, 15)), shadow_angle=shadow,
        ring_angle=shadow * float(rng.uniform(1.3, 3.0)), kept=float(rng.uniform(0.5, 0.95)),
        psf_sigma_px=float(rng.uniform(0.25, 0.6)) / um,
    )


def _disc(radius_px: float) -> np.ndarray:
    r = math.ceil(radius_px) + 1
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    # Anti-aliased edge: a pixel's share inside the disc.
    k = np.clip(radius_px + 0.5 - np.hypot(yy, xx), 0, 1).astype(np.float32)
    return k / k.sum()


def _ring(radius_px: float, width_px: float) -> np.ndarray:
    r = math.ceil(radius_px + width_px) + 1
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    k = np.exp(-0.5 * ((np.hypot(yy, xx) - radius_px) / width_px) ** 2).astype(np.float32)
    return k / k.sum()


def _spread(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    if kernel.size <= 9:  # in focus: the disc is one pixel
        return image
    return fftconvolve(image, kernel, mode="same").astype(np.float32)


@dataclass(frozen=True, slots=True)
class Layer:
    cloud: Cloud
    depth: str  # "cell", "bottom" or "float"
    grain_px: float = PARTICLE_SIGMA_PX  # a particle's splatted width


def layer_light(layer: Layer, shape: tuple[int, int], z_um: float, optics: Optics,
                um: float) -> np.ndarray:
    """The light left after one layer: absorbed and lost light spread over the defocus disc;
    kept scattered light leaves the particles' shadow and lands on an annulus."""
    cloud = layer.cloud
    if len(cloud) == 0:
        return np.ones(shape, np.float32)
    absorb = splat(cloud.y, cloud.x, cloud.absorb, shape, layer.grain_px)
    scatter = splat(cloud.y, cloud.x, cloud.scatter, shape, layer.grain_px)
    disc = _disc(abs(z_um) * math.tan(optics.shadow_angle) / um)
    lost = _spread(absorb + (1 - optics.kept) * scatter, disc)
    moved = optics.kept * scatter
    q = abs(z_um) * math.tan(optics.ring_angle) / um
    # Over focus the ring is wide and soft; under focus it is narrow and bright.
    ring = _ring(q, max(1.0, q * (0.3 if z_um > 0 else 0.12)))
    return np.exp(-lost) - _spread(moved, disc) + _spread(moved, ring)


def image_light(layers: list[Layer], shape: tuple[int, int], optics: Optics,
                um: float) -> np.ndarray:
    depth = {"cell": optics.z_cell_um, "bottom": optics.z_bottom_um,
             "float": optics.z_float_um}
    light = np.ones(shape, np.float32)
    for layer in layers:
        light *= layer_light(layer, shape, depth[layer.depth], optics, um)
    light = ndi.gaussian_filter(light, optics.psf_sigma_px, truncate=3.0)
    return np.maximum(light, MIN_LIGHT)


def illumination(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Koehler falloff about an off-centre point, a tilt, sometimes a well's meniscus."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    side = float(max(h, w))
    cy, cx = rng.normal(h / 2, 0.2 * h), rng.normal(w / 2, 0.2 * w)
    falloff = rng.uniform(0.03, 0.35)
    light = 1 - falloff * ((yy - cy) ** 2 + (xx - cx) ** 2) / (side**2 / 2)
    light *= 1 + rng.uniform(-0.08, 0.08) * (yy / side - 0.5) + rng.uniform(-0.08, 0.08) * (
        xx / side - 0.5)
    if rng.random() < 0.25:  # the meniscus: darker beyond a large circle's edge
        angle = rng.uniform(0, 2 * math.pi)
        radius = side * rng.uniform(1.5, 6)
        oy, ox = h / 2 + math.sin(angle) * radius, w / 2 + math.cos(angle) * radius
        edge = radius - side * rng.uniform(0.1, 0.6)
        d = np.hypot(yy - oy, xx - ox) - edge
        light *= 1 - rng.uniform(0.15, 0.6) / (1 + np.exp(d / (0.05 * side)))
    return np.clip(light, 0.05, None).astype(np.float32)


@dataclass(frozen=True, slots=True)
class Camera:
    electrons: float  # photo-electrons at full light
    read_noise: float  # electrons
    bits: int
    fill: float  # full light as a share of the range
    offset: float  # counts
    banding: float  # counts, per row
    gamma: float  # uint8 output only


def draw_camera(rng: np.random.Generator) -> Camera:
    return Camera(electrons=float(rng.uniform(1500, 30000)),
                  read_noise=float(rng.uniform(1.5, 8)),
                  bits=int(rng.choice((12, 14, 16))), fill=float(rng.uniform(0.45, 0.85)),
                  offset=float(rng.uniform(50, 500)), banding=float(rng.uniform(0, 3)),
                  gamma=float(rng.uniform(0.6, 1.0)))


def expose(rng: np.random.Generator, light: np.ndarray, camera: Camera, dtype: str
           ) -> np.ndarray:
    electrons = rng.poisson(np.clip(light, 0, None) * camera.electrons).astype(np.float32)
    electrons += rng.normal(0, camera.read_noise, light.shape).astype(np.float32)
    signal = electrons / camera.electrons  # 1.0 = full light
    if dtype == "uint8":
        value = 255 * camera.fill * np.clip(signal, 0, None) ** camera.gamma
        return np.clip(np.rint(value), 0, 255).astype(np.uint8)
    top = 2**camera.bits - 1
    counts = camera.offset + signal * camera.fill * (top - camera.offset)
    counts += rng.normal(0, camera.banding, (light.shape[0], 1))
    hot = rng.integers(0, light.size, int(rng.integers(0, 60)))
    counts.flat[hot] = top * rng.uniform(0.6, 1.0, len(hot))
    return np.clip(np.rint(counts), 0, top).astype(np.uint16)
