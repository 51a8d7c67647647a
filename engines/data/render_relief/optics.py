"""Optics and camera: oblique-light relief, Beer-Lambert absorption, Kohler field, EMCCD/CCD."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from engines.data.render_relief.cells import Stain
from engines.data.render_relief.specimen import F32, Specimen, loguniform


def illumination(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Kohler field: gentle radial falloff, slow unevenness, sometimes a well-edge shadow band."""
    H, W = shape
    yn = (np.arange(H, dtype=F32)[:, None] - H / 2) / F32(max(H, W) / 2)
    xn = (np.arange(W, dtype=F32)[None, :] - W / 2) / F32(max(H, W) / 2)
    oy, ox = rng.uniform(-0.3, 0.3, 2)
    field_ = 1 - F32(rng.uniform(0.03, 0.2)) * ((yn - F32(oy)) ** 2 + (xn - F32(ox)) ** 2) / 2
    coarse = rng.normal(0, rng.uniform(0.005, 0.02), (4, 4))
    ripple = ndi.zoom(coarse, (H / 4, W / 4), order=1, grid_mode=True, mode="nearest")[:H, :W]
    field_ = field_ * (1 + ripple)
    if rng.random() < 0.2:  # the meniscus at a well wall throws a dark band over one side
        phi = rng.uniform(0, 2 * math.pi)
        along = xn * F32(math.cos(phi)) + yn * F32(math.sin(phi))
        across = yn * F32(math.cos(phi)) - xn * F32(math.sin(phi))
        d = along + F32(rng.uniform(0, 0.3)) * across**2
        edge, soft = rng.uniform(0.4, 0.95), rng.uniform(0.03, 0.12)
        band = 1 + np.exp(-(d - F32(edge)) / F32(soft))
        field_ = field_ * (1 - F32(rng.uniform(0.4, 0.85)) / band)
    return field_.astype(F32)


@dataclass(frozen=True, slots=True)
class Optics:
    azimuth: float  # direction of the oblique illumination, rad
    relief_gain: float  # k in 1 + k * dOPD/ds
    dn_cytoplasm: float
    dn_nucleus: float  # extra index of the nucleus over the cytoplasm
    resolution_px: float  # sigma of the derivative kernel (optical resolution)
    defocus_px: float  # sigma of the extra defocus blur


def draw_optics(rng: np.random.Generator, um: float) -> Optics:
    return Optics(
        azimuth=rng.uniform(0, 2 * math.pi),
        relief_gain=loguniform(rng, 3, 10),
        dn_cytoplasm=rng.uniform(0.015, 0.04),
        dn_nucleus=rng.uniform(0.005, 0.02),
        resolution_px=max(0.7, 0.35 / um),
        defocus_px=rng.uniform(0.3, 1.2),
    )


def transmitted_light(spec: Specimen, optics: Optics, stain: Stain) -> np.ndarray:
    """Relief from the directional derivative of optical path, times Beer-Lambert absorption."""
    opd = (
        spec.opd
        + F32(optics.dn_cytoplasm) * spec.thickness
        + F32(optics.dn_nucleus) * spec.nucleus
    )
    d_dx = ndi.gaussian_filter(opd, optics.resolution_px, order=(0, 1))
    d_dy = ndi.gaussian_filter(opd, optics.resolution_px, order=(1, 0))
    along = F32(math.cos(optics.azimuth)) * d_dx + F32(math.sin(optics.azimuth)) * d_dy
    slope = along / F32(spec.um)
    saturation = F32(0.85)  # steep edges (crystals, bubble rims) cannot go below black
    relief = 1 + saturation * np.tanh(F32(optics.relief_gain) * slope / saturation)
    cytoplasm = spec.thickness - spec.nucleus
    absorbance = (
        spec.absorbance
        + F32(stain.cytoplasm) * cytoplasm
        + F32(stain.nucleus) * spec.nucleus
    )
    light = relief * np.exp(-absorbance)
    light = ndi.gaussian_filter(light, optics.defocus_px)
    return light * np.exp(-spec.haze)


def expose(rng: np.random.Generator, light: np.ndarray, dtype: str) -> np.ndarray:
    """EMCCD or CCD: photon noise at a modest level, biased, drifting rows, 12/16-bit ADC."""
    full = 4095 if rng.random() < 0.5 else 65535
    bias = rng.uniform(0.02, 0.06) * full
    photons = loguniform(rng, 400, 4000)  # expected photoelectrons at the background
    dn_per_electron = (rng.uniform(0.35, 0.65) * full - bias) / photons
    expected = np.clip(light, 0, None) * F32(photons)
    if rng.random() < 0.4:  # EMCCD: multiplication doubles the variance (excess noise factor 2)
        electrons = rng.gamma(expected / 2 + F32(1e-3), 2.0).astype(F32)
    else:
        electrons = rng.poisson(expected).astype(F32)
        electrons = electrons + rng.normal(0, rng.uniform(2, 10), light.shape).astype(F32)
    drift = np.cumsum(rng.normal(0, 1, light.shape[0]))
    drift = ndi.gaussian_filter1d(drift, light.shape[0] / 20 + 1)
    centred = drift - drift.mean()
    drift = centred / (np.abs(centred).max() + 1e-9) * rng.uniform(0.002, 0.02) * bias
    dn = electrons * F32(dn_per_electron) + F32(bias) + drift[:, None].astype(F32)
    counts = np.clip(np.rint(dn), 0, full)
    if dtype == "uint16":
        return counts.astype(np.uint16)
    level = (counts - F32(bias)) / F32(full - bias)
    if rng.random() < 0.5:
        level = np.clip(level, 0, 1) ** F32(1 / 2.2)
    return np.clip(np.rint(level * 255), 0, 255).astype(np.uint8)
