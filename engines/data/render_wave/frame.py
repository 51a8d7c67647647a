"""A frame: the scene, artifacts placed in it, the mask measured, the image formed."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.fft as sfft

from engines.data.render_wave.artifacts import DRAW, Piece, Spot
from engines.data.render_wave.cells import draw_cells
from engines.data.render_wave.noise import F32, log_uniform
from engines.data.render_wave.optics import (
    Microscope,
    complex_transmission,
    draw_camera,
    draw_microscope,
    expose,
    far_plane_light,
    form_image,
    koehler_light,
)
from engines.data.synth import DEFAULT_OPTIONS, SynthFrame, SynthObject, SynthOptions

MIN_FOOTPRINT_PX = 20


@dataclass(slots=True)
class Scene:
    absorption: np.ndarray
    phase: np.ndarray
    mask: np.ndarray
    kinds: list[str]
    far_pad: int
    far_absorption: np.ndarray | None = None
    far_phase: np.ndarray | None = None

    def place(self, kind: str, piece: Piece) -> bool:
        """Add an artifact if enough of its footprint lies in the frame; it wins the mask."""
        h, w = self.mask.shape
        ph, pw = piece.footprint.shape
        fy0, fx0 = max(piece.y0, 0), max(piece.x0, 0)
        fy1, fx1 = min(piece.y0 + ph, h), min(piece.x0 + pw, w)
        if fy1 <= fy0 or fx1 <= fx0:
            return False
        inner = (slice(fy0 - piece.y0, fy1 - piece.y0), slice(fx0 - piece.x0, fx1 - piece.x0))
        seen = piece.footprint[inner]
        if int(seen.sum()) < MIN_FOOTPRINT_PX:
            return False
        if piece.far:
            self._place_far(piece)
        else:
            self.absorption[fy0:fy1, fx0:fx1] += piece.absorption[inner]
            self.phase[fy0:fy1, fx0:fx1] += piece.phase[inner]
        self.kinds.append(kind)
        self.mask[fy0:fy1, fx0:fx1][seen] = len(self.kinds)
        return True

    def _place_far(self, piece: Piece) -> None:
        if self.far_absorption is None:
            size = (self.mask.shape[0] + 2 * self.far_pad, self.mask.shape[1] + 2 * self.far_pad)
            size = (sfft.next_fast_len(size[0]), sfft.next_fast_len(size[1]))
            self.far_absorption = np.zeros(size, F32)
            self.far_phase = np.zeros(size, F32)
        ph, pw = piece.footprint.shape
        gh, gw = self.far_absorption.shape
        y0, x0 = piece.y0 + self.far_pad, piece.x0 + self.far_pad
        ty0, tx0, ty1, tx1 = max(y0, 0), max(x0, 0), min(y0 + ph, gh), min(x0 + pw, gw)
        inner = (slice(ty0 - y0, ty1 - y0), slice(tx0 - x0, tx1 - x0))
        self.far_absorption[ty0:ty1, tx0:tx1] += piece.absorption[inner]
        self.far_phase[ty0:ty1, tx0:tx1] += piece.phase[inner]


def draw_artifacts(
    rng: np.random.Generator, scene: Scene, options: SynthOptions, scope: Microscope
) -> None:
    h, w = scene.mask.shape
    wanted = int(rng.choice([1, 1, 1, 2, 2, 3, 4, 5]))
    for _attempt in range(20 * wanted):
        if len(scene.kinds) == wanted:
            break
        kind = str(rng.choice(options.kinds))
        spot = Spot(rng.uniform(0, h), rng.uniform(0, w), scope, (h, w))
        scene.place(kind, DRAW[kind](rng, spot))


def measure(mask: np.ndarray, kinds: list[str]) -> tuple[np.ndarray, tuple[SynthObject, ...]]:
    """Objects as the final mask shows them; hidden or tiny ones dropped, labels made 1..n."""
    n = len(kinds)
    if not n:
        return mask, ()
    flat = mask.ravel()
    counts = np.bincount(flat, minlength=n + 1)
    keep = [label for label in range(1, n + 1) if counts[label] >= MIN_FOOTPRINT_PX]
    lut = np.zeros(n + 1, np.uint16)
    lut[keep] = np.arange(1, len(keep) + 1)
    mask = lut[mask]
    flat = mask.ravel()
    w = mask.shape[1]
    index = np.arange(flat.size, dtype=np.float64)
    sum_y = np.bincount(flat, weights=index // w, minlength=len(keep) + 1)
    sum_x = np.bincount(flat, weights=index % w, minlength=len(keep) + 1)
    objects = []
    for new, old in enumerate(keep, start=1):
        area = int(counts[old])
        objects.append(SynthObject(
            kind=kinds[old - 1], label=new, area_px=area,
            equivalent_diameter_px=float(math.sqrt(4 * area / math.pi)),
            centroid_y=float(sum_y[new] / area), centroid_x=float(sum_x[new] / area),
        ))
    return mask, tuple(objects)


def make_frame(rng: np.random.Generator, options: SynthOptions = DEFAULT_OPTIONS) -> SynthFrame:
    """Render one wave-optics brightfield frame with its artifact mask and object table."""
    if options.channels > 1 or options.planes > 1:
        raise ValueError(
            "the wave renderer draws single-plane, single-channel frames; "
            f"got channels={options.channels}, planes={options.planes}"
        )
    h, w = options.height, options.width
    um = options.pixel_size_um if options.pixel_size_um is not None else log_uniform(rng, 0.3, 1.3)
    scope = draw_microscope(rng, um)
    cells = draw_cells(rng, (h, w), scope)
    scene = Scene(cells.absorption, cells.phase, np.zeros((h, w), np.uint16), [],
                  far_pad=int(min(3 * scope.dirt_blur_um / um + 8, 400)))
    if rng.random() < options.artifact_probability:
        draw_artifacts(rng, scene, options, scope)

    t = complex_transmission(scene.absorption, scene.phase)
    if scene.far_absorption is not None:
        light = far_plane_light(scene.far_absorption, scene.far_phase, scope)
        p = scene.far_pad
        t *= light[p : p + h, p : p + w]
    intensity = form_image(rng, t, scope)
    intensity *= koehler_light(rng, (h, w), um)
    image = expose(rng, intensity, draw_camera(rng, options.dtype), options.dtype)
    mask, objects = measure(scene.mask, scene.kinds)
    return SynthFrame(image=image, mask=mask, label="artifact" if objects else "clean",
                      objects=objects, pixel_size_um=float(um))
