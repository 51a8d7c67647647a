"""A frame: the field's cells, its artifacts in their layers, the mask and the image."""

from __future__ import annotations

import math

import numpy as np

from engines.data.render_particle.artifacts import DRAW, Artifact, Where
from engines.data.render_particle.cells import cells_of_field, draw_look
from engines.data.render_particle.clouds import Cloud
from engines.data.render_particle.optics import (
    Layer,
    draw_camera,
    draw_optics,
    expose,
    illumination,
    image_light,
)
from engines.data.synth import (
    DEFAULT_OPTIONS,
    SynthFrame,
    SynthObject,
    SynthOptions,
    frame_pixel_size,
    plate_look,
)

MIN_FOOTPRINT_PX = 20
PIXEL_SIZE_RANGE_UM = (0.3, 1.3)
ARTIFACTS_PER_FRAME = (1, 2, 3, 4, 5)
ARTIFACTS_WEIGHTS = (0.45, 0.25, 0.14, 0.1, 0.06)



def _artifacts(rng: np.random.Generator, where: Where, kinds: tuple[str, ...]
               ) -> list[tuple[str, Artifact]]:
    """1..5 artifacts big enough to label; drawing goes on until one is."""
    wanted = int(rng.choice(ARTIFACTS_PER_FRAME, p=ARTIFACTS_WEIGHTS))
    drawn: list[tuple[str, Artifact]] = []
    for _ in range(wanted + 30):
        if len(drawn) >= wanted:
            break
        kind = kinds[int(rng.integers(len(kinds)))]
        artifact = DRAW[kind](rng, where)
        if int(artifact.footprint.sum()) >= MIN_FOOTPRINT_PX:
            drawn.append((kind, artifact))
    return drawn


def _mask(shape: tuple[int, int], drawn: list[tuple[str, Artifact]], um: float
          ) -> tuple[np.ndarray, tuple[SynthObject, ...]]:
    """Later artifacts over earlier ones; labels too small once covered are dropped."""
    order = np.zeros(shape, np.int32)
    for i, (_, artifact) in enumerate(drawn, start=1):
        order[artifact.footprint] = i
    area = np.bincount(order.ravel(), minlength=len(drawn) + 1)
    mask = np.zeros(shape, np.uint16)
    objects = []
    for i, (kind, _) in enumerate(drawn, start=1):
        if area[i] < MIN_FOOTPRINT_PX:
            continue
        label = len(objects) + 1
        ys, xs = np.nonzero(order == i)
        mask[ys, xs] = label
        a = int(area[i])
        objects.append(SynthObject(kind, label, a, math.sqrt(4 * a / math.pi),
                                   float(ys.mean()), float(xs.mean())))
    return mask, tuple(objects)


def make_frame(rng: np.random.Generator, options: SynthOptions = DEFAULT_OPTIONS) -> SynthFrame:
    """One brightfield frame with its artifact mask, deterministic given the generator's state."""
    if options.channels > 1 or options.planes > 1:
        raise ValueError("the particle renderer draws single-plane, single-channel frames; "
                         f"got channels={options.channels}, planes={options.planes}")
    plate = plate_look(rng, options)  # the frame's own generator unless it is one of a plate
    um = frame_pixel_size(plate, options, PIXEL_SIZE_RANGE_UM)
    look, optics, camera = draw_look(plate), draw_optics(plate, um), draw_camera(plate)
    shape = (options.height, options.width)
    # A cell's texture is never finer than a pixel or two, whatever the pixel size.
    cells = Layer(cells_of_field(rng, look, shape, um), "cell", max(look.grain_um / um, 1.2))
    layers: dict[str, list[Cloud]] = {"cell": [], "bottom": [], "float": []}
    shadow = np.ones(shape, np.float32)
    drawn = []
    if rng.random() < options.artifact_probability:
        drawn = _artifacts(rng, Where(shape, um, look), tuple(options.kinds))
    for _, artifact in drawn:
        if artifact.shadow is not None:
            shadow *= artifact.shadow
        if artifact.cloud is not None:
            layers[artifact.layer].append(artifact.cloud)
    stack = [cells, *(Layer(Cloud.join(parts), depth) for depth, parts in layers.items())]
    light = image_light(stack, shape, optics, um) * shadow * illumination(rng, shape)
    image = expose(rng, light, camera, options.dtype)
    mask, objects = _mask(shape, drawn, um)
    return SynthFrame(image, mask, "artifact" if objects else "clean", objects, um)
