"""`artifactd export`: masks as TIFFs, tables as CSVs, checked against the store."""

from __future__ import annotations

import csv
import math
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
import tifffile
import zarr

from daemon.cli import main as cli_main
from daemon.results.store import ResultsStore, open_store_readonly
from daemon.tools.export import mask_relpath
from tests.daemon.test_store import make_result


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    many = np.zeros((40, 50), np.uint16)
    for k in range(300):  # labels up to 300: needs uint16
        many.flat[k * 5] = k + 1
    results = [
        make_result(0, source="plate1/A01_f1.tif"),
        make_result(1, source="plate1/sub/B02_f1.ome.tiff", shape=(40, 50), labels=many,
                    n_artifacts=300),
        make_result(2, streamed=True),
        make_result(3, source="top.TIF", n_artifacts=0, labels=np.zeros((0, 0), np.uint16),
                    shape=(24, 24)),
    ]
    path = tmp_path / "results.zarr"
    with ResultsStore(path) as store:
        store.append(results[:2])
        store.append(results[2:])
    return path


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        return header, [dict(zip(header, row, strict=True)) for row in reader]


def test_mask_relpath() -> None:
    assert mask_relpath("plate1/A01_f1.tif") == PurePosixPath("plate1/A01_f1.tif")
    assert mask_relpath("plate1/sub/B02.ome.tiff") == PurePosixPath("plate1/sub/B02.tif")
    assert mask_relpath("x.OME.TIF") == PurePosixPath("x.tif")
    assert mask_relpath("scan.png") == PurePosixPath("scan.tif")
    assert mask_relpath("noext") == PurePosixPath("noext.tif")
    assert mask_relpath("zmq:frame-7") == PurePosixPath("zmq/frame-7.tif")
    assert mask_relpath("zmq:a/../b") == PurePosixPath("zmq/a_.._b.tif")
    assert mask_relpath("../escape.tif") is None
    assert mask_relpath("/etc/passwd") is None


def test_export_masks_and_csvs(store_path: Path, tmp_path: Path) -> None:
    masks, frames_csv, artifacts_csv = tmp_path / "m", tmp_path / "f.csv", tmp_path / "out/a.csv"
    rc = cli_main([
        "export", str(store_path), "--masks", str(masks), "--frames", str(frames_csv),
        "--artifacts", str(artifacts_csv),
    ])
    assert rc == 0

    store = open_store_readonly(store_path)
    frames = store.frame_table()
    arts = store.artifact_table()

    expected = {
        "plate1/A01_f1.tif": (0, np.uint8),
        "plate1/sub/B02_f1.tif": (1, np.uint16),
        "zmq/frame-2.tif": (2, np.uint8),
        "top.tif": (3, np.uint8),
    }
    written = sorted(p.relative_to(masks).as_posix() for p in masks.rglob("*") if p.is_file())
    assert written == sorted(expected)
    for rel, (row, dtype) in expected.items():
        image = tifffile.imread(masks / rel)
        assert image.dtype == dtype
        assert image.shape == (int(frames["height"][row]), int(frames["width"][row]))
        np.testing.assert_array_equal(image, store.mask(row))
    assert tifffile.imread(masks / "top.tif").shape == (24, 24)
    assert int(tifffile.imread(masks / "plate1/sub/B02_f1.tif").max()) == 300

    header, rows = read_csv(frames_csv)
    plain = plain_table(store_path, "frames")
    assert header[:2] == ["frame_row", "current"]
    assert sorted(header[2:]) == sorted(plain), "every column the store holds is exported"
    assert len(rows) == 4
    for i, row in enumerate(rows):
        assert row["frame_row"] == str(i) and row["current"] == "true"
        for name, values in plain.items():
            assert_cell(row[name], values[i])

    header, rows = read_csv(artifacts_csv)
    plain = plain_table(store_path, "artifacts")
    assert sorted(header) == sorted(plain)
    assert {"frame_row", "major_axis_px", "minor_axis_px", "mean_intensity"} <= set(header)
    assert len(rows) == len(arts["label"]) == 3 + 300 + 3
    for i in (0, 5, len(rows) - 1):
        for name, values in plain.items():
            assert_cell(rows[i][name], values[i])
    store.close()


def plain_table(store_path: Path, table: str) -> dict[str, np.ndarray]:
    """A table read with plain zarr: every column array, up to the committed row count."""
    root = zarr.open_group(store_path, mode="r")
    n = root.attrs["committed"][table]
    group = root[table]
    return {name: np.asarray(group[name][:n]) for name in group.array_keys()}


