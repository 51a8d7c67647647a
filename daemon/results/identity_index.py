"""Which frames a results store holds: identity -> frame-table row, in SQLite, not in memory.

The store's `frames/identity` column is the record; this index is a copy of it that answers
"is this frame stored, and in which row?" without holding every identity in a Python set, so a
service's memory stays flat however many frames it stores. It lives inside the store, in the
identity column's folder (`frames/identity/index.sqlite`), where zarr never lists it.

Because the column is the record, the index may lag behind it or be lost: after a crash between
a store commit and the index update, or when the file is damaged or deleted. `catch_up()` brings
it level from the column before every lookup that needs it, reading only the rows it lacks (a
full rebuild reads the column in slices, so memory stays bounded there too).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

FILE_NAME = "index.sqlite"
_SLICE = 65_536  # rows read from the column at a time when catching up

_SCHEMA = """
CREATE TABLE IF NOT EXISTS stored (identity TEXT PRIMARY KEY, row INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS indexed (one INTEGER PRIMARY KEY CHECK (one = 1), rows INTEGER NOT NULL);
"""

# Reads identities of frame rows [start, stop) from the store's column.
ReadRows = Callable[[int, int], Sequence[str]]


class IdentityIndex:
    """Not thread-safe on its own: the store calls it under its lock.

    path: the SQLite file, or None for an index in memory (read-only stores, which must not
        write into the user's store, and stores where the file cannot be used).
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._conn = self._connect(path)
        self._rows = self._indexed_rows()

    def _connect(self, path: Path | None) -> sqlite3.Connection:
        if path is not None:
            for attempt in (1, 2):
                try:
                    return self._setup(_open(path))
                except sqlite3.DatabaseError as exc:
                    damaged = any(w in str(exc).lower() for w in ("not a database", "malformed"))
                    if attempt == 1 and damaged:  # it is only a copy of the column: start again
                        logger.warning("identity index %s is damaged (%s); rebuilding it from "
                                       "the store's identity column", path, exc)
                        _remove(path)
                        continue
                    logger.warning("identity index %s cannot be used (%s); keeping it in "
                                   "memory instead", path, exc)
                    break
            self.path = None
        return self._setup(_open(":memory:"))

    @staticmethod
    def _setup(conn: sqlite3.Connection) -> sqlite3.Connection:
        # The index can always be rebuilt from the column, so it needs no fsync of its own.
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=OFF")
        conn.executescript(_SCHEMA)
        return conn

    def _indexed_rows(self) -> int:
        found = self._conn.execute("SELECT rows FROM indexed").fetchone()
        return int(found[0]) if found else 0

    def catch_up(self, committed: int, read_rows: ReadRows) -> None:
        """Index the committed rows it lacks; start again when it holds more than the store
        (a store restored from an older copy) or its last row names another identity."""
        if self._rows == committed and (committed == 0 or self._last_row_matches(read_rows)):
            return
        if self._rows > committed or (self._rows and not self._last_row_matches(read_rows)):
            logger.warning("identity index of %s does not match the store; rebuilding it",
                           self.path or "the store")
            self._conn.executescript("DELETE FROM stored; DELETE FROM indexed;")
            self._rows = 0
        for start in range(self._rows, committed, _SLICE):
            stop = min(start + _SLICE, committed)
            self.add(read_rows(start, stop), start)

    def _last_row_matches(self, read_rows: ReadRows) -> bool:
        last = self._rows - 1
        return self.row_of(str(read_rows(last, last + 1)[0])) == last

    def add(self, identities: Sequence[str], first_row: int) -> None:
        """Record that identities[i] is stored in row first_row + i (one transaction)."""
        if first_row != self._rows:
            raise ValueError(f"identity index: expected row {self._rows} next, got {first_row}")
        stop = first_row + len(identities)
        with self._conn:
            self._conn.execute("BEGIN")
            self._conn.executemany(
                "INSERT OR REPLACE INTO stored (identity, row) VALUES (?, ?)",
                ((str(identity), first_row + i) for i, identity in enumerate(identities)),
            )
            self._conn.execute("INSERT OR REPLACE INTO indexed (one, rows) VALUES (1, ?)", (stop,))
        self._rows = stop

    @property
    def rows(self) -> int:
        """How many frame rows the index covers."""
        return self._rows

    def row_of(self, identity: str) -> int | None:
        found = self._conn.execute("SELECT row FROM stored WHERE identity = ?", (identity,))
        row = found.fetchone()
        return int(row[0]) if row else None

    def rows_of(self, identities: Iterable[str]) -> dict[str, int]:
        """identity -> row for those of `identities` the store holds."""
        wanted = list(dict.fromkeys(str(i) for i in identities))
        found: dict[str, int] = {}
        for start in range(0, len(wanted), 500):  # SQLite's bound-parameter limit
            part = wanted[start : start + 500]
            marks = ",".join("?" * len(part))
            query = f"SELECT identity, row FROM stored WHERE identity IN ({marks})"
            found.update((str(i), int(r)) for i, r in self._conn.execute(query, part))
        return found

    def close(self) -> None:
        try:
            self._conn.close()
        except sqlite3.Error as exc:
            logger.debug("closing identity index %s: %s", self.path, exc)


def _open(path: Path | str) -> sqlite3.Connection:
    return sqlite3.connect(path, check_same_thread=False, isolation_level=None)


def _remove(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            Path(f"{path}{suffix}").unlink()
