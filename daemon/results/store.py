"""The results store: one zarr v3 folder holding every processed frame's masks and measurements.

The format is in daemon.results.schema, the durable writes in daemon.results.durable; this module
is the ResultsStore that opens, appends, reads and closes, on top of its parts:

    schema.py     tables, columns, chunking, mask stacks, StoreError
    opening.py    folder checks, the writer's lock, a new store's tables, settings history
    arrays.py     every array at its committed length: open, trim, re-read after a failure
    rows.py       FrameResults, failures and corrections as table rows and masks
    chunks.py     an append's chunks encoded with the codecs the arrays declare
    durable.py    staged writes landed atomically and durably (syncfs barriers)
    ngff.py       OME-Zarr metadata of the mask (and thumbnail) stacks
    reads.py      committed rows and cells read back
    identity_index.py, thumbnails.py   the identity index and the thumbnail stacks

This module is a little over 400 lines: ResultsStore is one class whose methods share one lock
and one view of the committed counts; everything that stands alone is in the modules above.

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
in an index on disk beside the identity column (daemon.results.identity_index), not held in
memory, so a long-running service stays at the same size; the index is rebuilt from the column
when it lags or is lost.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from daemon.frames import FrameFailure, FrameResult
from daemon.results import arrays, opening, reads
from daemon.results.chunks import chunk_encoder, land
from daemon.results.corrections import Correction
from daemon.results.durable import CommittedButNotSynced
from daemon.results.identity_index import FILE_NAME as INDEX_FILE
from daemon.results.identity_index import IdentityIndex
from daemon.results.reads import gather
from daemon.results.rows import batch_rows, correction_rows, failure_rows
from daemon.results.schema import TABLES, VERDICT_COLUMNS, StoreError, why
from daemon.results.thumbnails import Thumbnail, ThumbnailBatch, ThumbnailStacks
from daemon.results.zarr_internals import run
from engines.timestamps import timestamp

logger = logging.getLogger(__name__)

__all__ = ["ResultsStore", "StoreError", "open_store_readonly"]


class ResultsStore:
    """Create or open a results store; see the module docstring for layout and guarantees.

    attributes: recorded under the root attribute "artifactd" along with the artifactd version,
        typically {"models": {...}, "config": {...}}. When they differ from what an existing
        store holds, the old ones move to "artifactd_history" with the frame count they covered.
    read_only: open an existing store to read it: no lock, no trimming, no writes.
    fsync: make every append durable before it returns (see daemon.results.durable).
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
            raise StoreError(f"results store {self.path}: cannot open it ({why(exc)})") from exc

    # ---------------------------------------------------------------- opening

    def _open_read_only(self) -> None:
        self._store, self._root = opening.open_read_only(self.path)
        self._load(writer=False)

    def _open_writable(self, attributes: dict | None, fsync: bool) -> None:
        self._lock_fd, self._store, self._root = opening.open_writable(self.path, attributes,
                                                                       fsync)
        self._load(writer=True)

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            opening.release_lock(self._lock_fd)
            self._lock_fd = None

    def _load(self, *, writer: bool) -> None:
        """Read the committed counts and open every array; a writer also trims them."""
        attrs = self._root.attrs.asdict()
        committed = arrays.committed_counts(attrs, self.path)
        self._counts = {table: int(committed.get(table, 0)) for table in TABLES}
        self.attributes: dict = dict(attrs["artifactd"])
        self.history: list[dict] = list(attrs.get("artifactd_history", []))
        self._columns = arrays.open_columns(self._root, self.path, self._counts, writer=writer)
        self._stacks = arrays.open_stacks(
            self._root, self.path, {k: int(v) for k, v in committed.get("stacks", {}).items()},
            writer=writer,
        )
        self._thumbnails = ThumbnailStacks(self.path, chunk_encoder)
        self._thumbnails.load(
            self._root, {k: int(v) for k, v in committed.get("thumbnails", {}).items()},
            writer=writer,
        )
        if writer:  # rows past the committed counts belong to an append that did not finish
            self._trim()
            # Readers must not write into the store, so theirs is built in memory when asked.
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
            rows = batch_rows(batch, self._counts["frames"], self._stacks, self._thumbnails)
            self._recover()
            counts = dict(self._counts)
            stack_counts = {name: s.committed for name, s in self._stacks.items()}
            n_art = len(rows.artifacts["identity"])
            try:
                for name, shape, dtype, pixel_size_um in rows.new_stacks:
                    self._stacks[name] = arrays.create_stack(self._root, name, shape, dtype,
                                                             pixel_size_um)
                    stack_counts[name] = 0
                self._thumbnails.create(self._root, rows.thumbnails)
                writes = self._column_writes("frames", rows.frames)
                if n_art:
                    writes += self._column_writes("artifacts", rows.artifacts)
                for name, masks in rows.masks.items():
                    stack = self._stacks[name]
                    writes.append((stack, stack.committed, masks))
                    stack_counts[name] += len(masks)
                counts["frames"] += len(batch)
                counts["artifacts"] += n_art
                self._write_and_commit(writes, counts, stack_counts, rows.thumbnails)
            except Exception as exc:
                self._stale = True
                self._rollback()
                raise StoreError(
                    f"results store {self.path}: cannot append frames ({why(exc)})"
                ) from exc
            frames = rows.frames
            self._thumbnails.landed(rows.thumbnails, ([str(s) for s in frames["thumbnail_stack"]],
                                                      [int(i) for i in frames["thumbnail_index"]]))
            self._counts = counts
            for name, n in stack_counts.items():
                self._stacks[name].committed = n
            identities = [str(i) for i in frames["identity"]]
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
            self._append_rows("failures", failure_rows(failures, timestamp()), "record failures")

    def record_corrections(self, corrections: Sequence[Correction]) -> None:
        """Append operator corrections (daemon.results.corrections) to their table; durable.
        Each must name a committed frame row and that row's identity."""
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
            self._append_rows("corrections", correction_rows(corrections, timestamp()),
                              "record corrections")

    def _append_rows(self, table: str, columns: dict[str, np.ndarray], what: str) -> None:
        """Append rows to a table with no masks (failures, corrections); durable."""
        self._recover()
        counts = dict(self._counts)
        counts[table] += len(next(iter(columns.values())))
        stack_counts = {name: s.committed for name, s in self._stacks.items()}
        try:
            self._write_and_commit(self._column_writes(table, columns), counts, stack_counts)
        except Exception as exc:
            self._stale = True
            self._rollback()
            raise StoreError(f"results store {self.path}: cannot {what} ({why(exc)})") from exc
        self._counts = counts

    def _column_writes(self, table: str, values: dict[str, np.ndarray]) -> list[tuple]:
        start = self._counts[table]
        return [(col, start, values[name]) for name, col in self._columns[table].items()]

    def _write_and_commit(
        self, writes: list[tuple], counts: dict[str, int], stack_counts: dict[str, int],
        thumbnails: ThumbnailBatch | None = None,
    ) -> None:
        """Stage every write, then land them all and the new committed counts (see flush)."""
        plan = [] if thumbnails is None else self._thumbnails.writes(thumbnails,
                                                                     self._store.stage_bytes)
        committed = {**counts, "stacks": dict(sorted(stack_counts.items())),
                     "thumbnails": self._thumbnails.counts(thumbnails)}
        try:
            land(self._store, self._root, writes, plan, committed)
        except CommittedButNotSynced as exc:
            logger.error(
                "%s: committed, but the last fsync failed (%s): this append may not survive a "
                "power loss", self.path, why(exc.__cause__ or exc),
            )

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
            self._root = arrays.reopen(self._store, self._columns, self._stacks)
            self._thumbnails.reopen(self._root)
            self._stale = False
            fixes = arrays.cut_stacks(self._stacks) + self._thumbnails.cut_to_committed()
            if fixes:
                run(gather(fixes))
        except Exception as exc:  # e.g. the disk is still full: retried before the next write
            self._stale_reason = why(exc)
            logger.warning("%s: could not roll back a failed write (%s)", self.path, why(exc))

    def _trim(self) -> None:
        """Cut every array to its committed length (open and close: exact shapes at rest)."""
        fixes = (arrays.cut_columns(self._columns, self._counts) + arrays.cut_stacks(self._stacks)
                 + self._thumbnails.cut_to_committed())
        if fixes:
            run(gather(fixes))

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

    def frame_table(self, columns: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """The committed frame rows, one numpy array per column (strings as object arrays);
        only the named columns where `columns` is given."""
        return self._read_table("frames", columns)

    def artifact_table(self) -> dict[str, np.ndarray]:
        return self._read_table("artifacts")

    def failure_table(self) -> dict[str, np.ndarray]:
        return self._read_table("failures")

    def correction_table(self) -> dict[str, np.ndarray]:
        """Every correction recorded, oldest first (daemon.results.corrections.latest picks
        per frame)."""
        return self._read_table("corrections")

    def stored_verdicts(self, identities: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The stored verdict of each identity the store holds: score, flagged, area_fraction,
        n_artifacts, processed_at. One index lookup and one row read per identity."""
        self._check_open()
        with self._lock:
            rows = self._identity_index().rows_of(identities)
            return {identity: reads.row_values(self.path, "frames", self._columns["frames"], row,
                                               VERDICT_COLUMNS[1:])
                    for identity, row in rows.items()}

    def _read_table(self, table: str, names: Sequence[str] | None = None
                    ) -> dict[str, np.ndarray]:
        self._check_open()
        columns = self._columns[table]
        if names is not None:
            columns = {name: columns[name] for name in names}
        with self._lock:
            return reads.read_table(self.path, table, columns, self._counts[table])

    def mask(self, row: int) -> np.ndarray:
        """The label mask of frame-table row `row` (zeros of the frame's shape when none)."""
        self._check_open()
        with self._lock:
            self._check_row(row)
            return reads.read_mask(self.path, self._columns["frames"], self._stacks, row)

    def thumbnail(self, row: int) -> Thumbnail | None:
        """The thumbnail of frame-table row `row` (daemon.results.thumbnails); None when it has
        none."""
        self._check_open()
        with self._lock:
            n = self._check_row(row)
            return reads.read_thumbnail(self.path, self._columns["frames"], self._thumbnails,
                                        row, n)

    def _check_row(self, row: int) -> int:
        """IndexError unless `row` is a committed frame row; returns the committed count."""
        n = self._counts["frames"]
        if not 0 <= row < n:
            raise IndexError(f"frame row {row} out of range (the store holds {n} frames)")
        return n

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
                    logger.warning("%s: could not trim on close (%s)", self.path, why(exc))
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
