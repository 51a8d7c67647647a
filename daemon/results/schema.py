"""The results store's format: its tables and their columns, chunking, the mask stacks, and the
one error the store raises. A change here is a change of the on-disk format (LAYOUT_VERSION).

Layout (paths relative to the store folder)::

    zarr.json                         root group; attributes:
                                        artifactd          version, layout, models, config ...
                                        artifactd_history  earlier settings, when they changed
                                        committed          rows per table, frames per stack
    frames/<column>                   the frame table: one 1-D array per column
    artifacts/<column>                the artifact table: one row per artifact
    failures/<column>                 frames that could not be processed
    corrections/<column>              the operator's corrections (daemon.results.corrections)
    masks/<stack>/                    an OME-Zarr (NGFF 0.5) image group, one per frame shape
    masks/<stack>/0                   placeholder image (t, y, x): never written, reads as zeros
    masks/<stack>/labels/             NGFF "labels" group listing ["artifacts"]
    masks/<stack>/labels/artifacts/   NGFF label image (multiscales + image-label)
    masks/<stack>/labels/artifacts/0  the label stack (t, y, x): one chunk per frame, zstd

A stack is named after its frame shape: "1080x1080" (uint16 labels), or "1080x1080_uint32" for
frames with more than 65535 labels. Frame-table columns `mask_stack` and `mask_index` say where
each frame's mask is (t = mask_index). Open a stack in napari or ome-zarr as
`<store>/masks/<stack>`. The raw frames are not copied into the store; the image array is a
placeholder of the stack's shape (zarr stores no chunk of it) so that readers find an image to
hang the labels on. Thumbnails have stacks of their own under thumbnails/
(daemon.results.thumbnails).
"""

from __future__ import annotations

import errno
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from daemon.frames import ARTIFACT_COLUMNS, STATIONARY
from daemon.results.ngff import LABEL_NAME

LAYOUT_VERSION = 1

# Rows per chunk of the 1-D table columns (numbers, strings). An append re-encodes the last chunk
# of each string column, so those chunks are small; numeric chunks are patched in place, so size
# costs them nothing.
FRAME_CHUNK = (8192, 256)
ARTIFACT_CHUNK = (65536, 2048)
FAILURE_CHUNK = (1024, 256)
CORRECTION_CHUNK = (1024, 256)

STR = "str"  # marker: a variable-length UTF-8 string column (zarr v3 "string", zstd)

FRAME_COLUMNS: dict[str, Any] = {
    "identity": STR,  # Frame.identity: "source|size|mtime_ns", or "zmq:<frame_id>"
    "source": STR,
    "plate": STR,
    "well": STR,
    "field": np.int32,  # -1: unknown
    "channel": np.int32,
    "plane": np.int32,
    "pixel_size_um": np.float64,  # NaN: unknown
    "acquired_at": STR,
    "height": np.int32,
    "width": np.int32,
    "score": np.float64,
    "flagged": np.bool_,
    "area_fraction": np.float64,
    "n_artifacts": np.int32,
    "unfamiliarity": np.float64,  # NaN: the model card has no appearance statistics
    "processed_at": STR,
    "mask_stack": STR,  # "" when no mask was stored (an empty label image)
    "mask_index": np.int64,  # t in that stack; -1 when none
    "thumbnail_stack": STR,  # thumbnails/<stack> (daemon.results.thumbnails); "" when none
    "thumbnail_index": np.int64,  # t in that stack; -1 when none
}

_ARTIFACT_INT = {"label", "area_px", "bbox_min_y", "bbox_min_x", "bbox_max_y", "bbox_max_x"}
ARTIFACT_TABLE_COLUMNS: dict[str, Any] = {
    "identity": STR,
    "source": STR,
    "frame_row": np.int64,  # row of the frame table
    # 32-bit: ample for these measurements (frames hold at most 2**31 pixels), and this is the
    # largest table.
    **{c: (np.int32 if c in _ARTIFACT_INT else np.float32) for c in ARTIFACT_COLUMNS},
    # On the optics, not in the sample (daemon.sinks.optics). Stores written before it have no such
    # column: a writer adds it (false for the rows already there), a reader sees false.
    STATIONARY: np.bool_,
}

