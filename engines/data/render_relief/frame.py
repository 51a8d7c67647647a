"""A frame: artifacts painted into the specimen, the mask and its objects, the image."""

from __future__ import annotations

import math

import numpy as np

from engines.data.render_relief.artifacts import ARTIFACT_DRAWERS, Stamp
from engines.data.render_relief.cells import CELL_STYLES, add_organelles, draw_stain
from engines.data.render_relief.optics import draw_optics, expose, illumination, transmitted_light
from engines.data.render_relief.specimen import Specimen
from engines.data.synth import DEFAULT_OPTIONS, SynthFrame, SynthObject, SynthOptions, plate_look

PIXEL_SIZE_RANGE_UM = (0.35, 1.2)
MIN_FOOTPRINT_PX = 20


def paint(spec: Specimen, stamp: Stamp, kind: str) -> bool:
    """Add an artifact to the layers and the mask; refuse one whose footprint is too small."""
    if int(stamp.footprint.sum()) < MIN_FOOTPRINT_PX:
        return False
    for name in ("opd", "absorbance", "haze"):
        layer = getattr(stamp, name)
        if layer is not None:
            getattr(spec, name)[stamp.box] += layer
    spec.kinds.append(kind)
    spec.mask[stamp.box][stamp.footprint] = len(spec.kinds)
    return True


def draw_artifacts(rng: np.random.Generator, spec: Specimen, kinds: tuple[str, ...]) -> None:
    """1-5 artifacts; keep drawing (up to a limit) until at least one survives in the mask."""
    wanted = int(rng.integers(1, 6))
    for attempt in range(wanted + 30):
        if attempt >= wanted and measure_objects(spec.mask, spec.kinds)[1]:
            return
        kind = kinds[int(rng.integers(len(kinds)))]
        stamp = ARTIFACT_DRAWERS[kind](rng, spec.shape, spec.um)
        if stamp is not None:
            paint(spec, stamp, kind)


def measure_objects(
    mask: np.ndarray, kinds: list[str]
) -> tuple[np.ndarray, tuple[SynthObject, ...]]:
    """Drop footprints under MIN_FOOTPRINT_PX, relabel 1..n, and measure what is left."""
    ys, xs = np.nonzero(mask)
    labels = mask[ys, xs]
    n = len(kinds)
    area = np.bincount(labels, minlength=n + 1)
    sum_y = np.bincount(labels, weights=ys, minlength=n + 1)
    sum_x = np.bincount(labels, weights=xs, minlength=n + 1)
    keep = [old for old in range(1, n + 1) if area[old] >= MIN_FOOTPRINT_PX]
    lut = np.zeros(n + 1, np.uint16)
    lut[keep] = np.arange(1, len(keep) + 1)
    objects = tuple(
        SynthObject(
            kind=kinds[old - 1],
            label=new,
            area_px=int(area[old]),
            equivalent_diameter_px=float(math.sqrt(4 * area[old] / math.pi)),
            centroid_y=float(sum_y[old] / area[old]),
            centroid_x=float(sum_x[old] / area[old]),
        )
        for new, old in enumerate(keep, start=1)
    )
    return lut[mask], objects


def make_frame(rng: np.random.Generator, options: SynthOptions = DEFAULT_OPTIONS) -> SynthFrame:
    """One relief-contrast brightfield frame with its artifact mask, deterministic from rng."""
    if options.channels > 1 or options.planes > 1:
        raise ValueError(
            "the relief renderer draws single-plane, single-channel frames; "
            f"got channels={options.channels}, planes={options.planes}"
        )
    look = plate_look(rng, options)  # the frame's own rng unless it is one of a plate
    um = options.pixel_size_um
    if um is None:
        um = look.uniform(*PIXEL_SIZE_RANGE_UM)
    spec = Specimen.empty((options.height, options.width), float(um))
    style = list(CELL_STYLES)[int(look.integers(len(CELL_STYLES)))]
    CELL_STYLES[style](rng, spec)
    stain = draw_stain(look)
    add_organelles(rng, spec, stain)
    if rng.random() < options.artifact_probability:
        draw_artifacts(rng, spec, tuple(options.kinds))
    mask, objects = measure_objects(spec.mask, spec.kinds)
    optics = draw_optics(look, spec.um)
    light = transmitted_light(spec, optics, stain) * illumination(rng, spec.shape)
    image = expose(rng, light, options.dtype)
    return SynthFrame(
        image=image,
        mask=mask,
        label="artifact" if objects else "clean",
        objects=objects,
        pixel_size_um=float(um),
    )
