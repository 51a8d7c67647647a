"""Reading committed rows back: whole columns, single cells, and values as plain Python.

Only rows below the committed count are ever read; a column an older store lacks reads as its
fill value."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from daemon.results.schema import Column, Stack, StoreError, fill, numpy_dtype, why
from daemon.results.thumbnails import Thumbnail, ThumbnailStacks
from daemon.results.zarr_internals import run


async def read_column(col: Column, n: int) -> np.ndarray:
    """The first `n` rows of a column (strings as an object array)."""
    out_dtype = numpy_dtype(col.dtype)
    if n == 0:
        return np.empty(0, dtype=out_dtype)
    if col.array is None:
        return np.full(n, fill(col.dtype), dtype=out_dtype)
    values = await col.array.getitem(slice(0, n))
    return np.asarray(values).astype(out_dtype)


async def read_cell(col: Column, row: int) -> Any:
    if col.array is None:
        return fill(col.dtype)
    return np.asarray(await col.array.getitem(slice(row, row + 1)))[0]


async def gather(coros: Iterable[Any]) -> list[Any]:
    """Run all; wait for every one even when some fail; then raise the first failure."""
    results = await asyncio.gather(*coros, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


def plain(value: Any) -> Any:
    """A numpy scalar as the Python value it holds."""
    return value.item() if isinstance(value, np.generic) else value


def jsonable(value: Any) -> Any:
    """Through JSON and back: tuples, Paths and numpy scalars become plain JSON values."""

    def default(obj: Any) -> Any:
        return obj.item() if isinstance(obj, np.generic) else str(obj)

    return json.loads(json.dumps(value, default=default))


def read_table(path: Path, table: str, columns: dict[str, Column], n: int) -> dict[str, np.ndarray]:
    """The first `n` rows of every column given."""
    try:
        values = run(gather([read_column(col, n) for col in columns.values()]))
    except Exception as exc:
        raise StoreError(f"results store {path}: cannot read {table} ({why(exc)})") from exc
    return dict(zip(columns, values, strict=True))


def row_values(path: Path, table: str, columns: dict[str, Column], row: int,
               names: Sequence[str]) -> dict[str, Any]:
    """The cells of one row, by column name, as plain Python values."""
    try:
        values = run(gather([read_cell(columns[name], row) for name in names]))
    except Exception as exc:
        raise StoreError(
            f"results store {path}: cannot read row {row} of {table} ({why(exc)})"
        ) from exc
    return {name: plain(value) for name, value in zip(names, values, strict=True)}


def read_mask(path: Path, frames: dict[str, Column], stacks: dict[str, Stack],
              row: int) -> np.ndarray:
    """The label mask of a committed frame row (zeros of the frame's shape when none)."""
    try:
        name, index, height, width = (
            plain(v) for v in run(gather(read_cell(frames[c], row) for c in
                                         ("mask_stack", "mask_index", "height", "width")))
        )
        if not name or index < 0:
            return np.zeros((int(height), int(width)), dtype=np.uint16)
        return np.asarray(run(stacks[name].labels.getitem(index)))
    except Exception as exc:
        raise StoreError(
            f"results store {path}: cannot read the mask of row {row} ({why(exc)})"
        ) from exc


def read_thumbnail(path: Path, frames: dict[str, Column], thumbnails: ThumbnailStacks,
                   row: int, n: int) -> Thumbnail | None:
    """The thumbnail of a committed frame row; None when it has none. The first call reads
    where every row's thumbnail is (n rows); appends keep that list up to date."""
    try:
        if thumbnails.refs is None:
            stacks, indices = run(gather([read_column(frames["thumbnail_stack"], n),
                                          read_column(frames["thumbnail_index"], n)]))
            thumbnails.refs = ([str(s) for s in stacks], [int(i) for i in indices])
        return thumbnails.read(row)
    except Exception as exc:
        raise StoreError(
            f"results store {path}: cannot read the thumbnail of row {row} ({why(exc)})"
        ) from exc
