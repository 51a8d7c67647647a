"""The zarr store under the results store: every write atomic, an append staged and landed
durably in one go.

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

Files others read outside the store (CSV, TIFF exports, task lists) are written with
engines.files.replace_atomically instead: atomic and fsynced file by file, without the
store's barriers or its fsync switch. The store's own
temporary files end in ".partial", which a writer removes when it opens the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zarr.abc.buffer import Buffer
from zarr.abc.store import OffsetByteRequest, RangeByteRequest, SuffixByteRequest
from zarr.buffer import default_buffer_prototype
from zarr.storage import LocalStore


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
class Patch:
    """Bytes written in place into a chunk file of an uncompressed fixed-width column."""

    path: Path
    offset: int
    data: bytes
    chunk_bytes: int  # size of a whole chunk file
    fill: bytes  # one fill value: a new chunk file is filled with it, then patched


class CommittedButNotSynced(Exception):
    """The commit record is in place, but the barrier after it failed."""


class DurableLocalStore(LocalStore):
    """LocalStore with atomic, durable writes and a staging mode for appends.

    Outside staging (creating arrays, trimming) each `set` writes a temporary file, fsyncs it,
    renames it over the key and fsyncs the folder. Between `stage()` and `flush()` writes are
    kept in memory (reads see them) and `flush()` lands them as the module docstring describes.
    """

    def __init__(self, root: Path | str, *, read_only: bool = False, fsync: bool = True) -> None:
        super().__init__(root, read_only=read_only)
        self.fsync = fsync
        self._staged: dict[str, bytes] | None = None
        self.patches: list[Patch] = []

    def with_read_only(self, read_only: bool = False) -> DurableLocalStore:
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
                patch_file(patch)
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
                    raise CommittedButNotSynced(exc) from exc
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
            fsync_path(path)
        for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
            fsync_path(folder, directory=True)

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
                fsync_path(tmp)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        if self.fsync:
            for folder in sorted(folders | {path.parent}, key=lambda p: len(p.parts), reverse=True):
                fsync_path(folder, directory=True)


def patch_file(patch: Patch) -> None:
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


def fsync_path(path: Path, directory: bool = False) -> None:
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