FAILURE_COLUMNS: dict[str, Any] = {
    "source": STR,
    "reason": STR,
    "message": STR,
    "failed_at": STR,
}

# The operator's corrections from the plate page, append-only (daemon.results.corrections).
CORRECTION_COLUMNS: dict[str, Any] = {
    "identity": STR,
    "source": STR,
    "frame_row": np.int64,
    "label": STR,  # "clean" | "artifact"
    "by": STR,  # a token's name, or "loopback"
    "at": STR,
}

TABLES: dict[str, tuple[dict[str, Any], tuple[int, int]]] = {
    "frames": (FRAME_COLUMNS, FRAME_CHUNK),
    "artifacts": (ARTIFACT_TABLE_COLUMNS, ARTIFACT_CHUNK),
    "failures": (FAILURE_COLUMNS, FAILURE_CHUNK),
    "corrections": (CORRECTION_COLUMNS, CORRECTION_CHUNK),
}

# What a re-sent frame is answered with (ResultsStore.stored_verdicts).
VERDICT_COLUMNS = ("identity", "score", "flagged", "area_fraction", "n_artifacts", "processed_at")


class StoreError(RuntimeError):
    """The results store cannot be opened, read or written; the message names its path."""


@dataclass(slots=True)
class Column:
    key: str  # "frames/score"
    array: Any  # zarr AsyncArray, None for a column an older store lacks (read-only)
    dtype: Any  # numpy dtype, or STR
    folder: Path | None  # chunk folder when appends patch the chunk files in place
    strings: tuple[Any, Any] | None  # numcodecs (VLenUTF8, Zstd) when appends encode chunks


@dataclass(slots=True)
class Stack:
    """One label stack (frames of one shape and label dtype) and its placeholder image."""

    name: str
    labels: Any  # AsyncArray (t, y, x)
    image: Any  # AsyncArray (t, y, x) uint8, never written
    committed: int

    @property
    def labels_key(self) -> str:
        return f"masks/{self.name}/labels/{LABEL_NAME}/0"


def stack_name(shape: tuple[int, int], dtype: Any) -> str:
    name = f"{shape[0]}x{shape[1]}"
    return name if np.dtype(dtype) == np.uint16 else f"{name}_{np.dtype(dtype).name}"


def numpy_dtype(dtype: Any) -> Any:
    return object if dtype is STR else dtype


def fill(dtype: Any) -> Any:
    """A column's fill value: what a row reads as where nothing was written."""
    if dtype is STR:
        return ""
    kind = np.dtype(dtype).kind
    if kind == "f":
        return math.nan
    if kind == "b":
        return False
    return -1


def label_dtype(labels: np.ndarray, source: str) -> np.dtype:
    """The stack dtype a frame's labels go to: uint16, or uint32 past 65535 labels."""
    if labels.ndim != 2:
        raise ValueError(f"{source}: labels must be a 2-D image, got shape {labels.shape}")
    if labels.dtype.kind not in "iu":
        raise ValueError(f"{source}: labels must be integers, got {labels.dtype}")
    if labels.dtype in (np.uint8, np.uint16):
        return np.dtype(np.uint16)
    if labels.dtype.kind == "i" and int(labels.min()) < 0:
        raise ValueError(f"{source}: labels must be >= 0")
    top = int(labels.max())
    if top > np.iinfo(np.uint32).max:
        raise ValueError(f"{source}: label {top} does not fit uint32")
    return np.dtype(np.uint16 if top <= np.iinfo(np.uint16).max else np.uint32)


def why(exc: BaseException) -> str:
    """An error in the words of a store message: "disk full: <file>", "not writable: <file>"."""
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        if exc.errno == errno.ENOSPC:
            return f"disk full{where}"
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return f"not writable{where}"
        if exc.strerror:
            return f"{exc.strerror}{where}"
    return f"{type(exc).__name__}: {exc}"
