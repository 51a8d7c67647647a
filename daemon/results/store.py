"""The results store: one zarr v3 folder holding every processed frame's masks and measurements.

Layout (paths relative to the store folder)::

    zarr.json                         root group; attributes:
                                        artifactd          version, layout, models, config ...
                                        artifactd_history  earlier settings, when they changed
                                        committed          rows per table, frames per stack
    frames/<column>                   the frame table: one 1-D array per column
    artifacts/<column>                the artifact table: one row per artifact
    failures/<column>                 frames that could not be processed
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
hang the labels on.

Committed counts, crashes and exactly-once
------------------------------------------
zarr grows an array's shape before its data lands, so the shapes are not the truth: the root
attribute `committed` is. It counts the rows of each table and the frames of each stack and is
written last, after the data. Readers read only rows below it. While a writer has the store open
the table columns grow a chunk at a time, so they are usually longer than the committed count;
rows past it are not part of the table. Opening for writing (and closing) cuts every array back
to the committed count, which also discards the rows of an append that a crash interrupted.

`append()` skips results whose identity the store already holds: a frame replayed after a crash
between the store write and the journal commit is not stored twice. The identities are looked up
in an index on disk beside the identity column (daemon.results.identity_index), not held in memory, so a
long-running service stays at the same size; the index is rebuilt from the column when it lags
or is lost.

Durability
----------
`append()` and `record_failures()` return once their rows are on disk. All writes of an append
are staged in memory and landed together:

1. new file contents are written: a temporary file per changed file; numeric columns, which are
   stored uncompressed, are patched in place instead (the bytes of committed rows never change,
   so a torn write can only damage rows past the committed count);
2. barrier; the temporary files are renamed over their targets (atomic: old or new, never torn);
3. barrier; the root zarr.json holding the new committed counts is renamed into place;
4. barrier.

A barrier is one syncfs(2) of the store's filesystem on Linux (one call instead of an fsync per
file; note it also flushes other writers on that filesystem), else an fsync of every file and
folder involved. With `fsync=False` the barriers are skipped: still atomic and ordered, so safe
when the process dies, but the last appends can be lost on power loss.

Speed: an append touches one chunk of each column and one chunk per frame. zarr manages the
metadata (shapes) and every read, but the chunks an append writes are encoded here with the
codecs the arrays declare (bytes, vlen-utf8, zstd: checked when the store opens; zarr writes any
other layout), because zarr's per-chunk pipeline costs about 1.5 ms a column, several times the
encoding itself. Tests read everything back through zarr and ome-zarr. The few zarr internals
this needs (one event-loop call per append, chunk keys) are wrapped in daemon.results.zarr_internals,
for the zarr releases pyproject pins.

Only one process may write a store: the writer holds an exclusive flock on the store folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import fcntl
import json
import logging
import math
import os
import sqlite3
import sys
import threading
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import zarr
from zarr.abc.buffer import Buffer
from zarr.abc.store import OffsetByteRequest, RangeByteRequest, SuffixByteRequest
from zarr.buffer import default_buffer_prototype
from zarr.codecs import BytesCodec, VLenUTF8Codec, ZstdCodec
from zarr.storage import LocalStore

from daemon.results.corrections import Correction
from daemon.frames import ARTIFACT_COLUMNS, STATIONARY, FrameFailure, FrameResult
from daemon.results.identity_index import FILE_NAME as INDEX_FILE
from daemon.results.identity_index import IdentityIndex
from daemon.results.thumbnails import Thumbnail, ThumbnailBatch, ThumbnailStacks
from daemon.results.zarr_internals import async_group, chunk_key, fill_value, run
from engines import __version__
from engines.timestamps import timestamp

logger = logging.getLogger(__name__)

LAYOUT_VERSION = 1
NGFF_VERSION = "0.5"
LABEL_NAME = "artifacts"

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

_AXES = [
    {"name": "t", "type": "time"},
    {"name": "y", "type": "space"},
    {"name": "x", "type": "space"},
]


# What a re-sent frame is answered with (ResultsStore.stored_verdicts).
VERDICT_COLUMNS = ("identity", "score", "flagged", "area_fraction", "n_artifacts", "processed_at")


class StoreError(RuntimeError):
    """The results store cannot be opened, read or written; the message names its path."""


# --------------------------------------------------------------------------------------------
# A LocalStore that stages an append in memory and lands it durably


def _syncfs_function() -> Any:
    """libc syncfs(2): flush one filesystem with one call (Linux); None where unavailable."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int
    return function


_SYNCFS = _syncfs_function()


@dataclass(slots=True)
class _Patch:
    """Bytes written in place into a chunk file of an uncompressed fixed-width column."""

    path: Path
    offset: int
    data: bytes
    chunk_bytes: int  # size of a whole chunk file
    fill: bytes  # one fill value: a new chunk file is filled with it, then patched


class _CommittedButNotSynced(Exception):
    """The commit record is in place, but the barrier after it failed."""


