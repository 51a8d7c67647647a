"""The journal: which versions of which files are done, so a restart does not redo them.

One SQLite table keyed by FrameKey (source, size, mtime_ns): a file rewritten in place gets a new
size or mtime, hence a new key, and is processed again.

Order with the results store: the pipeline appends results to the store (durable) and then
commits their keys here. A crash in between leaves frames in the store that the journal does not
know: they are processed again and the store skips them by identity, so each frame is stored
exactly once.

Durability: WAL mode with synchronous=NORMAL. A commit survives the process dying at once; on
power loss the last commits can be rolled back (the database itself stays consistent). That is
safe here because the store, not the journal, is the record of results: a rolled-back commit
only means those files are read again and the store skips them (a failure would be recorded a
second time). FULL would add an fsync to every commit for nothing the store does not already
guarantee.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

from daemon.frames import FrameKey
from engines.timestamps import timestamp

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS done (
    source TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    committed_at TEXT NOT NULL,
    PRIMARY KEY (source, size, mtime_ns)
) WITHOUT ROWID
"""

OUTCOMES = ("clean", "flagged")


class JournalError(RuntimeError):
    """The journal cannot be opened, read or written; the message names its file."""


class Journal:
    """Thread-safe: one connection shared under a lock (the writer thread commits, sources ask)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                self.path, check_same_thread=False, isolation_level=None, timeout=10.0
            )
            self._setup(self._conn)
        except (sqlite3.Error, OSError) as exc:
            self._close_quietly()
            raise JournalError(self._describe(exc)) from exc

    def _setup(self, conn: sqlite3.Connection) -> None:
        # The first statements read the file header: a file that is not a database fails here.
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise JournalError(
                f"journal {self.path}: written by a newer artifactd (schema {version}, this "
                f"version reads up to {SCHEMA_VERSION})"
            )
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise JournalError(f"journal {self.path}: could not switch to WAL mode (got {mode})")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(_SCHEMA)
        if version < SCHEMA_VERSION:
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        names = [row[1] for row in conn.execute("PRAGMA table_info(done)")]
        if names[:3] != ["source", "size", "mtime_ns"]:
            raise JournalError(
                f"journal {self.path}: its 'done' table is not an artifactd journal table"
            )

    def _describe(self, exc: BaseException) -> str:
        if isinstance(exc, JournalError):
            return str(exc)
        if isinstance(exc, sqlite3.DatabaseError) and "not a database" in str(exc).lower():
            return (
                f"journal {self.path}: the file is corrupt or not an SQLite database ({exc}); "
                "move it aside and restart: every file is then read again, and the results store "
                "skips the frames it already holds"
            )
        if isinstance(exc, sqlite3.DatabaseError) and "malformed" in str(exc).lower():
            return (
                f"journal {self.path}: the database is corrupt ({exc}); move it aside and "
                "restart: every file is then read again, and the results store skips the "
                "frames it already holds"
            )
        return f"journal {self.path}: {exc}"

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise JournalError(f"journal {self.path}: closed")
        return self._conn

    def is_done(self, key: FrameKey) -> bool:
        with self._lock:
            try:
                row = self._connection().execute(
                    "SELECT 1 FROM done WHERE source = ? AND size = ? AND mtime_ns = ?",
                    (key.source, key.size, key.mtime_ns),
                ).fetchone()
            except sqlite3.Error as exc:
                raise JournalError(self._describe(exc)) from exc
        return row is not None

    def outcome(self, key: FrameKey) -> str | None:
        """The recorded outcome of a file version, or None when it is not done."""
        with self._lock:
            try:
                row = self._connection().execute(
                    "SELECT outcome FROM done WHERE source = ? AND size = ? AND mtime_ns = ?",
                    (key.source, key.size, key.mtime_ns),
                ).fetchone()
            except sqlite3.Error as exc:
                raise JournalError(self._describe(exc)) from exc
        return None if row is None else str(row[0])

    def done_keys(self) -> set[FrameKey]:
        """Every done file version (`artifactd reprocess --resume` skips them)."""
        with self._lock:
            try:
                rows = self._connection().execute(
                    "SELECT source, size, mtime_ns FROM done"
                ).fetchall()
            except sqlite3.Error as exc:
                raise JournalError(self._describe(exc)) from exc
        return {FrameKey(source, size, mtime_ns) for source, size, mtime_ns in rows}

    def commit(self, keys: Sequence[FrameKey], outcome: str) -> None:
        """Record keys as done with one outcome, in one transaction.

        outcome: "clean", "flagged" or "failed:<reason>". A key already present is updated.
        """
        if outcome not in OUTCOMES and not (outcome.startswith("failed:") and len(outcome) > 7):
            raise ValueError(
                f"outcome: expected clean, flagged or failed:<reason>, got {outcome!r}"
            )
        if not keys:
            return
        now = timestamp()
        rows = [(k.source, k.size, k.mtime_ns, outcome, now) for k in keys]
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.executemany(
                        "INSERT INTO done (source, size, mtime_ns, outcome, committed_at) "
                        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (source, size, mtime_ns) "
                        "DO UPDATE SET outcome = excluded.outcome, "
                        "committed_at = excluded.committed_at",
                        rows,
                    )
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise JournalError(self._describe(exc)) from exc

    def __len__(self) -> int:
        with self._lock:
            try:
                return int(self._connection().execute("SELECT COUNT(*) FROM done").fetchone()[0])
            except sqlite3.Error as exc:
                raise JournalError(self._describe(exc)) from exc

    def close(self) -> None:
        with self._lock:
            self._close_quietly()

    def _close_quietly(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
