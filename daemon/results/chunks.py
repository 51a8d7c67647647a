"""How an append's chunks are written: encoded here with the codecs the arrays declare,
patched in place for uncompressed numbers, or through zarr for any other layout.

Speed: an append touches one chunk of each column and one chunk per frame. zarr manages the
metadata (shapes) and every read, but the chunks an append writes are encoded here with the
codecs the arrays declare (bytes, vlen-utf8, zstd: checked when the store opens; zarr writes any
other layout), because zarr's per-chunk pipeline costs about 1.5 ms a column, several times the
encoding itself. Tests read everything back through zarr and ome-zarr. The few zarr internals
this needs (one event-loop call per append, chunk keys) are wrapped in
daemon.results.zarr_internals, for the zarr releases pyproject pins.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import numcodecs
import numpy as np
from zarr.codecs import BytesCodec, VLenUTF8Codec, ZstdCodec

from daemon.results.durable import DurableLocalStore, Patch
from daemon.results.reads import gather
from daemon.results.schema import STR, Column, Stack, fill
from daemon.results.zarr_internals import async_group, chunk_key, fill_value, run


def as_async(arr: Any) -> Any:
    """The AsyncArray behind a zarr.Array: an append runs all its writes in one loop call.

    write_empty_chunks=True: otherwise zarr compares every chunk with the fill value before
    writing it (several ms per 1080x1080 mask); an all-zero mask compresses to ~100 bytes.
    """
    return arr.async_array.with_config({"write_empty_chunks": True})


def create_column(
    group: Any, name: str, dtype: Any, chunks: tuple[int, int], length: int
) -> Any:
    return group.create_array(
        name,
        shape=(length,),
        chunks=(chunks[1] if dtype is STR else chunks[0],),
        dtype=str if dtype is STR else dtype,
        fill_value=fill(dtype),
        overwrite=True,
        # Strings: zstd (they repeat a lot). Numbers: uncompressed, so that an append patches
        # their chunk files in place (see daemon.results.durable.patch_file).
        **({} if dtype is STR else {"compressors": None}),
    )


def _little_endian(codec: Any) -> bool:
    """The `bytes` codec, little-endian (or single-byte values, where endianness is moot)."""
    if not isinstance(codec, BytesCodec):
        return False
    return codec.endian is None or codec.endian.value == "little"


def _codec_chain(arr: Any) -> tuple[Any, ...]:
    """Every codec of an array in order: filters, serializer, compressors (public API)."""
    return (*arr.filters, *([arr.serializer] if arr.serializer is not None else []),
            *arr.compressors)


def chunk_encoder(arr: Any) -> Any:
    """For a label stack stored as one (1, y, x) chunk per frame with the codecs [bytes, zstd]:
    the numcodecs Zstd that encodes a chunk exactly as zarr does (zarr's ZstdCodec wraps it),
    so an append encodes its masks in parallel without zarr's per-chunk overhead (~3 ms per
    1080x1080 frame). None for any other layout: zarr writes those."""
    codecs = _codec_chain(arr)
    if (
        len(codecs) != 2
        or not _little_endian(codecs[0])
        or not isinstance(codecs[1], ZstdCodec)
        or tuple(arr.chunks) != (1, *arr.shape[1:])
        or chunk_key(arr, (5, 0, 0)) != "c/5/0/0"
    ):
        return None
    return numcodecs.Zstd(level=codecs[1].level, checksum=codecs[1].checksum)


def string_codecs(arr: Any) -> tuple[Any, Any] | None:
    """For a 1-D string column with the codecs [vlen-utf8, zstd]: the numcodecs pair that
    encodes a chunk exactly as zarr does (zarr's codecs wrap these), so an append re-encodes
    its chunks directly (~0.1 ms a column instead of ~1.5 ms through zarr's pipeline). None for
    any other layout: zarr writes those."""
    codecs = _codec_chain(arr)
    if (
        arr.ndim != 1
        or len(codecs) != 2
        or not isinstance(codecs[0], VLenUTF8Codec)
        or not isinstance(codecs[1], ZstdCodec)
        or chunk_key(arr, (7,)) != "c/7"
    ):
        return None
    return numcodecs.VLenUTF8(), numcodecs.Zstd(level=codecs[1].level, checksum=codecs[1].checksum)


def stage_strings(store: DurableLocalStore, col: Column, start: int, data: np.ndarray) -> None:
    """Put `data` at rows start.. of a string column: each chunk touched is decoded, updated,
    re-encoded and staged."""
    vlen, zstd = col.strings  # type: ignore[misc]
    arr = col.array
    step = arr.chunks[0]
    end = start + len(data)
    row = start
    while row < end:
        chunk = row // step
        stop = min(end, (chunk + 1) * step)
        key = f"{col.key}/{chunk_key(arr, (chunk,))}"
        old = store.current(key)
        if old is None:
            values = np.full(step, fill_value(arr), dtype=object)
        else:
            values = vlen.decode(zstd.decode(old))
            if len(values) != step:
                raise ValueError(f"{key}: holds {len(values)} strings, expected {step}")
        values[row - chunk * step : stop - chunk * step] = data[row - start : stop - start]
        store.stage_bytes(key, zstd.encode(vlen.encode(values)))
        row = stop


def patchable(arr: Any) -> bool:
    """An uncompressed fixed-width 1-D column whose chunk files can be patched in place."""
    codecs = _codec_chain(arr)
    return (
        arr.ndim == 1
        and len(codecs) == 1
        and _little_endian(codecs[0])
        and np.dtype(arr.dtype).kind in "biuf"
        and chunk_key(arr, (7,)) == "c/7"
    )


def patches(col: Column, arr: Any, start: int, data: np.ndarray) -> list[Patch]:
    """The in-place writes that put `data` at rows start.. of a patchable column."""
    step = arr.chunks[0]
    dtype = np.dtype(arr.dtype).newbyteorder("<")
    values = np.ascontiguousarray(data, dtype=dtype)
    fill_bytes = np.asarray(fill_value(arr), dtype=dtype).tobytes()
    out = []
    row = start
    end = start + len(values)
    while row < end:
        chunk = row // step
        stop = min(end, (chunk + 1) * step)
        out.append(
            Patch(
                path=col.folder / str(chunk),  # type: ignore[operator]
                offset=(row - chunk * step) * dtype.itemsize,
                data=values[row - start : stop - start].tobytes(),
                chunk_bytes=step * dtype.itemsize,
                fill=fill_bytes,
            )
        )
        row = stop
    return out


async def write_column(store: DurableLocalStore, col: Column, start: int,
                       data: np.ndarray) -> None:
    """Put `data` at rows start.. of a table column, staged in `store`."""
    end = start + len(data)
    arr = col.array
    if arr.shape[0] < end:  # grow a whole chunk at a time
        step = arr.chunks[0]
        await arr.resize((-(-end // step) * step,))
    if col.folder is not None:
        store.patches.extend(patches(col, arr, start, data))
    elif col.strings is not None:
        stage_strings(store, col, start, data)
    else:
        await arr.setitem(slice(start, end), data)


async def write_masks(store: DurableLocalStore, stack: Stack, start: int,
                      masks: list[np.ndarray]) -> None:
    """Put `masks` at t = start.. of a mask stack, staged in `store`."""
    end = start + len(masks)
    for arr in (stack.labels, stack.image):  # exactly as long as committed
        if arr.shape[0] != end:
            await arr.resize((end, *arr.shape[1:]))
    encoder = chunk_encoder(stack.labels)
    if encoder is None:
        await stack.labels.setitem(slice(start, end), np.stack(masks))
        return

    async def encode(t: int, mask: np.ndarray) -> None:
        dtype = np.dtype(stack.labels.dtype).newbyteorder("<")
        chunk = await asyncio.to_thread(encoder.encode, np.ascontiguousarray(mask, dtype))
        key = chunk_key(stack.labels, (t, 0, 0))
        store.stage_bytes(f"{stack.labels_key}/{key}", bytes(chunk))

    await asyncio.gather(*(encode(start + i, m) for i, m in enumerate(masks)))


def land(store: DurableLocalStore, root: Any, writes: list[tuple], plan: list[Coroutine],
         committed: dict[str, Any]) -> None:
    """Stage every write (a table column's rows or a stack's masks, plus the coroutines of
    `plan`) and the new committed counts, then land them: the root zarr.json last.
    Raises CommittedButNotSynced when only the barrier after the commit failed."""
    plan = [*(write_column(store, *w) if isinstance(w[0], Column) else write_masks(store, *w)
              for w in writes), *plan]
    # Staged like the rest; flush() lands the root zarr.json after everything else.
    plan.append(async_group(root).update_attributes({"committed": committed}))
    store.stage()
    try:
        run(gather(plan))
        store.flush(last="zarr.json")
    finally:
        store.discard()
