"""OME-Zarr (NGFF 0.5) metadata of the store's image groups: the mask stacks (here) and the
thumbnail stacks (daemon.results.thumbnails), so napari and ome-zarr open them as they are."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

NGFF_VERSION = "0.5"
LABEL_NAME = "artifacts"  # the one label image of every stack: masks/<stack>/labels/artifacts
AXES = ("t", "y", "x")


def multiscale(name: str, pixel_um: float | None, axes: tuple[str, ...] = AXES) -> dict:
    """NGFF multiscales of one level: y and x in micrometres when the pixel size is known
    (viewers then show a scale bar and overlay other images correctly), else in pixels."""
    entries, scale = [], []
    for axis in axes:
        entry: dict[str, str] = {"name": axis, "type": "time" if axis == "t" else
                                 "channel" if axis == "c" else "space"}
        if axis in ("y", "x") and pixel_um is not None:
            entry["unit"] = "micrometer"
        entries.append(entry)
        scale.append(pixel_um if axis in ("y", "x") and pixel_um is not None else 1.0)
    return {"name": name, "axes": entries, "datasets": [
        {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}]}


def known_pixel_size(pixel_size_um: float | None) -> float | None:
    """The pixel size as a float, or None when it is unknown (None, NaN, not positive)."""
    if pixel_size_um is None or not math.isfinite(pixel_size_um) or pixel_size_um <= 0:
        return None
    return float(pixel_size_um)


def create_mask_stack(masks: Any, name: str, shape: tuple[int, int], dtype: np.dtype,
                      pixel_size_um: float | None) -> tuple[Any, Any]:
    """Create masks/<name>: a placeholder image and its label stack, both (0, y, x), with their
    NGFF metadata. Returns the zarr arrays (labels, image)."""
    height, width = shape
    image_group = masks.require_group(name)
    common = {
        "shape": (0, height, width),
        "chunks": (1, height, width),
        "fill_value": 0,
        "dimension_names": AXES,
        "overwrite": True,
    }
    image = image_group.create_array("0", dtype=np.uint8, **common)
    labels_group = image_group.require_group("labels")
    label_group = labels_group.require_group(LABEL_NAME)
    labels = label_group.create_array("0", dtype=dtype, **common)
    pixel_um = known_pixel_size(pixel_size_um)
    label_group.attrs.update(
        {
            "ome": {
                "version": NGFF_VERSION,
                "multiscales": [multiscale(LABEL_NAME, pixel_um)],
                # No "colors": viewers then give every artifact a colour of their own. A
                # colour list naming only 0 made napari draw every label transparent.
                "image-label": {"version": NGFF_VERSION, "source": {"image": "../../"}},
            }
        }
    )
    labels_group.attrs.update({"ome": {"version": NGFF_VERSION, "labels": [LABEL_NAME]}})
    image_group.attrs.update(
        {
            "ome": {"version": NGFF_VERSION, "multiscales": [multiscale(name, pixel_um)]},
            "artifactd": {
                "note": "placeholder image (the raw frames are not copied into the store); "
                f"the masks are labels/{LABEL_NAME}, one t per frame",
                "frame_shape": [height, width],
                "label_dtype": np.dtype(dtype).name,
                # The first frame's pixel size; each frame's own is in the frame table.
                "pixel_size_um": pixel_size_um,
            },
        }
    )
    return labels, image
