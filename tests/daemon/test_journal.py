"""The journal of done file versions."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from daemon.frames import FrameKey
from daemon.results.journal import Journal, JournalError
from tests.daemon.service_helpers import journaled_keys


def keys(n: int, start: int = 0) -> list[FrameKey]:
    return [FrameKey(f"plate/A{i:02d}.tif", 1000 + i, 10**9 + i) for i in range(start, start + n)]


def test_commit_is_done_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "results.zarr.journal.sqlite"
    with Journal(path) as journal:
        assert journaled_keys(path) == set()
        journal.commit(keys(3), "clean")
        journal.commit(keys(1, start=3), "flagged")
        journal.commit(keys(1, start=4), "failed:unreadable")
        journal.commit([], "clean")
        assert all(journal.is_done(k) for k in keys(5))
        assert not journal.is_done(keys(1, start=5)[0])
        # Another version of the same file is not done.
        assert not journal.is_done(FrameKey("plate/A00.tif", 1000, 123))
        assert len(journal) == 5
    with Journal(path) as journal:
        assert journaled_keys(path) == set(keys(5))
        assert journal.outcome(keys(1, start=3)[0]) == "flagged"
        assert journal.outcome(keys(1, start=4)[0]) == "failed:unreadable"
        assert journal.outcome(keys(1, start=9)[0]) is None
        journal.commit(keys(1, start=4), "clean")  # reprocessed: the outcome is updated
        assert journal.outcome(keys(1, start=4)[0]) == "clean"
        assert len(journal) == 5


def test_wal_mode_and_outcome_check(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    journal = Journal(path)
    for bad in ("done", "failed:", "CLEAN", ""):
        with pytest.raises(ValueError, match="outcome"):
            journal.commit(keys(1), bad)
    assert journaled_keys(path) == set()
    journal.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with pytest.raises(JournalError, match="closed"):
        journal.is_done(keys(1)[0])


def test_corrupt_journal_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.sqlite"
    path.write_bytes(b"this is not an sqlite database at all, just some text" * 100)
    with pytest.raises(JournalError, match=str(path)) as info:
        Journal(path)
    assert "corrupt" in str(info.value)


def test_unusable_path_names_the_file(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(JournalError, match="a-file"):
        Journal(blocker / "journal.sqlite")


def test_commits_from_one_thread_queries_from_others(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    journal = Journal(path)
    all_keys = keys(400)
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for i in range(0, len(all_keys), 8):
                journal.commit(all_keys[i : i + 8], "clean")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def reader() -> None:
        try:
            for k in all_keys:
                journal.is_done(k)
            len(journal)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer)]
    threads += [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert journaled_keys(path) == set(all_keys)
    journal.close()
