"""Turning what the service produced into table rows: a batch of FrameResults into frame and
artifact columns and masks per stack, failures and corrections into their columns. Everything is
checked here, before the store writes anything."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from daemon.frames import ARTIFACT_COLUMNS, STATIONARY, FrameFailure, FrameResult
from daemon.results.corrections import Correction
from daemon.results.schema import (
    ARTIFACT_TABLE_COLUMNS,
    FRAME_COLUMNS,
    Stack,
    fill,
    label_dtype,
    numpy_dtype,
    stack_name,
)
from daemon.results.thumbnails import ThumbnailBatch, ThumbnailStacks


@dataclass(slots=True)
class BatchRows:
    """One append's rows, masks and thumbnails, planned before anything is written."""

    frames: dict[str, np.ndarray]
    artifacts: dict[str, np.ndarray]
    masks: dict[str, list[np.ndarray]]  # stack -> masks, in frame order
    # stacks this batch is the first to use: (name, shape, label dtype, first pixel size)
    new_stacks: list[tuple[str, tuple[int, int], np.dtype, float | None]]
    thumbnails: ThumbnailBatch = field(default_factory=ThumbnailBatch)


def batch_rows(batch: Sequence[FrameResult], first_row: int, stacks: Mapping[str, Stack],
               thumbnails: ThumbnailStacks) -> BatchRows:
    """Columns, masks and thumbnails of a batch whose first frame goes to row `first_row`."""
    thumbs = ThumbnailBatch()
    f: dict[str, list] = {name: [] for name in FRAME_COLUMNS}
    art: dict[str, list[np.ndarray]] = {name: [] for name in ARTIFACT_TABLE_COLUMNS}
    per_stack: dict[str, list[np.ndarray]] = {}
    new_stacks: list[tuple[str, tuple[int, int], np.dtype, float | None]] = []
    for i, r in enumerate(batch):
        meta = r.frame.meta
        labels = np.asarray(r.labels)
        if labels.size == 0:  # nothing segmented: no mask stored, export writes zeros
            stack, index = "", -1
            height, width = r.frame.pixels.shape[-2:]
        else:
            dtype = label_dtype(labels, meta.source)
            height, width = labels.shape
            stack = stack_name((height, width), dtype)
            if stack not in stacks and stack not in per_stack:
                new_stacks.append((stack, (height, width), dtype, meta.pixel_size_um))
            masks = per_stack.setdefault(stack, [])
            index = (stacks[stack].committed if stack in stacks else 0) + len(masks)
            masks.append(labels.astype(dtype, copy=False))
        f["identity"].append(r.frame.identity)
        f["source"].append(meta.source)
        f["plate"].append(meta.plate)
        f["well"].append(meta.well)
        f["field"].append(meta.field)
        f["channel"].append(meta.channel)
        f["plane"].append(meta.plane)
        pixel_size = meta.pixel_size_um
        f["pixel_size_um"].append(math.nan if pixel_size is None else pixel_size)
        f["acquired_at"].append(meta.acquired_at)
        f["height"].append(height)
        f["width"].append(width)
        f["score"].append(r.score)
        f["flagged"].append(bool(r.flagged))
        f["area_fraction"].append(r.area_fraction)
        f["n_artifacts"].append(r.n_artifacts)
        f["unfamiliarity"].append(r.unfamiliarity)
        f["processed_at"].append(r.processed_at)
        f["mask_stack"].append(stack)
        f["mask_index"].append(index)
        thumb_stack, thumb_index = thumbnails.place(thumbs, r.thumbnail, pixel_size)
        f["thumbnail_stack"].append(thumb_stack)
        f["thumbnail_index"].append(thumb_index)
        _artifact_rows(art, r, first_row + i)

    frame_cols = {
        name: np.array(f[name], dtype=numpy_dtype(dtype)) for name, dtype in FRAME_COLUMNS.items()
    }
    art_cols = {
        name: np.concatenate(art[name]) if art[name] else np.empty(0, numpy_dtype(dtype))
        for name, dtype in ARTIFACT_TABLE_COLUMNS.items()
    }
    return BatchRows(frame_cols, art_cols, per_stack, new_stacks, thumbs)


def _artifact_rows(art: dict[str, list[np.ndarray]], r: FrameResult, frame_row: int) -> None:
    """Add one frame's artifacts (one row each) to the artifact columns being built."""
    meta = r.frame.meta
    lengths = {np.atleast_1d(np.asarray(v)).shape[0] for v in r.artifacts.values()}
    if len(lengths) > 1:
        raise ValueError(f"{meta.source}: artifact columns differ in length {lengths}")
    k = lengths.pop() if lengths else 0
    if not k:
        return
    art["identity"].append(np.full(k, r.frame.identity, dtype=object))
    art["source"].append(np.full(k, meta.source, dtype=object))
    art["frame_row"].append(np.full(k, frame_row, dtype=np.int64))
    for name in (*ARTIFACT_COLUMNS, STATIONARY):
        dtype = ARTIFACT_TABLE_COLUMNS[name]
        if name not in r.artifacts:
            art[name].append(np.full(k, fill(dtype), dtype=dtype))
            continue
        values = np.atleast_1d(np.asarray(r.artifacts[name]))
        if np.dtype(dtype).kind == "i" and values.dtype.kind == "f":
            values = np.rint(np.nan_to_num(values, nan=-1))
        art[name].append(values.astype(dtype))


def failure_rows(failures: Sequence[FrameFailure], now: str) -> dict[str, np.ndarray]:
    return {
        "source": np.array([f.source for f in failures], dtype=object),
        "reason": np.array([f.reason for f in failures], dtype=object),
        "message": np.array([f.message for f in failures], dtype=object),
        "failed_at": np.array([now] * len(failures), dtype=object),
    }


def correction_rows(corrections: Sequence[Correction], now: str) -> dict[str, np.ndarray]:
    return {
        "identity": np.array([c.identity for c in corrections], dtype=object),
        "source": np.array([c.source for c in corrections], dtype=object),
        "frame_row": np.array([c.frame_row for c in corrections], dtype=np.int64),
        "label": np.array([c.label for c in corrections], dtype=object),
        "by": np.array([c.by for c in corrections], dtype=object),
        "at": np.array([c.at or now for c in corrections], dtype=object),
    }
