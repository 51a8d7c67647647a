"""The artifact table's `stationary` column: stored as marked, false where nothing marked it, and
stores written before the column existed still open, export and take new rows."""

from __future__ import annotations

import csv
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np

from daemon.cli import main as cli_main
from daemon.frames import STATIONARY
from daemon.results.store import ResultsStore
from tests.daemon.test_store import ATTRS, make_result


def marked(i: int, *flags: bool):
    result = make_result(i, n_artifacts=len(flags))
    return replace(result, artifacts={**result.artifacts, STATIONARY: np.array(flags)})


def exported(store: Path, out: Path) -> list[dict[str, str]]:
    assert cli_main(["export", str(store), "--artifacts", str(out)]) == 0
    with out.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_marks_are_stored_and_exported_row_by_row(tmp_path: Path) -> None:
    path = tmp_path / "results.zarr"
    with ResultsStore(path, attributes=ATTRS) as store:
        store.append([marked(0, False, True, True), make_result(1, n_artifacts=2), marked(2, True)])
        table = store.artifact_table()
    assert table[STATIONARY].dtype == np.bool_
    assert table[STATIONARY].tolist() == [False, True, True, False, False, True]
    rows = exported(path, tmp_path / "artifacts.csv")
    assert [row[STATIONARY] for row in rows] == ["false", "true", "true", "false", "false", "true"]


def test_a_store_from_before_the_column_opens_exports_and_grows(tmp_path: Path) -> None:
    path = tmp_path / "results.zarr"
    with ResultsStore(path, attributes=ATTRS) as store:
        store.append([make_result(i, n_artifacts=2) for i in range(3)])
    # What an earlier version wrote: the same store without the column.
    shutil.rmtree(path / "artifacts" / STATIONARY)
    assert not (path / "artifacts" / STATIONARY).exists()
    before = {p.relative_to(path): p.read_bytes() for p in path.rglob("*") if p.is_file()}

    reader = ResultsStore(path, read_only=True)
    assert reader.artifact_table()[STATIONARY].tolist() == [False] * 6
    reader.close()
    rows = exported(path, tmp_path / "old.csv")
    assert len(rows) == 6 and {row[STATIONARY] for row in rows} == {"false"}
    after = {p.relative_to(path): p.read_bytes() for p in path.rglob("*") if p.is_file()}
    assert after == before  # reading and exporting never change the store

    with ResultsStore(path, attributes=ATTRS) as store:  # the service opens it again
        store.append([marked(10, True, False)])
        assert store.artifact_table()[STATIONARY].tolist() == [False] * 6 + [True, False]
    assert (path / "artifacts" / STATIONARY).is_dir()