class _DurableLocalStore(LocalStore):
    """LocalStore with atomic, durable writes and a staging mode for appends.

    Outside staging (creating arrays, trimming) each `set` writes a temporary file, fsyncs it,
    renames it over the key and fsyncs the folder. Between `stage()` and `flush()` writes are
    kept in memory (reads see them) and `flush()` lands them as the module docstring describes.
    """

    def __init__(self, root: Path | str, *, read_only: bool = False, fsync: bool = True) -> None:
        super().__init__(root, read_only=read_only)
        self.fsync = fsync
        self._staged: dict[str, bytes] | None = None
        self.patches: list[_Patch] = []

    def with_read_only(self, read_only: bool = False) -> _DurableLocalStore:
        return type(self)(self.root, read_only=read_only, fsync=self.fsync)

    def stage(self) -> None:
        self._staged = {}
        self.patches = []

    def discard(self) -> None:
        self._staged = None
        self.patches = []

    def current(self, key: str) -> bytes | None:
        """A file's contents as staged, else as on disk; None when it does not exist."""
        if self._staged is not None and key in self._staged:
            return self._staged[key]
        try:
            return (self.root / key).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def stage_bytes(self, key: str, data: bytes) -> None:
        """Stage a file's encoded contents directly (a mask chunk encoded outside zarr)."""
        assert self._staged is not None, "stage_bytes() outside stage()"
        self._staged[key] = data

    def flush(self, last: str) -> None:
        """Land the staged writes and patches; the `last` key (the commit) lands after all."""
        staged, patches = self._staged or {}, self.patches
        self._staged, self.patches = None, []
        commit = staged.pop(last, None)
        moves: list[tuple[Path, Path]] = []
        commit_move: tuple[Path, Path] | None = None
        folders: set[Path] = set()
        done = False
        try:
            for patch in patches:
                folders |= _make_parent(patch.path)
                _patch_file(patch)
            for key, data in staged.items():
                moves.append(self._write_temporary(key, data, folders))
            commit_move = self._write_temporary(last, commit, folders) if commit else None
            self._barrier(
                [p.path for p in patches] + [tmp for tmp, _ in moves]
                + ([commit_move[0]] if commit_move else []),
                folders,
            )
            for tmp, path in moves:
                os.replace(tmp, path)
            self._barrier([], {path.parent for _, path in moves})
            if commit_move:
                os.replace(*commit_move)
                done = True
                try:
                    self._barrier([], {commit_move[1].parent})
                except OSError as exc:
                    raise _CommittedButNotSynced(exc) from exc
        except BaseException:
            if not done:
                for tmp, _path in moves + ([commit_move] if commit_move else []):
                    with contextlib.suppress(OSError):
                        tmp.unlink()
            raise

    def _write_temporary(self, key: str, data: bytes, folders: set[Path]) -> tuple[Path, Path]:
        path = self.root / key
        folders |= _make_parent(path)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
        with open(tmp, "wb") as f:
            f.write(data)
        return tmp, path

    def _barrier(self, files: list[Path], folders: set[Path]) -> None:
        if not self.fsync:
            return
        if _SYNCFS is not None:
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
            try:
                if _SYNCFS(fd) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, os.strerror(err), str(self.root))
            finally:
                os.close(fd)
            return
        for path in files:
            _fsync_path(path)
        for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
            _fsync_path(folder, directory=True)

    # -- the zarr Store interface

    async def get(self, key: str, prototype: Any = None, byte_range: Any = None) -> Buffer | None:
        if self._staged is None:
            return await super().get(key, prototype, byte_range)
        prototype = prototype or default_buffer_prototype()
        if key in self._staged:
            return prototype.buffer.from_bytes(_slice(self._staged[key], byte_range))
        try:  # an append reads a few small chunks: inline, no thread hop
            with open(self.root / key, "rb") as f:
                return prototype.buffer.from_bytes(_slice(f.read(), byte_range))
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    async def exists(self, key: str) -> bool:
        if self._staged is not None and key in self._staged:
            return True
        return await super().exists(key)

    async def set(self, key: str, value: Buffer) -> None:
        self._refuse_if_read_only()
        data = bytes(value.as_buffer_like())
        if self._staged is not None:
            self._staged[key] = data
        else:
            await asyncio.to_thread(self._write_through, key, data)

    def set_sync(self, key: str, value: Buffer) -> None:
        self._refuse_if_read_only()
        self._write_through(key, bytes(value.as_buffer_like()))

    def _refuse_if_read_only(self) -> None:
        # Writes go straight to files here (never through LocalStore), so zarr's open state
        # does not matter; only the read-only flag does.
        if self.read_only:
            raise ValueError(f"{self.root}: opened read-only; cannot write")

    async def delete(self, key: str) -> None:
        if self._staged is not None:
            self._staged.pop(key, None)
        await super().delete(key)

    def _write_through(self, key: str, data: bytes) -> None:
        folders: set[Path] = set()
        tmp, path = self._write_temporary(key, data, folders)
        try:
            if self.fsync:
                _fsync_path(tmp)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        if self.fsync:
            for folder in sorted(folders | {path.parent}, key=lambda p: len(p.parts), reverse=True):
                _fsync_path(folder, directory=True)


