"""The microscope: partially coherent defocused imaging, Köhler light, an sCMOS camera."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.fft as sfft

from engines.data.render_wave.noise import F32, TAU, log_uniform


@dataclass(frozen=True, slots=True)
class Microscope:
    um: float  # pixel size, um/px
    wavelength_um: float
    na: float  # objective
    condenser_na: float
    defocus_um: float
    tilts: int  # illumination directions summed for partial coherence
    dirt_defocus_um: float  # distance of the far (dirty) optical surface from the specimen
    dirt_blur_um: float  # how much the illumination cone smears that surface's shadow

    @property
    def cutoff_px(self) -> float:
        """Pupil radius in cycles per pixel."""
        return self.na / self.wavelength_um * self.um


def draw_microscope(rng: np.random.Generator, um: float) -> Microscope:
    # Low magnification (large pixels) comes with low NA objectives, as on real screeners.
    na = float(np.clip(0.15 / um**0.8 * rng.uniform(0.85, 1.2), 0.2, 0.45))
    condenser = na * rng.uniform(0.25, 0.7)
    defocus = rng.uniform(0.7, 4.0)
    if rng.random() < 0.12:  # the autofocus missed
        defocus = rng.uniform(5.0, 15.0)
    dirt_dz = log_uniform(rng, 100, 800)
    return Microscope(
        um=um,
        wavelength_um=rng.uniform(0.5, 0.65),
        na=na,
        condenser_na=condenser,
        defocus_um=float(defocus * rng.choice([-1.0, 1.0])),
        tilts=int(rng.integers(3, 8)),
        dirt_defocus_um=dirt_dz,
        dirt_blur_um=0.5 * dirt_dz * condenser * rng.uniform(0.5, 1.2),
    )


def lost_light(phase: np.ndarray, cutoff_px: float) -> np.ndarray:
    """Absorption where the phase slope bends light outside the objective aperture.

    A slope of g rad/px deflects light to spatial frequency g/2pi; beyond the pupil radius it
    never reaches the camera (the dark ring of a bubble, the dark rim of a rounded cell).
    """
    gy, gx = np.gradient(phase)
    slope = np.hypot(gy, gx) / (TAU * cutoff_px)
    return (6.0 * np.clip((slope - 0.85) / 0.35, 0.0, 1.0)).astype(F32)


def complex_transmission(absorption: np.ndarray, phase: np.ndarray) -> np.ndarray:
    amplitude = np.exp(-0.5 * absorption)
    t = np.empty(absorption.shape, np.complex64)
    t.real = amplitude * np.cos(phase)
    t.imag = amplitude * np.sin(phase)
    return t


def _defocus_1d(
    freq_px: np.ndarray, shift_px: float, scope: Microscope, dz_um: float
) -> np.ndarray:
    """One axis of the separable Fresnel transfer exp(i pi lambda dz f^2), f in cycles/um."""
    f_um = (freq_px + shift_px) / scope.um
    return np.exp(1j * math.pi * scope.wavelength_um * dz_um * f_um**2).astype(np.complex64)


def _tilts(rng: np.random.Generator, scope: Microscope) -> list[tuple[float, float]]:
    """Illumination directions spread evenly over the condenser disc (a sunflower pattern)."""
    radius_px = scope.condenser_na / scope.wavelength_um * scope.um
    turn = rng.uniform(0, TAU)
    out = []
    for i in range(scope.tilts):
        r = radius_px * math.sqrt((i + 0.5) / scope.tilts)
        a = turn + i * 2.399963
        out.append((r * math.sin(a), r * math.cos(a)))
    return out


def form_image(rng: np.random.Generator, t: np.ndarray, scope: Microscope) -> np.ndarray:
    """Partially coherent defocused brightfield intensity of the transmission `t` (1 = glass)."""
    h, w = t.shape
    spectrum = sfft.fft2(t, workers=1)
    fy = sfft.fftfreq(h).astype(F32)
    fx = sfft.fftfreq(w).astype(F32)
    fc = scope.cutoff_px
    edge = 1.5 / min(h, w)  # a soft pupil edge, a pixel and a half of the spectrum, against ringing
    intensity = np.zeros((h, w), F32)
    tilts = _tilts(rng, scope)
    for ky, kx in tilts:
        q = np.sqrt((fy[:, None] + ky) ** 2 + (fx[None, :] + kx) ** 2)
        pupil = np.clip((fc - q) / edge + 0.5, 0.0, 1.0).astype(F32)
        hy = _defocus_1d(fy, ky, scope, scope.defocus_um)
        hx = _defocus_1d(fx, kx, scope, scope.defocus_um)
        seen = spectrum * hy[:, None]
        seen *= hx[None, :]
        seen *= pupil
        field = sfft.ifft2(seen, workers=1, overwrite_x=True)
        intensity += field.real**2 + field.imag**2
    intensity /= F32(len(tilts))
    return intensity


def far_plane_light(absorption: np.ndarray, phase: np.ndarray, scope: Microscope) -> np.ndarray:
    """The light field after a dirty surface far from focus: coherent Fresnel rings, softened
    by the illumination cone (a Gaussian in the spectrum). Returns it on the same padded grid."""
    h, w = absorption.shape
    t = complex_transmission(absorption, phase)
    t -= 1  # propagate only what the dirt changes; the clear glass stays 1
    spectrum = sfft.fft2(t, workers=1)
    sigma_px = scope.dirt_blur_um / scope.um
    for axis, n in ((0, h), (1, w)):
        f = sfft.fftfreq(n).astype(F32)
        factor = _defocus_1d(f, 0.0, scope, scope.dirt_defocus_um)
        factor *= np.exp(-2 * math.pi**2 * sigma_px**2 * f**2).astype(F32)
        spectrum *= factor[:, None] if axis == 0 else factor[None, :]
    light = sfft.ifft2(spectrum, workers=1, overwrite_x=True)
    light += 1
    return light


def koehler_light(rng: np.random.Generator, shape: tuple[int, int], um: float) -> np.ndarray:
    """Smooth field: radial falloff and a tilt; in some frames a well edge shading one side."""
    h, w = shape
    y = ((np.arange(h, dtype=F32) - h / 2) / (max(h, w) / 2))[:, None]
    x = ((np.arange(w, dtype=F32) - w / 2) / (max(h, w) / 2))[None, :]
    falloff = rng.uniform(0.02, 0.25)
    tilt = rng.uniform(0, 0.08)
    a = rng.uniform(0, TAU)
    light = (
        1 - F32(falloff) * (y * y + x * x) * F32(0.5)
        + F32(tilt) * (y * math.sin(a) + x * math.cos(a))
    )
    if rng.random() < 0.3:
        light = light * well_edge(rng, shape, um)
    return light.astype(F32)


def well_edge(rng: np.random.Generator, shape: tuple[int, int], um: float) -> np.ndarray:
    """Part of a circular well wall entering from a side or a corner: the meniscus darkens
    (or, less often, brightens) a band along it. Not an artifact."""
    h, w = shape
    radius = log_uniform(rng, 1500, 3500) / um
    a = rng.uniform(0, TAU)
    reach = rng.uniform(0.35, 0.9) * math.hypot(h, w) / 2  # where the wall crosses, from centre
    cy = h / 2 - (radius - reach) * math.sin(a)
    cx = w / 2 - (radius - reach) * math.cos(a)
    yy = (np.arange(h, dtype=F32) - F32(cy))[:, None]
    xx = (np.arange(w, dtype=F32) - F32(cx))[None, :]
    inside = F32(radius) - np.sqrt(yy * yy + xx * xx)  # px from the wall, > 0 inside the well
    width = rng.uniform(0.05, 0.45) * max(h, w)
    depth = rng.uniform(0.3, 0.85) * (1 if rng.random() < 0.8 else -0.4)
    shade = 1 - F32(depth) * np.exp(-np.maximum(inside, 0) / F32(width))
    return np.where(inside < 0, F32(1 - abs(depth)) * F32(0.7), shade).astype(F32)


@dataclass(frozen=True, slots=True)
class Camera:
    background_dn: float
    offset_dn: float
    gain_dn_per_e: float
    read_noise_e: float
    prnu: float
    column_dn: float
    hot_per_mpx: float
    maximum: int


def draw_camera(rng: np.random.Generator, dtype: str) -> Camera:
    if dtype == "uint8":
        background, offset, maximum = log_uniform(rng, 40, 220), rng.uniform(0, 6), 255
    else:
        background, offset, maximum = log_uniform(rng, 1000, 40000), rng.uniform(80, 400), 65535
    electrons = log_uniform(rng, 2500, 25000)  # at the background, in the field centre
    gain = (background - offset) / electrons
    read = rng.uniform(1.0, 3.0)
    return Camera(
        background_dn=background,
        offset_dn=offset,
        gain_dn_per_e=gain,
        read_noise_e=read,
        prnu=rng.uniform(0.005, 0.01),
        column_dn=read * gain * rng.uniform(0.2, 0.8),
        hot_per_mpx=rng.uniform(5, 80),
        maximum=maximum,
    )


def expose(
    rng: np.random.Generator, intensity: np.ndarray, camera: Camera, dtype: str
) -> np.ndarray:
    """sCMOS: PRNU, Poisson shot noise, hot pixels, read noise, column offsets, gain, clipping."""
    h, w = intensity.shape
    per_unit = (camera.background_dn - camera.offset_dn) / camera.gain_dn_per_e
    electrons = np.maximum(intensity, 0) * F32(per_unit)
    electrons *= 1 + F32(camera.prnu) * rng.standard_normal((h, w), dtype=F32)
    counts = rng.poisson(electrons).astype(F32)
    hot = rng.poisson(camera.hot_per_mpx * h * w / 1e6)
    if hot:
        at = rng.integers(0, h * w, hot)
        counts.ravel()[at] += rng.uniform(0.2, 2.0, hot).astype(F32) * F32(per_unit)
    counts += F32(camera.read_noise_e) * rng.standard_normal((h, w), dtype=F32)
    dn = counts * F32(camera.gain_dn_per_e)
    dn += F32(camera.offset_dn) + F32(camera.column_dn) * rng.standard_normal(w, dtype=F32)[None, :]
    np.clip(dn, 0, camera.maximum, out=dn)
    return np.rint(dn).astype(dtype)
