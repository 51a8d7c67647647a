"""Which frames the store holds: an index on disk that follows the identity column, so memory
stays flat, and that is rebuilt from the column whenever it lags, is lost or is damaged."""

from __future__ import annotations

import logging
import shutil
import sqlite3
from pathlib import Path

import pytest

from daemon.results import identity_index
from daemon.results.store import ResultsStore, open_store_readonly
from tests.daemon.test_store import make_result


def index_file(store: Path) -> Path:
    return store / "frames" / "identity" / identity_index.FILE_NAME


def identities(results: list) -> list[str]:
    return [r.frame.identity for r in results]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "results.zarr"


def test_the_index_lives_on_disk_and_answers_rows(path: Path) -> None:
    first, second = [make_result(i) for i in range(3)], [make_result(i) for i in range(3, 5)]
    with ResultsStore(path) as store:
        store.append(first)
        store.append(second)
        assert index_file(path).is_file()
        assert [store.stored_row(i) for i in identities(first + second)] == [0, 1, 2, 3, 4]
        assert store.stored_row("zmq:never-sent") is None
    with sqlite3.connect(index_file(path)) as conn:  # the rows are in the file, not in memory
        assert conn.execute("SELECT COUNT(*) FROM stored").fetchone()[0] == 5


def test_a_lost_index_is_rebuilt_from_the_identity_column(path: Path) -> None:
    results = [make_result(i) for i in range(6)]
    with ResultsStore(path) as store:
        store.append(results[:4])
    for leftover in index_file(path).parent.glob(identity_index.FILE_NAME + "*"):
        leftover.unlink()
    with ResultsStore(path) as store:
        assert store.append(results) == identities(results[4:])  # the first four are still known
        assert store.stored_row(results[2].frame.identity) == 2


def test_a_damaged_index_is_rebuilt_with_a_warning(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    results = [make_result(i) for i in range(4)]
    with ResultsStore(path) as store:
        store.append(results[:3])
    for leftover in index_file(path).parent.glob(identity_index.FILE_NAME + "-*"):
        leftover.unlink()
    index_file(path).write_bytes(b"this is no database" * 100)
    with caplog.at_level(logging.WARNING), ResultsStore(path) as store:
        assert store.append(results) == identities(results[3:])
    assert "damaged" in caplog.text and "rebuilding" in caplog.text


def test_an_index_that_missed_a_commit_catches_up_before_the_next_lookup(
    path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The frames are committed but the index update fails (as after a crash between the two):
    the store still knows those frames, in this process and after reopening."""
    results = [make_result(i) for i in range(5)]
    real_add = identity_index.IdentityIndex.add
    calls = {"n": 0}

    def add_failing_once(self, ids, first_row):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 2:
            raise sqlite3.OperationalError("database or disk is full")
        return real_add(self, ids, first_row)

    monkeypatch.setattr(identity_index.IdentityIndex, "add", add_failing_once)
    with caplog.at_level(logging.WARNING), ResultsStore(path) as store:
        store.append(results[:2])
        assert store.append(results[2:4]) == identities(results[2:4])  # index not updated
        assert "identity index not updated" in caplog.text
        assert store.append(results) == identities(results[4:])
        assert store.stored_row(results[3].frame.identity) == 3
    with ResultsStore(path) as store:
        assert len(store) == 5 and store.append(results) == []


def test_an_index_newer_than_the_store_is_rebuilt(path: Path, tmp_path: Path) -> None:
    """A store put back from an older copy, with the index of a later state: the index holds
    frames the store does not, and must not make the store skip them."""
    results = [make_result(i) for i in range(6)]
    with ResultsStore(path) as store:
        store.append(results[:2])
    old = tmp_path / "older-copy.zarr"
    shutil.copytree(path, old)
    with ResultsStore(path) as store:
        store.append(results[2:])
    for leftover in index_file(old).parent.glob(identity_index.FILE_NAME + "*"):
        leftover.unlink()
    shutil.copy(index_file(path), index_file(old))  # the index of six frames beside two
    with ResultsStore(old) as store:
        assert len(store) == 2
        assert store.append(results) == identities(results[2:])
        assert len(store) == 6


def test_an_index_of_another_store_is_rebuilt(path: Path, tmp_path: Path) -> None:
    """Same number of rows, other frames (an index copied in from another store)."""
    other = tmp_path / "other.zarr"
    ours, theirs = [make_result(i) for i in range(3)], [make_result(i) for i in range(10, 13)]
    with ResultsStore(path) as store:
        store.append(ours)
    with ResultsStore(other) as store:
        store.append(theirs)
    for leftover in index_file(path).parent.glob(identity_index.FILE_NAME + "*"):
        leftover.unlink()
    shutil.copy(index_file(other), index_file(path))
    with ResultsStore(path) as store:
        assert store.append(theirs) == identities(theirs)
        assert store.append(ours) == []


def test_reading_a_store_writes_nothing_into_it(path: Path) -> None:
    results = [make_result(i) for i in range(3)]
    with ResultsStore(path) as store:
        store.append(results)
    for leftover in index_file(path).parent.glob(identity_index.FILE_NAME + "*"):
        leftover.unlink()
    before = sorted(p.relative_to(path) for p in path.rglob("*"))
    with open_store_readonly(path) as store:
        assert store.has(results[1].frame.identity)
        assert store.stored_row(results[2].frame.identity) == 2
        assert store.stored_verdicts([results[0].frame.identity])[results[0].frame.identity][
            "score"] == pytest.approx(results[0].score)
    assert sorted(p.relative_to(path) for p in path.rglob("*")) == before


def test_stored_verdicts_read_only_the_rows_asked_for(path: Path) -> None:
    results = [make_result(i, streamed=True) for i in range(5)]
    with ResultsStore(path) as store:
        store.append(results)
    with ResultsStore(path) as store:
        asked = [results[3].frame.identity, "zmq:unknown", results[1].frame.identity]
        found = store.stored_verdicts(asked)
    assert set(found) == {results[3].frame.identity, results[1].frame.identity}
    three = found[results[3].frame.identity]
    assert three["score"] == pytest.approx(results[3].score)
    assert three["flagged"] is True and three["n_artifacts"] == 3
    assert three["processed_at"] == results[3].processed_at
