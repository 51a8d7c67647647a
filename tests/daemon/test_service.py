"""The service end to end: a real subprocess, real watchdog, real zarr, real /metrics."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter

import numpy as np
import pytest
import tifffile
from prometheus_client.parser import text_string_to_metric_families

from daemon.results.store import ResultsStore
from tests.daemon.badfiles import write_bad_corpus
from tests.daemon.service_helpers import (
    config_file,
    journaled_keys,
    metrics_port,
    run_once,
    scrape,
    start_service,
    stop,
    stored_sources,
    tree_digest,
    wait_for,
    write_frames,
)

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def plant(tmp_path):
    """An input folder, a store path and a log file."""
    folder = tmp_path / "in"
    folder.mkdir()
    return folder, tmp_path / "out" / "results.zarr", tmp_path / "service.log"


def test_once_processes_backlog_and_records_bad_files(tmp_path, plant):
    folder, store, log = plant
    frames = write_frames(folder, 6)
    bad = write_bad_corpus(folder / "bad")
    before = tree_digest(folder)
    result = run_once(config_file(tmp_path, input_dir=folder, store=store), log)
    assert result.returncode == 0, log.read_text()

    reader = ResultsStore(store, read_only=True)
    table = reader.frame_table()
    assert sorted(map(str, table["source"])) == sorted(
        str(p.relative_to(folder)) for p in frames
    )
    assert set(map(str, table["well"])) == {"A01", "A02"}  # Operetta names: r01c01, r01c02
    failures = reader.failure_table()
    by_source = dict(zip(map(str, failures["source"]), map(str, failures["reason"]), strict=True))
    assert by_source == {f"bad/{name}": reason for name, reason in bad.items()}
    reader.close()
    text = log.read_text()
    for name in bad:
        assert text.count(name) == 1, f"{name} should be logged exactly once"
    assert tree_digest(folder) == before  # the user's files are untouched


def test_live_folder_metrics_and_sigterm(tmp_path, plant):
    folder, store, log = plant
    config = config_file(tmp_path, input_dir=folder, store=store)
    process = start_service(config, log=log)
    try:
        port = metrics_port(log)
        # An instrument writing in chunks while the service watches.
        def writer() -> None:
            paths = write_frames(tmp_path / "staging", 5, seed=11)
            (folder / "Plate1").mkdir()
            for path in paths:
                data = path.read_bytes()
                with open(folder / "Plate1" / path.name, "wb") as out:
                    for start in range(0, len(data), 8192):
                        out.write(data[start : start + 8192])
                        out.flush()
                        time.sleep(0.002)

        thread = threading.Thread(target=writer)
        thread.start()
        thread.join()
        (folder / "Plate1" / "garbage.tif").write_bytes(b"not a tiff at all")
        wait_for(lambda: len(stored_sources(store)) == 5, 90, "5 frames in the store")
        families = {f.name: f for f in text_string_to_metric_families(scrape(port))}
        processed = sum(s.value for s in families["artifactd_frames"].samples
                        if s.name == "artifactd_frames_total")
        assert processed == 5
        wait_for(lambda: "not_tiff" in scrape(port), 30, "the bad file to be counted")
        families = {f.name: f for f in text_string_to_metric_families(scrape(port))}
        failed = {s.labels["reason"]: s.value for s in families["artifactd_frames_failed"].samples
                  if s.name == "artifactd_frames_failed_total"}
        assert failed == {"not_tiff": 1.0}
        info = [s.labels for s in families["artifactd_engine_info"].samples]
        assert info and info[0]["backend"] == "onnxruntime"
        latency = [s for s in families["artifactd_frame_latency_seconds"].samples
                   if s.name.endswith("_count")]
        assert latency[0].value == 5
        for name in ("artifactd_inference_seconds", "artifactd_batch_size",
                     "artifactd_queue_depth", "artifactd_artifact_area_fraction"):
            assert name in families
    finally:
        code = stop(process)
    assert code == 0, log.read_text()
    assert "drain (complete" in log.read_text()


def test_kill9_then_restart_writes_every_frame_exactly_once(tmp_path, plant):
    folder, store, log = plant
    frames = write_frames(folder, 40, size=512)
    config = config_file(tmp_path, input_dir=folder, store=store, pipeline={"max_batch": 2},
                         model={"segment": "all"})
    process = start_service(config, log=log)
    try:
        wait_for(lambda: len(stored_sources(store)) >= 2, 120, "some frames to be written",
                 interval=0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    assert len(stored_sources(store)) < len(frames), "killed too late to test a restart"
    result = run_once(config, log)
    assert result.returncode == 0, log.read_text()
    counts = Counter(stored_sources(store))
    expected = {str(p.relative_to(folder)) for p in frames}
    assert set(counts) == expected
    assert max(counts.values()) == 1
    assert len(journaled_keys(store.parent / (store.name + ".journal.sqlite"))) == len(frames)


def test_sigterm_drains_consistently_and_restart_finishes(tmp_path, plant):
    folder, store, log = plant
    frames = write_frames(folder, 40, size=512)
    config = config_file(tmp_path, input_dir=folder, store=store, model={"segment": "all"})
    process = start_service(config, log=log)
    wait_for(lambda: len(stored_sources(store)) >= 1, 120, "a first frame", interval=0.05)
    started = time.monotonic()
    assert stop(process, signal.SIGTERM, timeout=60) == 0, log.read_text()
    assert time.monotonic() - started < 60
    stored = Counter(stored_sources(store))
    journal = store.parent / (store.name + ".journal.sqlite")
    journaled = {key.source for key in journaled_keys(journal)}
    assert set(stored) == journaled, "drained: every durable frame is committed, and only those"
    assert run_once(config, log).returncode == 0
    counts = Counter(stored_sources(store))
    assert len(counts) == len(frames) and max(counts.values()) == 1


def test_second_signal_exits_at_once_and_restart_completes(tmp_path, plant):
    folder, store, log = plant
    frames = write_frames(folder, 40, size=512)
    config = config_file(tmp_path, input_dir=folder, store=store, pipeline={"max_batch": 1},
                         model={"segment": "all"})
    process = start_service(config, log=log)
    wait_for(lambda: len(stored_sources(store)) >= 1, 120, "a first frame", interval=0.05)
    process.send_signal(signal.SIGTERM)
    # A second signal sent before the first is handled would merge with it in the kernel.
    wait_for(lambda: "draining" in log.read_text(), 30, "the first signal to be handled", 0.02)
    process.send_signal(signal.SIGTERM)
    code = process.wait(30)
    assert code == 128 + signal.SIGTERM
    result = run_once(config, log)
    assert result.returncode == 0, log.read_text()
    counts = Counter(stored_sources(store))
    assert len(counts) == len(frames) and max(counts.values()) == 1


def test_masks_match_frames_and_tables(tmp_path, plant):
    folder, store, log = plant
    paths = write_frames(folder, 4, size=256, seed=3)
    assert run_once(config_file(tmp_path, input_dir=folder, store=store,
                                model={"segment": "all"}), log).returncode == 0
    reader = ResultsStore(store, read_only=True)
    table = reader.frame_table()
    artifacts = reader.artifact_table()
    for row, source in enumerate(map(str, table["source"])):
        mask = reader.mask(row)
        frame = tifffile.imread(folder / source)
        assert mask.shape == frame.shape
        assert int(table["n_artifacts"][row]) == len(np.unique(mask)) - 1
        assert np.isclose(float(table["area_fraction"][row]), (mask > 0).mean())
    assert len(artifacts["label"]) == int(np.sum(table["n_artifacts"]))
    reader.close()
    assert len(paths) == len(table["source"])


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ("[pipeline]\nmax_bach = 4\n", "pipeline.max_bach"),
        ("[pipeline]\nmax_batch = 'four'\n", "pipeline.max_batch"),
        ("[model]\nbackend = 'quantum'\n", "model.backend"),
        ("[nonsense]\n", "[nonsense]"),
        ("this is = not toml [", "not valid TOML"),
    ],
)
def test_invalid_config_stops_startup_naming_the_key(tmp_path, body, named):
    config = tmp_path / "bad.toml"
    config.write_text(body)
    log = tmp_path / "log"
    result = run_once(config, log, timeout=60)
    assert result.returncode == 2
    assert named in log.read_text()


def test_unwritable_output_stops_startup_clearly(tmp_path, plant):
    folder, _, log = plant
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    config = config_file(tmp_path, input_dir=folder, store=blocker / "results.zarr")
    result = run_once(config, log, timeout=60)
    assert result.returncode == 1
    assert "results.zarr" in log.read_text()
