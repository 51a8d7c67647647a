"""The fake instrument: what it writes, how fast, and that the folder source and decoder take it."""

from __future__ import annotations

import csv
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from daemon.cli import main as cli_main
from daemon.config import InputConfig, MetadataConfig
from daemon.decode.tiff import DecodeOptions, read_frame
from daemon.frames import ReadyFile
from daemon.sources.fs import FolderSource
from daemon.tools.simulate import SimulateOptions, simulate_plate
from tests.daemon.test_decode import ready

SMALL = {"size": 64, "pixel_size_um": 0.5, "rate": 0.0}
DECODE = DecodeOptions(max_pixels=10_000, channel=0, plane=0, rgb="refuse")


def test_writes_at_about_the_rate_and_files_decode(tmp_path: Path) -> None:
    started = time.monotonic()
    options = SimulateOptions(**{**SMALL, "rate": 20.0}, fields=3, limit=8)
    written = simulate_plate(tmp_path, options)
    elapsed = time.monotonic() - started
    assert len(written) == 8
    assert 7 / 20 * 0.9 <= elapsed < 2.0
    names = [p.relative_to(tmp_path).as_posix() for p in written]
    assert names[:4] == [
        "SimPlate/r01c01f01p01-ch1sk1fk1fl1.tiff", "SimPlate/r01c01f02p01-ch1sk1fk1fl1.tiff",
        "SimPlate/r01c01f03p01-ch1sk1fk1fl1.tiff", "SimPlate/r01c02f01p01-ch1sk1fk1fl1.tiff",
    ]
    frame = read_frame(ready(written[3], tmp_path), DECODE)
    assert frame.pixels.shape == (64, 64) and frame.pixels.dtype.name == "uint16"
    assert frame.meta.pixel_size_um == pytest.approx(0.5, rel=1e-4)
    assert (frame.meta.plate, frame.meta.well, frame.meta.field, frame.meta.channel) == (
        "SimPlate", "A02", 1, 1)


def test_imagexpress_naming_channels_and_truth(tmp_path: Path) -> None:
    options = SimulateOptions(
        **SMALL, plate=384, fields=2, channels=2, naming="imagexpress", plate_name="P9",
        contaminated_wells=("A02",), artifact_probability=0.0, contaminated_probability=1.0,
        limit=8, truth=tmp_path / "truth" / "labels.csv",
    )
    written = simulate_plate(tmp_path / "frames", options)
    assert [p.name for p in written[:4]] == [
        "P9_A01_s1_w1.tif", "P9_A01_s1_w2.tif", "P9_A01_s2_w1.tif", "P9_A01_s2_w2.tif"]
    with open(tmp_path / "truth" / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [row["source"] for row in rows] == [p.name for p in written]
    assert {row["well"]: row["label"] for row in rows} == {"A01": "clean", "A02": "artifact"}
    assert all(int(row["n_artifacts"]) > 0 for row in rows if row["well"] == "A02")
    meta = read_frame(ready(written[7], tmp_path / "frames"), DECODE).meta
    assert (meta.plate, meta.well, meta.field, meta.channel) == ("P9", "A02", 2, 2)
    assert sorted(p.name for p in (tmp_path / "truth").iterdir()) == ["labels.csv"]


def test_rename_leaves_no_part_files(tmp_path: Path) -> None:
    written = simulate_plate(tmp_path, SimulateOptions(**SMALL, rename=True, limit=5))
    assert len(written) == 5
    files = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    assert files == sorted(written)


def test_stop_event_ends_the_run_early(tmp_path: Path) -> None:
    stop = threading.Event()
    timer = threading.Timer(0.3, stop.set)
    timer.start()
    try:
        written = simulate_plate(tmp_path, SimulateOptions(**{**SMALL, "rate": 10.0}), stop)
    finally:
        timer.cancel()
        timer.join()
    assert 1 <= len(written) <= 6


def test_invalid_options_name_the_flag() -> None:
    with pytest.raises(ValueError, match="--contaminated-wells: Q01"):
        SimulateOptions(contaminated_wells=("Q01",))
    with pytest.raises(ValueError, match="--plate"):
        SimulateOptions(plate=100)


def test_command_line(tmp_path: Path) -> None:
    code = cli_main(["simulate", "--out", str(tmp_path), "--rate", "0", "--size", "48",
                     "--fields", "1", "--limit", "3", "--naming", "imagexpress", "--rename",
                     "--contaminated-wells", "a02", "--truth", str(tmp_path / "t.csv")])
    assert code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "SimPlate_A01_s1_w1.tif", "SimPlate_A02_s1_w1.tif", "SimPlate_A03_s1_w1.tif", "t.csv"]
    assert cli_main(["simulate", "--out", str(tmp_path), "--contaminated-wells", "Z99"]) == 2


def test_folder_source_takes_each_simulated_file_once(tmp_path: Path) -> None:
    handed: list[ReadyFile] = []
    source = FolderSource(InputConfig(settle_s=5.0), handed.append, is_done=lambda key: False,
                          root=tmp_path)
    source.start()
    try:
        written = simulate_plate(
            tmp_path, SimulateOptions(**{**SMALL, "rate": 50.0}, chunk_bytes=1024, limit=12))
        deadline = time.monotonic() + 5.0
        while len(handed) < len(written) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)
    finally:
        source.stop()
    assert sorted(item.path for item in handed) == sorted(written)
    decode = DecodeOptions(max_pixels=10_000, channel=0, plane=0, rgb="refuse",
                           metadata=MetadataConfig(preset="operetta"))
    wells = {read_frame(item, decode).meta.well for item in handed}
    assert wells == {"A01", "A02", "A03"}


def test_smudge_dims_the_same_place_of_every_field_and_the_truth_says_so(tmp_path: Path) -> None:
    options = {**SMALL, "size": 96, "fields": 2, "limit": 4, "artifact_probability": 0.0}
    clean = simulate_plate(tmp_path / "clean", SimulateOptions(**options))
    smudged = simulate_plate(tmp_path / "smudged", SimulateOptions(
        **options, smudge=(0.25, 0.75, 0.1), truth=tmp_path / "truth.csv"))
    centre, corner = (slice(20, 28), slice(67, 75)), (slice(80, 88), slice(5, 13))
    for before, after in zip(clean, smudged, strict=True):
        a = read_frame(ready(before, tmp_path / "clean"), DECODE).pixels.astype(float)
        b = read_frame(ready(after, tmp_path / "smudged"), DECODE).pixels.astype(float)
        # Dimmed to about exp(-1) at its centre, untouched far from it, in every field.
        assert 0.3 < b[centre].mean() / a[centre].mean() < 0.45
        assert np.array_equal(a[corner], b[corner])
    with open(tmp_path / "truth.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {(row["label"], row["smudge"]) for row in rows} == {("clean", "True")}


def test_smudge_on_the_command_line(tmp_path: Path, capsys) -> None:
    common = ["simulate", "--out", str(tmp_path), "--rate", "0", "--size", "48", "--fields", "1",
              "--limit", "1"]
    assert cli_main([*common, "--smudge"]) == 0  # at the default place
    assert cli_main([*common, "--smudge", "0.5,0.5,0.1"]) == 0
    assert cli_main([*common, "--smudge", "0.5,0.5,0.9"]) == 2
    with pytest.raises(SystemExit):
        cli_main([*common, "--smudge", "middle"])
    assert "expected Y,X,RADIUS as three numbers" in capsys.readouterr().err
