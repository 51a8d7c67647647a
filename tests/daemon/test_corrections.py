"""Corrections: durable and append-only in the store, with who and when; exported as the labels
CSV that `artifactd train --labels` reads (read back here with the trainer's own reader)."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import pytest
import zarr

from daemon.cli import main as cli_main
from daemon.results.corrections import Correction, latest, training_labels
from daemon.results.store import ResultsStore, StoreError, open_store_readonly
from engines.data.dataset import read_labels
from tests.daemon.test_store import make_result


def correction(store: ResultsStore, row: int, label: str, by: str = "loopback") -> Correction:
    table = store.frame_table()
    return Correction(row, str(table["identity"][row]), str(table["source"][row]), label, by)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    path = tmp_path / "results.zarr"
    with ResultsStore(path) as store:
        store.append([make_result(i, source=f"plate1/A{i:02d}_f1.tif") for i in range(4)])
        store.append([make_result(4, streamed=True)])
    return path


def test_corrections_are_durable_append_only_with_who_and_when(path: Path):
    with ResultsStore(path) as store:
        store.record_corrections([correction(store, 1, "clean")])
        store.record_corrections([correction(store, 2, "artifact", "alice"),
                                  correction(store, 1, "artifact", "bob")])
    with open_store_readonly(path) as reader:
        table = reader.correction_table()
    assert list(table["frame_row"]) == [1, 2, 1]  # nothing replaced: every correction kept
    assert list(table["label"]) == ["clean", "artifact", "artifact"]
    assert list(table["by"]) == ["loopback", "alice", "bob"]
    assert all(str(at).endswith("Z") and "T" in str(at) for at in table["at"])
    assert list(table["source"]) == ["plate1/A01_f1.tif", "plate1/A02_f1.tif", "plate1/A01_f1.tif"]
    newest = latest(table)
    assert {str(c["source"]): c["label"] for c in newest.values()} == {
        "plate1/A01_f1.tif": "artifact", "plate1/A02_f1.tif": "artifact"}
    assert zarr.open_group(path, mode="r").attrs["committed"]["corrections"] == 3


def test_a_correction_must_name_a_stored_frame_and_a_label(path: Path):
    with ResultsStore(path) as store:
        good = correction(store, 0, "clean")
        with pytest.raises(ValueError, match="expected one of clean, artifact"):
            store.record_corrections([Correction(0, good.identity, good.source, "dirty", "me")])
        with pytest.raises(ValueError, match="frame row 9: not in the store"):
            store.record_corrections([Correction(9, good.identity, good.source, "clean", "me")])
        with pytest.raises(ValueError, match="frame row 1 is not"):
            store.record_corrections([Correction(1, good.identity, good.source, "clean", "me")])
        assert store.counts["corrections"] == 0
    with open_store_readonly(path) as reader, pytest.raises(StoreError, match="read-only"):
        reader.record_corrections([good])


def test_export_labels_is_what_train_reads(path: Path, tmp_path: Path, caplog):
    with ResultsStore(path) as store:
        store.record_corrections([correction(store, 0, "clean"), correction(store, 3, "artifact"),
                                  correction(store, 0, "artifact"), correction(store, 2, "clean"),
                                  correction(store, 4, "artifact")])  # row 4 is streamed
        # plate1/A02_f1.tif rewritten and processed again: its correction is of the old version.
        store.append([make_result(5, source="plate1/A02_f1.tif", size=99)])
    out = tmp_path / "labels.csv"
    with caplog.at_level(logging.INFO):
        assert cli_main(["export", str(path), "--labels", str(out)]) == 0
    with out.open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows == [["source", "label"], ["plate1/A00_f1.tif", "artifact"],
                    ["plate1/A03_f1.tif", "artifact"]]
    assert read_labels(out) == [("plate1/A00_f1.tif", 1), ("plate1/A03_f1.tif", 1)]
    assert "1 correction(s) of streamed frames left out" in caplog.text
    assert "1 correction(s) left out: their file was rewritten" in caplog.text
    assert "only artifact frames" in caplog.text
    with open_store_readonly(path) as reader:
        labels = training_labels(reader)
    assert (labels.streamed, labels.replaced) == (1, 1)


def test_a_store_without_corrections_exports_an_empty_labels_file(path: Path, tmp_path: Path):
    root = zarr.open_group(path, mode="r+")
    del root["corrections"]  # as a store written before corrections existed
    out = tmp_path / "labels.csv"
    assert cli_main(["export", str(path), "--labels", str(out)]) == 0
    assert out.read_text().splitlines() == ["source,label"]
    with ResultsStore(path) as store:  # a writer adds the table
        store.record_corrections([correction(store, 0, "clean")])
    assert len(open_store_readonly(path).correction_table()["label"]) == 1
