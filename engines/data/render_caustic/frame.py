"""A frame: artifacts drawn into the scene, the mask and its objects, the image."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from engines.data.render_caustic.artifacts import DRAW, Field, Piece
from engines.data.render_caustic.cells import add_texture, cell_bodies, draw_cell_look
from engines.data.render_caustic.optics import (
    Rays,
    curvature_scale,
    draw_camera,
    draw_optics,
    expose,
    illumination,
    image_intensity,
    limit_slope,
)
from engines.data.synth import (
    DEFAULT_OPTIONS,
    SynthFrame,
    SynthObject,
    SynthOptions,
    frame_pixel_size,
    plate_look,
)

MIN_FOOTPRINT_PX = 20  # an artifact smaller than this inside the frame is not drawn / is dropped
PIXEL_SIZE_RANGE_UM = (0.3, 1.3)


COUNT_WEIGHTS = (0.4, 0.25, 0.15, 0.12, 0.08)  # 1..5 artifacts in an artifact frame


@dataclass(slots=True)
class _Scene:
    """Everything the artifacts are drawn into."""

    frame: Field
    rays: Rays
    absorbance: np.ndarray
    shadow: np.ndarray
    mask: np.ndarray
    kinds: list[str] = field(default_factory=list)

    def draw(self, piece: Piece, kind: str) -> bool:
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


def _check_single_plane(options: SynthOptions) -> None:
    if options.channels > 1 or options.planes > 1:
        raise ValueError(
            "the caustic renderer draws single-plane, single-channel frames; "
            f"got channels={options.channels}, planes={options.planes}"
        )



def make_frame(rng: np.random.Generator, options: SynthOptions = DEFAULT_OPTIONS) -> SynthFrame:
    """One brightfield frame with its artifact mask, deterministic given the generator's state."""
    _check_single_plane(options)
    plate = plate_look(rng, options)  # the frame's own rng unless it is one of a plate
    um = frame_pixel_size(plate, options, PIXEL_SIZE_RANGE_UM)
    shape = (options.height, options.width)
    look = draw_cell_look(plate)
    cells = cell_bodies(rng, shape, um, look)
    optics = draw_optics(plate, curvature_scale(cells.opd, cells.inside), um)
    add_texture(rng, cells, um, look, optics.z_um / um**2)
    limit_slope(cells.opd, um, optics.aperture_rad)
    rays = Rays.empty(shape)
    rays.add_phase(ndi.gaussian_filter(cells.opd, 1.0, truncate=3.0), optics.z_um, um)
    scene = _Scene(Field(shape, um, optics.z_um), rays, cells.absorbance,
                   np.ones(shape, np.float32), np.zeros(shape, np.uint16))
    if rng.random() < options.artifact_probability:
        _draw_artifacts(rng, scene, tuple(options.kinds))
    intensity = image_intensity(rays, scene.absorbance, optics, um) * scene.shadow
    image = expose(rng, intensity * illumination(rng, shape), draw_camera(plate), options.dtype)
    mask, objects = _measure(scene.mask, scene.kinds)
    return SynthFrame(image, mask, "artifact" if objects else "clean", objects, um)