def assert_cell(cell: str, value) -> None:
    if isinstance(value, (bool, np.bool_)):
        assert cell == ("true" if value else "false")
    elif isinstance(value, (float, np.floating)):
        assert cell == "" if math.isnan(value) else float(cell) == pytest.approx(float(value))
    elif isinstance(value, (int, np.integer)):
        assert int(cell) == value
    else:
        assert cell == str(value)


def test_a_rewritten_file_exports_its_current_row_unless_history_is_asked(tmp_path: Path) -> None:
    path = tmp_path / "r.zarr"
    old = make_result(0, source="w/A.tif", size=1, n_artifacts=2)
    new = make_result(1, source="w/A.tif", size=2, n_artifacts=5)
    other = make_result(2, source="w/B.tif", n_artifacts=1)
    with ResultsStore(path) as store:
        store.append([old, other])
        store.append([new])
    frames, arts = tmp_path / "f.csv", tmp_path / "a.csv"
    assert cli_main(["export", str(path), "--frames", str(frames), "--artifacts", str(arts)]) == 0
    _, rows = read_csv(frames)
    assert [(r["source"], r["frame_row"], r["current"]) for r in rows] == [
        ("w/B.tif", "1", "true"), ("w/A.tif", "2", "true")]
    _, rows = read_csv(arts)
    assert sorted(r["frame_row"] for r in rows) == ["1"] + ["2"] * 5

    assert cli_main(["export", str(path), "--frames", str(frames), "--artifacts", str(arts),
                     "--history"]) == 0
    _, rows = read_csv(frames)
    assert [(r["source"], r["current"]) for r in rows] == [
        ("w/A.tif", "false"), ("w/B.tif", "true"), ("w/A.tif", "true")]
    _, rows = read_csv(arts)
    assert len(rows) == 2 + 1 + 5


def test_the_failure_table_is_exported(tmp_path: Path) -> None:
    from daemon.frames import FrameFailure, FrameKey

    path = tmp_path / "r.zarr"
    with ResultsStore(path) as store:
        store.record_failures([FrameFailure("p/x.tif", "truncated", "p/x.tif: ends early",
                                            FrameKey("p/x.tif", 10, 1))])
    out = tmp_path / "failures.csv"
    assert cli_main(["export", str(path), "--failures", str(out)]) == 0
    header, rows = read_csv(out)
    assert sorted(header) == sorted(plain_table(path, "failures"))
    assert [(r["source"], r["reason"]) for r in rows] == [("p/x.tif", "truncated")]


def test_any_single_option(store_path: Path, tmp_path: Path) -> None:
    assert cli_main(["export", str(store_path), "--frames", str(tmp_path / "f.csv")]) == 0
    assert (tmp_path / "f.csv").exists() and not (tmp_path / "a.csv").exists()
    assert cli_main(["export", str(store_path), "--masks", str(tmp_path / "m")]) == 0
    assert len(list((tmp_path / "m").rglob("*.tif"))) == 4
    assert not list(tmp_path.rglob("*.tmp"))


def test_latest_version_of_a_file_wins(tmp_path: Path) -> None:
    path = tmp_path / "r.zarr"
    old = make_result(0, source="w/A.tif", size=1)
    new = make_result(1, source="w/A.tif", size=2, n_artifacts=5)
    with ResultsStore(path) as store:
        store.append([old])
        store.append([new])
    assert cli_main(["export", str(path), "--masks", str(tmp_path / "m")]) == 0
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "m/w/A.tif"), new.labels)


def test_bad_store_paths_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.zarr"
    assert cli_main(["export", str(missing), "--frames", str(tmp_path / "f.csv")]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and err.count("\n") == 1

    folder = tmp_path / "plain"
    folder.mkdir()
    assert cli_main(["export", str(folder), "--masks", str(tmp_path / "m")]) == 2
    assert "not a results store" in capsys.readouterr().err

    other = tmp_path / "other.zarr"
    zarr.open_group(str(other), mode="w")
    assert cli_main(["export", str(other), "--frames", str(tmp_path / "f.csv")]) == 2
    assert "not an artifactd results store" in capsys.readouterr().err

    assert cli_main(["export", str(other)]) == 2
    assert "nothing to export" in capsys.readouterr().err
    assert not (tmp_path / "f.csv").exists()