def _patch_file(patch: _Patch) -> None:
    """Write rows into a chunk file in place (no rename: ~0.2-2 ms saved per column on ext4).

    Safe because an append never changes committed rows: it writes only the bytes of new rows,
    at their offsets, so a crash half-way can only leave rows past the committed count torn.
    """
    fd = os.open(patch.path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        data, offset = patch.data, patch.offset
        if os.fstat(fd).st_size < patch.chunk_bytes:
            # A new chunk, or one whose creation a failed append cut short (a chunk holding
            # committed rows is always whole): write all of it, fill values around the rows.
            whole = bytearray(patch.fill * (patch.chunk_bytes // len(patch.fill)))
            whole[patch.offset : patch.offset + len(patch.data)] = patch.data
            data, offset = bytes(whole), 0
        view = memoryview(data)
        done = 0
        while done < len(view):
            done += os.pwrite(fd, view[done:], offset + done)
    finally:
        os.close(fd)


def _fsync_path(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_parent(path: Path) -> set[Path]:
    """Create path's folder; returns the folders that gained an entry (to fsync)."""
    parent = path.parent
    if parent.is_dir():
        return set()
    gained = set()
    probe = parent
    while not probe.is_dir():
        gained.add(probe.parent)
        probe = probe.parent
    parent.mkdir(parents=True, exist_ok=True)
    return gained


def _slice(data: bytes, byte_range: Any) -> bytes:
    if byte_range is None:
        return data
    if isinstance(byte_range, RangeByteRequest):
        return data[byte_range.start : byte_range.end]
    if isinstance(byte_range, OffsetByteRequest):
        return data[byte_range.offset :]
    if isinstance(byte_range, SuffixByteRequest):
        return data[max(0, len(data) - byte_range.suffix) :]
    raise TypeError(f"unexpected byte range {byte_range!r}")


# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Column:
    key: str  # "frames/score"
    array: Any  # zarr AsyncArray, None for a column an older store lacks (read-only)
    dtype: Any  # numpy dtype, or STR
    folder: Path | None  # chunk folder when appends patch the chunk files in place
    strings: tuple[Any, Any] | None  # numcodecs (VLenUTF8, Zstd) when appends encode chunks


@dataclass(slots=True)
class _Stack:
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


class ResultsStore:
    """Create or open a results store; see the module docstring for layout and guarantees.

    attributes: recorded under the root attribute "artifactd" along with the artifactd version,
        typically {"models": {...}, "config": {...}}. When they differ from what an existing
        store holds, the old ones move to "artifactd_history" with the frame count they covered.
    read_only: open an existing store to read it: no lock, no trimming, no writes.
    fsync: make every append durable before it returns (see the module docstring).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        attributes: dict | None = None,
        read_only: bool = False,
        fsync: bool = True,
    ) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self._lock = threading.RLock()
        self._lock_fd: int | None = None
        self._closed = False
        self._index: IdentityIndex | None = None  # set by _load
        self._stale = False  # True after a failed write until the arrays are re-read from disk
        self._stale_reason = ""
        try:
            if read_only:
                self._open_read_only()
            else:
                self._open_writable(attributes, fsync)
        except StoreError:
            self._release_lock()
            raise
        except Exception as exc:
            self._release_lock()
            raise StoreError(f"results store {self.path}: cannot open it ({_why(exc)})") from exc

    # ---------------------------------------------------------------- opening

    def _open_read_only(self) -> None:
        if not self.path.exists():
            raise StoreError(f"results store {self.path}: not found")
        if not (self.path / "zarr.json").is_file():
            raise StoreError(f"{self.path}: not a results store (no zarr.json in it)")
        self._store = _DurableLocalStore(self.path, read_only=True, fsync=False)
        try:
            self._root = zarr.open_group(store=self._store, mode="r", zarr_format=3)
        except Exception as exc:
            raise StoreError(f"{self.path}: not a readable zarr v3 store ({_why(exc)})") from exc
        self._load(writer=False)

    def _open_writable(self, attributes: dict | None, fsync: bool) -> None:
        path = self.path
        if path.exists() and not path.is_dir():
            raise StoreError(f"results store {path}: exists and is not a folder")
        if path.is_dir() and any(path.iterdir()) and not (path / "zarr.json").is_file():
            raise StoreError(
                f"results store {path}: the folder is not empty and holds no zarr store; "
                "refusing to write into it"
            )
        try:
            path.mkdir(parents=True, exist_ok=True)
            self._take_lock()
            # Temporary files of an append cut short by a crash; only a writer makes them, and
            # this one holds the lock, so none of them is in use.
            for leftover in path.rglob(".*.partial"):
                leftover.unlink()
        except OSError as exc:
            raise StoreError(f"results store {path}: cannot create it ({_why(exc)})") from exc
        self._store = _DurableLocalStore(path, fsync=fsync)
        try:
            self._root = zarr.open_group(store=self._store, mode="a", zarr_format=3)
        except OSError:
            raise
        except Exception as exc:
            raise StoreError(f"{path}: not a zarr v3 store ({_why(exc)})") from exc
        attrs = self._root.attrs.asdict()
        if "artifactd" not in attrs:
            if attrs or not self._empty_layout():
                raise StoreError(f"{path}: a zarr store, but not an artifactd results store")
            self._initialise(attributes or {})
        elif attributes is not None:
            self._record_settings(attrs, attributes)
        self._load(writer=True)

    def _empty_layout(self) -> bool:
        """Nothing, or the empty tables of a creation cut short before the root attributes."""
        members = dict(self._root.members(max_depth=None))
        for name, node in members.items():
            top = name.split("/")[0]
            if top not in (*TABLES, "masks") or (top == "masks" and name != "masks"):
                return False
            if isinstance(node, zarr.Array) and node.shape != (0,):
                return False
        if members:
            logger.warning("%s: completing a store whose creation was interrupted", self.path)
        return True

    def _take_lock(self) -> None:
        fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreError(
                f"results store {self.path}: another writer (process or ResultsStore) has it open"
            ) from None
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd = None

    @staticmethod
    def _settings(attributes: dict) -> dict:
        return _jsonable({**attributes, "version": __version__, "layout": LAYOUT_VERSION})

    def _initialise(self, attributes: dict) -> None:
        """Create the tables; the root attributes land last, so a store is complete or not."""
        settings = self._settings(attributes)
        settings["created_at"] = _now()
        self._store.stage()
        try:
            for table, (columns, chunk) in TABLES.items():
                group = self._root.require_group(table)
                for name, dtype in columns.items():
                    _create_column(group, name, dtype, chunk, 0)
            self._root.require_group("masks")
            self._root.attrs.update(
                {
                    "artifactd": settings,
                    "committed": {"frames": 0, "artifacts": 0, "failures": 0, "stacks": {}},
                }
            )
            self._store.flush(last="zarr.json")
        finally:
            self._store.discard()

    def _record_settings(self, attrs: dict, attributes: dict) -> None:
        old = dict(attrs["artifactd"])
        new = self._settings(attributes)
        if {k: v for k, v in old.items() if k not in ("created_at", "changed_at")} == new:
            return
        history = [*attrs.get("artifactd_history", []), {
            **old, "frames_before": int(attrs.get("committed", {}).get("frames", 0))
        }]
        new["created_at"] = old.get("created_at", _now())
        new["changed_at"] = _now()
        self._root.attrs.update({"artifactd": new, "artifactd_history": history})

    def _load(self, *, writer: bool) -> None:
        """Read the committed counts and open every array; a writer also trims them."""
        attrs = self._root.attrs.asdict()
        if "artifactd" not in attrs or "committed" not in attrs:
            raise StoreError(f"{self.path}: not an artifactd results store")
        layout = int(attrs["artifactd"].get("layout", 0))
        if layout > LAYOUT_VERSION:
            raise StoreError(
                f"{self.path}: written by a newer artifactd (store layout {layout}; this "
                f"version reads up to {LAYOUT_VERSION})"
            )
        committed = attrs["committed"]
        self._counts = {table: int(committed.get(table, 0)) for table in TABLES}
        stack_counts = {k: int(v) for k, v in committed.get("stacks", {}).items()}
        self.attributes: dict = dict(attrs["artifactd"])
        self.history: list[dict] = list(attrs.get("artifactd_history", []))

        self._columns: dict[str, dict[str, _Column]] = {}
        for table, (columns, chunk) in TABLES.items():
            # A table an older store lacks reads as empty (a writer adds it).
            group = self._root.require_group(table) if writer else self._root.get(table)
            present = set(group.array_keys()) if group is not None else set()
            self._columns[table] = {}
            for name, dtype in columns.items():
                if name not in present:
                    if not writer:  # a column an older store lacks: fill values for readers
                        self._columns[table][name] = _Column(
                            f"{table}/{name}", None, dtype, None, None
                        )
                        continue
                    _create_column(group, name, dtype, chunk, self._counts[table])
                    logger.info("%s: added column %s/%s", self.path, table, name)
                arr = _async(group[name])
                if arr.shape[0] < self._counts[table]:
                    raise StoreError(
                        f"{self.path}: {table}/{name} holds {arr.shape[0]} rows, fewer than the "
                        f"{self._counts[table]} committed: the store is damaged"
                    )
                folder = self.path / table / name / "c" if _patchable(arr) else None
                self._columns[table][name] = _Column(
                    f"{table}/{name}", arr, dtype, folder, _string_codecs(arr)
                )

        self._stacks: dict[str, _Stack] = {}
        masks = self._root.require_group("masks") if writer else self._root["masks"]
        for name in sorted(masks.group_keys()):
            try:
                labels = _async(masks[f"{name}/labels/{LABEL_NAME}/0"])
                image = _async(masks[f"{name}/0"])
            except KeyError:
                if name in stack_counts:
                    raise StoreError(f"{self.path}: mask stack {name} is damaged") from None
                if writer:  # created by an append that did not commit
                    logger.warning("%s: removing incomplete mask stack %s", self.path, name)
                    del masks[name]
                continue
            stack = _Stack(name, labels, image, stack_counts.get(name, 0))
            if labels.shape[0] < stack.committed:
                raise StoreError(
                    f"{self.path}: mask stack {name} holds {labels.shape[0]} frames, fewer than "
                    f"the {stack.committed} committed: the store is damaged"
                )
            self._stacks[name] = stack
        missing = set(stack_counts) - set(self._stacks)
        if missing:
            raise StoreError(f"{self.path}: committed mask stacks are missing: {sorted(missing)}")
        self._thumbnails = ThumbnailStacks(self.path, _chunk_encoder)
        self._thumbnails.load(
            self._root, {k: int(v) for k, v in committed.get("thumbnails", {}).items()},
            writer=writer,
        )
        if writer:  # rows past the committed counts belong to an append that did not finish
            self._trim()

        # Readers must not write into the store, so theirs is built in memory when first asked.
        if writer:
            self._index = IdentityIndex(self.path / "frames" / "identity" / INDEX_FILE)
            self._index_catch_up()

    def _identity_index(self) -> IdentityIndex:
        """The index of stored identities, level with the committed frames."""
        if self._index is None:
            self._index = IdentityIndex(None)
        if self._index.rows != self._counts["frames"]:
            self._index_catch_up()
        return self._index

    def _index_catch_up(self) -> None:
        column = self._columns["frames"]["identity"].array

        def read_rows(start: int, stop: int) -> list[str]:
            return [str(v) for v in run(column.getitem(slice(start, stop)))]

        assert self._index is not None
        self._index.catch_up(self._counts["frames"], read_rows)

    # ---------------------------------------------------------------- writing

    def append(self, results: Sequence[FrameResult]) -> list[str]:
        """Store the results it does not hold yet; durable when it returns.

        Returns the identities written, in order. A result whose identity is committed (or
        repeated in the batch) is skipped. Raises StoreError when the store cannot be written
        (disk full, not writable): nothing of that append is counted, the store stays as it was.
        Raises ValueError for a malformed result, before anything is written.
        """
        self._check_writable()
        with self._lock:
            batch: list[FrameResult] = []
            seen = set(self._identity_index().rows_of(r.frame.identity for r in results))
            for result in results:
                identity = result.frame.identity
                if identity not in seen:
                    seen.add(identity)
                    batch.append(result)
            if not batch:
                return []
            frame_cols, art_cols, stack_writes, new_stacks, thumbs = self._build(batch)
            self._recover()
            counts = dict(self._counts)
            stack_counts = {name: s.committed for name, s in self._stacks.items()}
            n_art = len(art_cols["identity"])
            try:
                for name, shape, dtype, pixel_size_um in new_stacks:
                    self._create_stack(name, shape, dtype, pixel_size_um)
                    stack_counts[name] = 0
                self._thumbnails.create(self._root, thumbs)
                writes = self._column_writes("frames", frame_cols)
                if n_art:
                    writes += self._column_writes("artifacts", art_cols)
                for name, masks in stack_writes.items():
                    stack = self._stacks[name]
                    writes.append((stack, stack.committed, masks))
                    stack_counts[name] += len(masks)
                counts["frames"] += len(batch)
                counts["artifacts"] += n_art
                self._write_and_commit(writes, counts, stack_counts, thumbs)
            except Exception as exc:
                self._stale = True
                self._rollback()
                raise StoreError(
                    f"results store {self.path}: cannot append frames ({_why(exc)})"
                ) from exc
            self._thumbnails.landed(thumbs, ([str(s) for s in frame_cols["thumbnail_stack"]],
                                             [int(i) for i in frame_cols["thumbnail_index"]]))
            self._counts = counts
            for name, n in stack_counts.items():
                self._stacks[name].committed = n
            identities = [str(i) for i in frame_cols["identity"]]
            self._index_stored(identities, counts["frames"] - len(batch))
            return identities

    def _index_stored(self, identities: list[str], first_row: int) -> None:
        """The frames are committed; the index follows (it catches up later if this fails)."""
        assert self._index is not None
        try:
            self._index.add(identities, first_row)
        except sqlite3.Error as exc:
            logger.warning("%s: identity index not updated (%s); it is caught up from the "
                           "identity column before the next lookup", self.path, exc)

    def record_failures(self, failures: Sequence[FrameFailure]) -> None:
        """Append frames that could not be processed to the failure table; durable."""
        self._check_writable()
        if not failures:
            return
        with self._lock:
            now = _now()
            cols = {
                "source": np.array([f.source for f in failures], dtype=object),
                "reason": np.array([f.reason for f in failures], dtype=object),
                "message": np.array([f.message for f in failures], dtype=object),
                "failed_at": np.array([now] * len(failures), dtype=object),
            }
            self._recover()
            counts = dict(self._counts)
            counts["failures"] += len(failures)
            stack_counts = {name: s.committed for name, s in self._stacks.items()}
            try:
                self._write_and_commit(self._column_writes("failures", cols), counts, stack_counts)
            except Exception as exc:
                self._stale = True
                self._rollback()
                raise StoreError(
                    f"results store {self.path}: cannot record failures ({_why(exc)})"
                ) from exc
            self._counts = counts

    def record_corrections(self, corrections: Sequence[Correction]) -> None:
        """Append operator corrections (daemon.results.corrections) to their table; durable. Each must
        name a committed frame row and that row's identity."""
        self._check_writable()
        if not corrections:
            return
        with self._lock:
            identities = self._columns["frames"]["identity"]
            for c in corrections:
                c.check()
                if not 0 <= c.frame_row < self._counts["frames"]:
                    raise ValueError(f"frame row {c.frame_row}: not in the store")
                if str(run(identities.array.getitem(c.frame_row))) != c.identity:
                    raise ValueError(f"frame row {c.frame_row} is not {c.identity}")
            now = _now()
            cols = {
                "identity": np.array([c.identity for c in corrections], dtype=object),
                "source": np.array([c.source for c in corrections], dtype=object),
                "frame_row": np.array([c.frame_row for c in corrections], dtype=np.int64),
                "label": np.array([c.label for c in corrections], dtype=object),
                "by": np.array([c.by for c in corrections], dtype=object),
                "at": np.array([c.at or now for c in corrections], dtype=object),
            }
            self._recover()
            counts = dict(self._counts)
            counts["corrections"] += len(corrections)
            stack_counts = {name: s.committed for name, s in self._stacks.items()}
            try:
                self._write_and_commit(self._column_writes("corrections", cols), counts,
                                       stack_counts)
            except Exception as exc:
                self._stale = True
                self._rollback()
                raise StoreError(
                    f"results store {self.path}: cannot record corrections ({_why(exc)})"
                ) from exc
            self._counts = counts

    def _build(self, batch: list[FrameResult]) -> tuple[dict, dict, dict, list, ThumbnailBatch]:
        """Columns, masks and thumbnails of a batch, all checked before anything is written."""
        first_row = self._counts["frames"]
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
                dtype = _label_dtype(labels, meta.source)
                height, width = labels.shape
                stack = stack_name((height, width), dtype)
                if stack not in self._stacks and stack not in per_stack:
                    new_stacks.append((stack, (height, width), dtype, meta.pixel_size_um))
                masks = per_stack.setdefault(stack, [])
                index = (self._stacks[stack].committed if stack in self._stacks else 0) + len(masks)
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
            thumb_stack, thumb_index = self._thumbnails.place(thumbs, r.thumbnail, pixel_size)
            f["thumbnail_stack"].append(thumb_stack)
            f["thumbnail_index"].append(thumb_index)

            lengths = {np.atleast_1d(np.asarray(v)).shape[0] for v in r.artifacts.values()}
            if len(lengths) > 1:
                raise ValueError(f"{meta.source}: artifact columns differ in length {lengths}")
            k = lengths.pop() if lengths else 0
            if not k:
                continue
            art["identity"].append(np.full(k, r.frame.identity, dtype=object))
            art["source"].append(np.full(k, meta.source, dtype=object))
            art["frame_row"].append(np.full(k, first_row + i, dtype=np.int64))
            for name in (*ARTIFACT_COLUMNS, STATIONARY):
                dtype = ARTIFACT_TABLE_COLUMNS[name]
                if name not in r.artifacts:
                    art[name].append(np.full(k, _fill(dtype), dtype=dtype))
                    continue
                values = np.atleast_1d(np.asarray(r.artifacts[name]))
                if np.dtype(dtype).kind == "i" and values.dtype.kind == "f":
                    values = np.rint(np.nan_to_num(values, nan=-1))
                art[name].append(values.astype(dtype))

        frame_cols = {
            name: np.array(f[name], dtype=_numpy_dtype(dtype))
            for name, dtype in FRAME_COLUMNS.items()
        }
        art_cols = {
            name: np.concatenate(art[name]) if art[name] else np.empty(0, _numpy_dtype(dtype))
            for name, dtype in ARTIFACT_TABLE_COLUMNS.items()
        }
        return frame_cols, art_cols, per_stack, new_stacks, thumbs

    def _column_writes(self, table: str, values: dict[str, np.ndarray]) -> list[tuple]:
        start = self._counts[table]
        return [(col, start, values[name]) for name, col in self._columns[table].items()]

    def _create_stack(self, name: str, shape: tuple[int, int], dtype: np.dtype,
                      pixel_size_um: float | None) -> None:
        height, width = shape
        image_group = self._root["masks"].require_group(name)
        common = {
            "shape": (0, height, width),
            "chunks": (1, height, width),
            "fill_value": 0,
            "dimension_names": ("t", "y", "x"),
            "overwrite": True,
        }
        image = image_group.create_array("0", dtype=np.uint8, **common)
        labels_group = image_group.require_group("labels")
        label_group = labels_group.require_group(LABEL_NAME)
        labels = label_group.create_array("0", dtype=dtype, **common)
        label_group.attrs.update(
            {
                "ome": {
                    "version": NGFF_VERSION,
                    "multiscales": [_multiscale(LABEL_NAME, pixel_size_um)],
                    # No "colors": viewers then give every artifact a colour of their own. A
                    # colour list naming only 0 made napari draw every label transparent.
                    "image-label": {"version": NGFF_VERSION, "source": {"image": "../../"}},
                }
            }
        )
        labels_group.attrs.update({"ome": {"version": NGFF_VERSION, "labels": [LABEL_NAME]}})
        image_group.attrs.update(
            {
                "ome": {"version": NGFF_VERSION,
                        "multiscales": [_multiscale(name, pixel_size_um)]},
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
        self._stacks[name] = _Stack(name, _async(labels), _async(image), 0)

    def _write_and_commit(
        self, writes: list[tuple], counts: dict[str, int], stack_counts: dict[str, int],
        thumbnails: ThumbnailBatch | None = None,
    ) -> None:
        """Stage every write, then land them all and the new committed counts (see flush)."""
        store = self._store

        async def column(col: _Column, start: int, data: np.ndarray) -> None:
            end = start + len(data)
            arr = col.array
            if arr.shape[0] < end:  # grow a whole chunk at a time
                step = arr.chunks[0]
                await arr.resize((-(-end // step) * step,))
            if col.folder is not None:
                store.patches.extend(_patches(col, arr, start, data))
            elif col.strings is not None:
                _stage_strings(store, col, start, data)
            else:
                await arr.setitem(slice(start, end), data)

        async def stack(stack: _Stack, start: int, masks: list[np.ndarray]) -> None:
            end = start + len(masks)
            for arr in (stack.labels, stack.image):  # exactly as long as committed
                if arr.shape[0] != end:
                    await arr.resize((end, *arr.shape[1:]))
            encoder = _chunk_encoder(stack.labels)
            if encoder is None:
                await stack.labels.setitem(slice(start, end), np.stack(masks))
                return

            async def encode(t: int, mask: np.ndarray) -> None:
                dtype = np.dtype(stack.labels.dtype).newbyteorder("<")
                chunk = await asyncio.to_thread(encoder.encode, np.ascontiguousarray(mask, dtype))
                key = chunk_key(stack.labels, (t, 0, 0))
                store.stage_bytes(f"{stack.labels_key}/{key}", bytes(chunk))

            await asyncio.gather(*(encode(start + i, m) for i, m in enumerate(masks)))

        plan = [column(*w) if isinstance(w[0], _Column) else stack(*w) for w in writes]
        if thumbnails is not None:
            plan += self._thumbnails.writes(thumbnails, store.stage_bytes)
        committed = {**counts, "stacks": dict(sorted(stack_counts.items())),
                     "thumbnails": self._thumbnails.counts(thumbnails)}
        # Staged like the rest; flush() lands the root zarr.json after everything else.
        plan.append(async_group(self._root).update_attributes({"committed": committed}))
        store.stage()
        try:
            run(_gather(plan))
            store.flush(last="zarr.json")
        except _CommittedButNotSynced as exc:
            logger.error(
                "%s: committed, but the last fsync failed (%s): this append may not survive a "
                "power loss", self.path, _why(exc.__cause__ or exc),
            )
        finally:
            store.discard()

    def _recover(self) -> None:
        """Before writing again after a failed write: the arrays must be re-read from disk."""
        if self._stale:
            self._rollback()
        if self._stale:
            raise StoreError(
                f"results store {self.path}: cannot write until the last failed write is rolled "
                f"back ({self._stale_reason}); it is retried with every write"
            )

    def _rollback(self) -> None:
        """After a failed write: forget what zarr believes it wrote (the array shapes it staged
        but never landed) by reading every array back from disk, then cut the mask stacks to
        their committed length (table columns may stay longer: rows past the committed count
        are not part of the table)."""
        try:
            self._root = zarr.open_group(store=self._store, mode="r+", zarr_format=3)
            for table, columns in self._columns.items():
                for name, col in columns.items():
                    col.array = _async(self._root[f"{table}/{name}"])
            for stack in self._stacks.values():
                stack.labels = _async(self._root[stack.labels_key])
                stack.image = _async(self._root[f"masks/{stack.name}/0"])
            self._thumbnails.reopen(self._root)
            self._stale = False
            fixes = [
                arr.resize((stack.committed, *arr.shape[1:]))
                for stack in self._stacks.values()
                for arr in (stack.labels, stack.image)
                if arr.shape[0] != stack.committed
            ] + self._thumbnails.cut_to_committed()
            if fixes:
                run(_gather(fixes))
        except Exception as exc:  # e.g. the disk is still full: retried before the next write
            self._stale_reason = _why(exc)
            logger.warning("%s: could not roll back a failed write (%s)", self.path, _why(exc))

    def _trim(self) -> None:
        """Cut every array to its committed length (open and close: exact shapes at rest)."""
        fixes = []
        for table, columns in self._columns.items():
            for col in columns.values():
                if col.array is not None and col.array.shape[0] != self._counts[table]:
                    fixes.append(col.array.resize((self._counts[table],)))
        for stack in self._stacks.values():
            for arr in (stack.labels, stack.image):
                if arr.shape[0] != stack.committed:
                    fixes.append(arr.resize((stack.committed, *arr.shape[1:])))
        fixes += self._thumbnails.cut_to_committed()
        if fixes:
            run(_gather(fixes))

    # ---------------------------------------------------------------- reading

    def has(self, identity: str) -> bool:
        return self.stored_row(identity) is not None

    def stored_row(self, identity: str) -> int | None:
        """The frame-table row holding `identity`, or None when the store does not hold it."""
        self._check_open()
        with self._lock:
            return self._identity_index().row_of(identity)

    def __len__(self) -> int:
        return self._counts["frames"]

    @property
    def counts(self) -> dict[str, int]:
        """Committed rows per table."""
        return dict(self._counts)

    def stacks(self) -> dict[str, int]:
        """Committed frames per mask stack."""
        return {name: s.committed for name, s in self._stacks.items()}

    def frame_table(self) -> dict[str, np.ndarray]:
        """The committed frame rows, one numpy array per column (strings as object arrays)."""
        return self._read_table("frames")

    def artifact_table(self) -> dict[str, np.ndarray]:
        return self._read_table("artifacts")

    def failure_table(self) -> dict[str, np.ndarray]:
        return self._read_table("failures")

    def correction_table(self) -> dict[str, np.ndarray]:
        """Every correction recorded, oldest first (daemon.results.corrections.latest picks per frame)."""
        return self._read_table("corrections")

    def stored_verdicts(self, identities: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The stored verdict of each identity the store holds: score, flagged, area_fraction,
        n_artifacts, processed_at. One index lookup and one row read per identity."""
        self._check_open()
        with self._lock:
            rows = self._identity_index().rows_of(identities)
            return {identity: self._row_values("frames", row, VERDICT_COLUMNS[1:])
                    for identity, row in rows.items()}

    def _row_values(self, table: str, row: int, names: Sequence[str]) -> dict[str, Any]:
        columns = self._columns[table]
        try:
            values = run(_gather([_read_cell(columns[name], row) for name in names]))
        except Exception as exc:
            raise StoreError(
                f"results store {self.path}: cannot read row {row} of {table} ({_why(exc)})"
            ) from exc
        return {name: _plain(value) for name, value in zip(names, values, strict=True)}

    def _read_table(self, table: str, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        self._check_open()
        with self._lock:
            n = self._counts[table]
            columns = self._columns[table]
            if names is not None:
                columns = {name: columns[name] for name in names}
            try:
                values = run(_gather([_read_column(col, n) for col in columns.values()]))
            except Exception as exc:
                raise StoreError(
                    f"results store {self.path}: cannot read {table} ({_why(exc)})"
                ) from exc
            return dict(zip(columns, values, strict=True))

    def mask(self, row: int) -> np.ndarray:
        """The label mask of frame-table row `row` (zeros of the frame's shape when none)."""
        self._check_open()
        with self._lock:
            n = self._counts["frames"]
            if not 0 <= row < n:
                raise IndexError(f"frame row {row} out of range (the store holds {n} frames)")
            frames = self._columns["frames"]
            try:
                name, index, height, width = (
                    _plain(v) for v in run(_gather(_read_cell(frames[c], row) for c in
                                                   ("mask_stack", "mask_index", "height", "width")))
                )
                if not name or index < 0:
                    return np.zeros((int(height), int(width)), dtype=np.uint16)
                return np.asarray(run(self._stacks[name].labels.getitem(index)))
            except Exception as exc:
                raise StoreError(
                    f"results store {self.path}: cannot read the mask of row {row} ({_why(exc)})"
                ) from exc

    def thumbnail(self, row: int) -> Thumbnail | None:
        """The thumbnail of frame-table row `row` (daemon.results.thumbnails); None when it has none."""
        self._check_open()
        with self._lock:
            n = self._counts["frames"]
            if not 0 <= row < n:
                raise IndexError(f"frame row {row} out of range (the store holds {n} frames)")
            try:
                if self._thumbnails.refs is None:
                    frames = self._columns["frames"]
                    stacks, indices = run(_gather([_read_column(frames["thumbnail_stack"], n),
                                                   _read_column(frames["thumbnail_index"], n)]))
                    self._thumbnails.refs = ([str(s) for s in stacks], [int(i) for i in indices])
                return self._thumbnails.read(row)
            except Exception as exc:
                raise StoreError(
                    f"results store {self.path}: cannot read the thumbnail of row {row} "
                    f"({_why(exc)})"
                ) from exc

    # ---------------------------------------------------------------- lifetime

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"results store {self.path}: closed")

    def _check_writable(self) -> None:
        self._check_open()
        if self.read_only:
            raise StoreError(f"results store {self.path}: opened read-only")

    def close(self) -> None:
        """Trim the arrays to the committed counts (writer) and release the store."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._index is not None:
                self._index.close()
            if not self.read_only:
                try:
                    self._trim()
                except Exception as exc:  # the next open trims instead
                    logger.warning("%s: could not trim on close (%s)", self.path, _why(exc))
            self._release_lock()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self._release_lock()


def open_store_readonly(path: str | Path) -> ResultsStore:
    """Open an existing store to read it (committed rows only); StoreError when it is not one."""
    return ResultsStore(path, read_only=True)


# --------------------------------------------------------------------------------------------


def _numpy_dtype(dtype: Any) -> Any:
    return object if dtype is STR else dtype


def _fill(dtype: Any) -> Any:
    if dtype is STR:
        return ""
    kind = np.dtype(dtype).kind
    if kind == "f":
        return math.nan
    if kind == "b":
        return False
    return -1


def _label_dtype(labels: np.ndarray, source: str) -> np.dtype:
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


def _now() -> str:
    return timestamp()


def _jsonable(value: Any) -> Any:
    """Through JSON and back: tuples, Paths and numpy scalars become plain JSON values."""

    def default(obj: Any) -> Any:
        return obj.item() if isinstance(obj, np.generic) else str(obj)

    return json.loads(json.dumps(value, default=default))


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value it holds."""
    return value.item() if isinstance(value, np.generic) else value


def _multiscale(name: str, pixel_size_um: float | None) -> dict:
    """NGFF multiscales of one level: t, then y and x in micrometres when the pixel size is
    known (viewers then show a scale bar and overlay other images correctly), else in pixels."""
    axes = [dict(a) for a in _AXES]
    scale = [1.0, 1.0, 1.0]
    if pixel_size_um is not None and math.isfinite(pixel_size_um) and pixel_size_um > 0:
        for axis in axes[1:]:
            axis["unit"] = "micrometer"
        scale[1:] = [float(pixel_size_um)] * 2
    return {
        "name": name,
        "axes": axes,
        "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}],
    }


def _async(arr: Any) -> Any:
    """The AsyncArray behind a zarr.Array: an append runs all its writes in one loop call.

    write_empty_chunks=True: otherwise zarr compares every chunk with the fill value before
    writing it (several ms per 1080x1080 mask); an all-zero mask compresses to ~100 bytes.
    """
    return arr.async_array.with_config({"write_empty_chunks": True})


def _create_column(
    group: Any, name: str, dtype: Any, chunks: tuple[int, int], length: int
) -> Any:
    return group.create_array(
        name,
        shape=(length,),
        chunks=(chunks[1] if dtype is STR else chunks[0],),
        dtype=str if dtype is STR else dtype,
        fill_value=_fill(dtype),
        overwrite=True,
        # Strings: zstd (they repeat a lot). Numbers: uncompressed, so that an append patches
        # their chunk files in place (see _patch_file).
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


def _chunk_encoder(arr: Any) -> Any:
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


def _string_codecs(arr: Any) -> tuple[Any, Any] | None:
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


def _stage_strings(store: _DurableLocalStore, col: _Column, start: int, data: np.ndarray) -> None:
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


def _patchable(arr: Any) -> bool:
    """An uncompressed fixed-width 1-D column whose chunk files can be patched in place."""
    codecs = _codec_chain(arr)
    return (
        arr.ndim == 1
        and len(codecs) == 1
        and _little_endian(codecs[0])
        and np.dtype(arr.dtype).kind in "biuf"
        and chunk_key(arr, (7,)) == "c/7"
    )


def _patches(col: _Column, arr: Any, start: int, data: np.ndarray) -> list[_Patch]:
    """The in-place writes that put `data` at rows start.. of a patchable column."""
    step = arr.chunks[0]
    dtype = np.dtype(arr.dtype).newbyteorder("<")
    values = np.ascontiguousarray(data, dtype=dtype)
    fill = np.asarray(fill_value(arr), dtype=dtype).tobytes()
    out = []
    row = start
    end = start + len(values)
    while row < end:
        chunk = row // step
        stop = min(end, (chunk + 1) * step)
        out.append(
            _Patch(
                path=col.folder / str(chunk),  # type: ignore[operator]
                offset=(row - chunk * step) * dtype.itemsize,
                data=values[row - start : stop - start].tobytes(),
                chunk_bytes=step * dtype.itemsize,
                fill=fill,
            )
        )
        row = stop
    return out


async def _read_column(col: _Column, n: int) -> np.ndarray:
    out_dtype = _numpy_dtype(col.dtype)
    if n == 0:
        return np.empty(0, dtype=out_dtype)
    if col.array is None:
        return np.full(n, _fill(col.dtype), dtype=out_dtype)
    values = await col.array.getitem(slice(0, n))
    return np.asarray(values).astype(out_dtype)


async def _read_cell(col: _Column, row: int) -> Any:
    if col.array is None:
        return _fill(col.dtype)
    return np.asarray(await col.array.getitem(slice(row, row + 1)))[0]


async def _gather(coros: Iterable[Any]) -> list[Any]:
    """Run all; wait for every one even when some fail; then raise the first failure."""
    results = await asyncio.gather(*coros, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        if exc.errno == errno.ENOSPC:
            return f"disk full{where}"
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return f"not writable{where}"
        if exc.strerror:
            return f"{exc.strerror}{where}"
    return f"{type(exc).__name__}: {exc}"
