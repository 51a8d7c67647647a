"""A frame: artifacts composited over the cells, the mask and its objects, the camera."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

from engines.data.render_monolayer.artifacts import ARTIFACT_DRAWERS, Drawn
from engines.data.render_monolayer.cells import cell_layer
from engines.data.render_monolayer.optics import camera, illumination, point_spread
from engines.data.render_monolayer.textures import F32
from engines.data.synth import DEFAULT_OPTIONS, SynthFrame, SynthObject, SynthOptions

PIXEL_SIZE_RANGE_UM = (0.3, 1.3)
MIN_FOOTPRINT_PX = 20
FOOTPRINT_FRACTION = 0.2  # of an artifact's own peak |factor - 1|
ARTIFACTS_PER_FRAME = (1, 5)
SOLID_KINDS = ("debris", "bubble", "clump", "precipitate", "dirt")  # footprint holes are filled


class ArtifactLayer:
    """The product of all drawn artifact factors and the instance mask of their footprints."""

    def __init__(self, shape: tuple[int, int]) -> None:
        self.factor = np.ones(shape, F32)
        self.mask = np.zeros(shape, np.uint16)
        self.kinds: list[str] = []

    def add(self, kind: str, drawn: Drawn) -> bool:
        """Composite one artifact; False (nothing drawn) if its footprint is < MIN_FOOTPRINT_PX."""
        difference = np.abs(drawn.factor - 1)
        peak = float(difference.max())
        if peak <= 0:
            return False
        footprint = difference > FOOTPRINT_FRACTION * peak
        if kind in SOLID_KINDS:
            footprint = ndi.binary_fill_holes(footprint)
        if int(footprint.sum()) < MIN_FOOTPRINT_PX:
            return False
        self.factor[drawn.rows, drawn.cols] *= drawn.factor
        self.kinds.append(kind)
        self.mask[drawn.rows, drawn.cols][footprint] = len(self.kinds)  # later wins
        return True

    def truth(self) -> tuple[np.ndarray, tuple[SynthObject, ...]]:
        """Relabel to 1..n (an artifact covered by later ones disappears); measure each label."""
        counts = np.bincount(self.mask.ravel(), minlength=len(self.kinds) + 1)
        kept = [old for old in range(1, len(self.kinds) + 1) if counts[old] > 0]
        lookup = np.zeros(len(self.kinds) + 1, np.uint16)
        lookup[kept] = np.arange(1, len(kept) + 1, dtype=np.uint16)
        mask = lookup[self.mask]
        objects = []
        if kept:
            flat = mask.ravel()
            rows, cols = np.divmod(np.arange(flat.size), mask.shape[1])
            sum_y = np.bincount(flat, weights=rows, minlength=len(kept) + 1)
            sum_x = np.bincount(flat, weights=cols, minlength=len(kept) + 1)
            for new, old in enumerate(kept, start=1):
                area = int(counts[old])
                cy, cx = sum_y[new] / area, sum_x[new] / area
                objects.append(
                    SynthObject(
                        kind=self.kinds[old - 1],
                        label=new,
                        area_px=area,
                        equivalent_diameter_px=float(math.sqrt(4 * area / math.pi)),
                        centroid_y=float(cy),
                        centroid_x=float(cx),
                    )
                )
        return mask, tuple(objects)


def draw_artifacts(
    rng: np.random.Generator, layer: ArtifactLayer, um: float, kinds: tuple[str, ...]
) -> None:
    """1-5 artifacts of the allowed kinds; those too small to show are redrawn (boundedly)."""
    wanted = int(rng.integers(ARTIFACTS_PER_FRAME[0], ARTIFACTS_PER_FRAME[1] + 1))
    shape = layer.factor.shape
    drawn, tries = 0, 0
    while drawn < wanted and tries < wanted * 8:
        tries += 1
        kind = str(rng.choice(kinds))
        artifact = ARTIFACT_DRAWERS[kind](rng, shape, um)
        if artifact is not None and layer.add(kind, artifact):
            drawn += 1


def make_frame(rng: np.random.Generator, options: SynthOptions = DEFAULT_OPTIONS) -> SynthFrame:
    """One brightfield frame of adherent cells; artifacts at ``options.artifact_probability``."""
    if options.channels > 1 or options.planes > 1:
        raise ValueError(
            "the monolayer renderer draws single-plane, single-channel frames; "
            f"got channels={options.channels}, planes={options.planes}"
        )
    um = (
        options.pixel_size_um
        if options.pixel_size_um is not None
        else float(rng.uniform(*PIXEL_SIZE_RANGE_UM))
    )
    shape = (options.height, options.width)
    light = illumination(rng, shape, um)
    scene = cell_layer(rng, shape, um)
    artifacts = ArtifactLayer(shape)
    if rng.random() < options.artifact_probability:
        draw_artifacts(rng, artifacts, um, options.kinds)
    scene *= artifacts.factor
    scene *= light
    blurred = point_spread(rng, scene, um)
    image = camera(rng, blurred, options.dtype)
    mask, objects = artifacts.truth()
    return SynthFrame(
        image=image,
        mask=mask,
        label="artifact" if objects else "clean",
        objects=objects,
        pixel_size_um=um,
    )
