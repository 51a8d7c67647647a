"""A frame: cells, artifacts on the canvas, the optics, and the object table from the mask."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

from engines.data.render_halo.artifacts import ARTIFACTS, Where
from engines.data.render_halo.cells import draw_cells
from engines.data.render_halo.optics import draw_camera, draw_views, expose, illumination, laplacian
from engines.data.render_halo.patches import Canvas
from engines.data.synth import DEFAULT_OPTIONS, SynthFrame, SynthObject, SynthOptions


def make_frame(rng: np.random.Generator, options: SynthOptions = DEFAULT_OPTIONS) -> SynthFrame:
    """Render one synthetic brightfield frame with its artifact mask and object table."""
    h, w = options.height, options.width
    um = options.pixel_size_um if options.pixel_size_um is not None else rng.uniform(0.3, 1.0)
    canvas = Canvas(
        phase=np.zeros((h, w), np.float32),
        absorbance=np.zeros((h, w), np.float32),
        mask=np.zeros((h, w), np.uint16),
    )
    draw_cells(rng, canvas, um)

    kinds: list[str] = []
    if rng.random() < options.artifact_probability:
        wanted = int(rng.choice([1, 1, 2, 2, 3, 4, 5]))
        for _attempt in range(wanted * 20):
            if len(kinds) == wanted:
                break
            kind = str(rng.choice(options.kinds))
            at = Where(rng.uniform(0, h), rng.uniform(0, w), um, (h, w))
            if canvas.draw_artifact(ARTIFACTS[kind](rng, at)):
                kinds.append(kind)

    # The optics: the phase image seen through a slightly defocused objective.
    psf = float(np.clip(0.45 / um, 0.7, 2.0) * rng.uniform(0.8, 1.25))
    if rng.random() < 0.15:  # the autofocus missed a little
        psf *= rng.uniform(1.3, 2.0)
    # Fine texture inside cells: grain drawn at half resolution, proportional to thickness.
    grain = rng.standard_normal(((h + 1) // 2, (w + 1) // 2), dtype=np.float32)
    grain = np.repeat(np.repeat(grain, 2, axis=0), 2, axis=1)[:h, :w]
    grain *= np.float32(rng.uniform(0.02, 0.15))
    grain += 1
    canvas.phase *= grain
    halo = rng.uniform(0.06, 0.3) * (psf * psf + 0.5) / 0.24  # peak rim contrast of a unit step
    camera = draw_camera(rng, options.dtype)
    light = illumination(rng, h, w)
    transmission = np.exp(-canvas.absorbance)
    images = []
    for view in draw_views(rng, options, halo):
        sigma = math.hypot(psf, view.blur_px)
        relief = laplacian(ndi.gaussian_filter(canvas.phase, sigma, truncate=3.0))
        relief *= np.float32(view.contrast)
        seen = transmission
        if view.blur_px:
            seen = ndi.gaussian_filter(transmission, view.blur_px, truncate=3.0)
        images.append(expose(rng, light, seen, relief, camera, options.dtype))
    image = images[0] if len(images) == 1 else np.stack(images)

    mask, objects = _measure(canvas, kinds)
    return SynthFrame(
        image=image,
        mask=mask,
        label="artifact" if objects else "clean",
        objects=objects,
        pixel_size_um=float(um),
    )


def _measure(canvas: Canvas, kinds: list[str]) -> tuple[np.ndarray, tuple[SynthObject, ...]]:
    """Objects as the mask shows them; labels renumbered 1..n if a later artifact hid one."""
    mask = canvas.mask
    found = []
    for label, (kind, box) in enumerate(zip(kinds, canvas.boxes, strict=True), start=1):
        ys, xs = np.nonzero(mask[box] == label)
        if ys.size:
            found.append((label, kind, ys.size, box[0].start + ys.mean(), box[1].start + xs.mean()))
    if len(found) < len(kinds):
        lut = np.zeros(len(kinds) + 1, np.uint16)
        for new, (old, *_rest) in enumerate(found, start=1):
            lut[old] = new
        mask = lut[mask]
    objects = tuple(
        SynthObject(
            kind=kind,
            label=new,
            area_px=int(area),
            equivalent_diameter_px=float(math.sqrt(4 * area / math.pi)),
            centroid_y=float(cy),
            centroid_x=float(cx),
        )
        for new, (_old, kind, area, cy, cx) in enumerate(found, start=1)
    )
    return mask, objects
