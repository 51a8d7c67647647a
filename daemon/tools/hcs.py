"""`artifactd export STORE --ome-zarr-plate OUT.zarr`: one plate's thumbnails as an OME-Zarr
(NGFF 0.5) high-content-screening plate, the artifact labels under each image.

    OUT.zarr/zarr.json            ome.plate: rows and columns of the plate's layout (96, 384 or
                                  1536 wells, from the wells seen), the wells imaged, field_count
    OUT.zarr/C/7/zarr.json        ome.well: its images, one per field
    OUT.zarr/C/7/0/               the first field: image (y, x) uint8, in micrometres when the
                                  frame had a pixel size
    OUT.zarr/C/7/0/labels/artifacts   its artifacts (0 = background, k = artifact k)

Every viewer that reads NGFF plates (napari with napari-ome-zarr, ome_zarr, OMERO, vizarr)
shows the plate with the outlines. Only the current result of each frame with a thumbnail is
exported; fields are ordered by field number (then channel and plane, for frames sharing a
field). Wells whose name is not a plate position (a CQ1 "W0001") are left out and logged.
The plate is written beside OUT.zarr and renamed into place when complete.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from daemon.plates import LAYOUTS, infer_format, parse_well, row_name
from daemon.results.ngff import LABEL_NAME, NGFF_VERSION, multiscale

logger = logging.getLogger(__name__)


class PlateExportError(RuntimeError):
    """The plate cannot be exported; one sentence naming what and what was expected."""


@dataclass(frozen=True, slots=True)
class _Field:
    row: int  # frame-table row
    field: int
    channel: int
    plane: int
    source: str
    pixel_size_um: float


def export_plate(store: Any, out: Path, plate: str | None = None) -> int:
    """Write `plate` (the store's only plate when None) to `out`; returns the images written."""
    out = Path(out)
    if out.exists():
        raise PlateExportError(f"{out}: already exists; expected a path for a new plate")
    table = store.frame_table()
    name = _chosen_plate(table, plate)
    wells = _wells(table, name)
    if not wells:
        raise PlateExportError(f"plate {name!r}: no frame with a thumbnail and a well position; "
                               "expected frames stored with [thumbnails] enabled = true")
    # A folder, written whole and renamed into place: readers see all of the plate or none.
    # (Atomic but not fsynced: an export can be made again; engines.files.replace_atomically
    # also fsyncs, for single files.)
    partial = out.with_name(f".{out.name}.{os.getpid()}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        written = _write(store, partial, name, wells)
        os.replace(partial, out)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return written


def _current(table: dict[str, np.ndarray]) -> list[int]:
    latest: dict[str, int] = {}
    for row, source in enumerate(table["source"]):
        latest[str(source)] = row
    return sorted(latest.values())


def _chosen_plate(table: dict[str, np.ndarray], plate: str | None) -> str:
    with_thumbnails = {str(table["plate"][row]) for row in _current(table)
                       if int(table["thumbnail_index"][row]) >= 0}
    if plate is not None:
        if plate not in with_thumbnails:
            raise PlateExportError(f"--plate {plate!r}: no frames with thumbnails of that plate; "
                                   f"expected one of {_listed(with_thumbnails)}")
        return plate
    if len(with_thumbnails) != 1:
        raise PlateExportError(
            f"the store holds {len(with_thumbnails)} plates with thumbnails "
            f"({_listed(with_thumbnails)}); expected --plate NAME to say which"
            if with_thumbnails else
            "the store holds no thumbnails; expected frames stored with [thumbnails] enabled")
    return with_thumbnails.pop()


def _listed(names: set[str]) -> str:
    return ", ".join(repr(n) for n in sorted(names)) or "none"


def _wells(table: dict[str, np.ndarray], plate: str) -> dict[tuple[int, int], list[_Field]]:
    wells: dict[tuple[int, int], list[_Field]] = {}
    unplaced: set[str] = set()
    for row in _current(table):
        if str(table["plate"][row]) != plate or int(table["thumbnail_index"][row]) < 0:
            continue
        well = str(table["well"][row])
        position = parse_well(well)
        if position is None:
            unplaced.add(well)
            continue
        wells.setdefault(position, []).append(_Field(
            row, int(table["field"][row]), int(table["channel"][row]), int(table["plane"][row]),
            str(table["source"][row]), float(table["pixel_size_um"][row])))
    if unplaced:
        logger.warning("plate %r: wells %s name no plate position; left out of the plate",
                       plate, ", ".join(sorted(repr(w) for w in unplaced)))
    for fields in wells.values():
        fields.sort(key=lambda f: (f.field, f.channel, f.plane, f.row))
    return wells


def _write(store: Any, path: Path, name: str, wells: dict[tuple[int, int], list[_Field]]) -> int:
    wells_of_plate = infer_format(wells)
    n_rows, n_columns = LAYOUTS[wells_of_plate]
    root = zarr.open_group(path, mode="w-", zarr_format=3)
    placed = sorted(wells)
    root.attrs["ome"] = {"version": NGFF_VERSION, "plate": {
        "version": NGFF_VERSION,
        "name": name,
        "rows": [{"name": row_name(r)} for r in range(n_rows)],
        "columns": [{"name": str(c + 1)} for c in range(n_columns)],
        "wells": [{"path": _well_path(r, c), "rowIndex": r, "columnIndex": c} for r, c in placed],
        "field_count": max(len(fields) for fields in wells.values()),
        "acquisitions": [{"id": 0, "name": name}],
    }}
    root.attrs["artifactd"] = {"plate_format": wells_of_plate,
                               "note": "thumbnails of the analysed frames with their artifacts"}
    written = 0
    for position in placed:
        well = root.require_group(_well_path(*position))
        fields = wells[position]
        well.attrs["ome"] = {"version": NGFF_VERSION, "well": {
            "version": NGFF_VERSION,
            "images": [{"path": str(i), "acquisition": 0} for i in range(len(fields))]}}
        for i, field in enumerate(fields):
            thumbnail = store.thumbnail(field.row)
            if thumbnail is None:  # counted by the table, not readable: say so, go on
                logger.warning("%s: its thumbnail could not be read; left out", field.source)
                continue
            _write_image(well.require_group(str(i)), field, thumbnail)
            written += 1
    return written


def _well_path(row: int, column: int) -> str:
    return f"{row_name(row)}/{column + 1}"


def _write_image(group: Any, field: _Field, thumbnail: Any) -> None:
    pixel = field.pixel_size_um * thumbnail.downsample
    pixel_um = pixel if math.isfinite(pixel) and pixel > 0 else None
    shape = thumbnail.image.shape
    group.create_array("0", data=thumbnail.image, chunks=shape, dimension_names=("y", "x"))
    group.attrs["ome"] = {
        "version": NGFF_VERSION,
        "multiscales": [multiscale(f"field {field.field}", pixel_um, ("y", "x"))],
        "omero": {"rdefs": {"model": "greyscale"}, "channels": [{
            "label": "thumbnail", "color": "FFFFFF", "active": True,
            "window": {"start": 0, "end": 255, "min": 0, "max": 255}}]},
    }
    group.attrs["artifactd"] = {"source": field.source, "field": field.field,
                                "channel": field.channel, "plane": field.plane,
                                "frame_row": field.row, "downsample": thumbnail.downsample}
    labels = group.require_group("labels")
    labels.attrs["ome"] = {"version": NGFF_VERSION, "labels": [LABEL_NAME]}
    label = labels.require_group(LABEL_NAME)
    label.create_array("0", data=thumbnail.labels, chunks=shape, dimension_names=("y", "x"))
    label.attrs["ome"] = {
        "version": NGFF_VERSION,
        "multiscales": [multiscale(LABEL_NAME, pixel_um, ("y", "x"))],
        "image-label": {"version": NGFF_VERSION, "source": {"image": "../../"}},
    }
