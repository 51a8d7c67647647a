"""How the pipeline fails: one bad result never stalls it, passing faults are tried again and
never journaled as done, and `--once` says when something is left to process again."""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from daemon.config import Config
from daemon.decode.tiff import DecodeOptions
from daemon.frames import Frame, FrameKey, FrameMeta, ReadyFile
from daemon.ops.metrics import Metrics
from daemon.pipeline.analysis import Analysis, postprocess_options
from daemon.pipeline.stages import Pipeline, PipelineParts
from daemon.results.journal import Journal
from daemon.results.store import ResultsStore
from daemon.service import Service, configure
from daemon.sources.fs import FolderSource
from engines.data.synth import SynthOptions, frame_for
from engines.runtime.modelcard import load_model
from engines.select import create_engines
from tests.daemon.service_helpers import REPO, config_file, stored_sources, wait_for, write_frames

pytestmark = pytest.mark.timeout(240)


class FlakyEngine:
    """The real engine, failing its first `faults` detector calls (a passing CUDA fault cannot
    be caused on this machine; everything else here is real)."""

    def __init__(self, engine, faults: int) -> None:
        self.engine = engine
        self.info = engine.info
        self.bundle = engine.bundle
        self.faults = faults

    def detect(self, frames):
        if self.faults > 0:
            self.faults -= 1
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return self.engine.detect(frames)

    def segment(self, frames):
        return self.engine.segment(frames)

    def close(self) -> None:
        self.engine.close()


def pipeline_for(tmp_path: Path, *, faults: int = 0, retries: int = 3, retry_delay_s: float = 0.05):
    bundle = load_model("default")
    config = Config().with_section("pipeline", max_batch=1, engine_workers=1, retries=retries,
                                   retry_delay_s=retry_delay_s)
    engine = FlakyEngine(create_engines(bundle, backend="onnxruntime", workers=1)[0], faults)
    store = ResultsStore(tmp_path / "out.zarr")
    journal = Journal(tmp_path / "journal.sqlite")
    metrics = Metrics()
    pipeline = Pipeline(PipelineParts(
        engines=[engine], store=store, journal=journal, metrics=metrics,
        decode=DecodeOptions.from_config(config.input, config.metadata),
        analysis=Analysis(postprocess_options(config, bundle), bundle.card.detect_threshold),
    ), config.pipeline)
    return pipeline, store, journal, metrics, engine


def streamed(frame_id: str, seed: int) -> Frame:
    image = frame_for(seed, 0, SynthOptions(height=128, width=128)).image
    return Frame(FrameMeta(f"zmq:{frame_id}"), image, time.monotonic(), frame_id=frame_id)


def ready(root: Path, path: Path) -> ReadyFile:
    st = path.stat()
    return ReadyFile(path, FrameKey(path.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns),
                     time.monotonic())


def close_all(store, journal, engine) -> None:
    engine.close()
    store.close()
    journal.close()


def test_a_result_the_store_refuses_fails_alone_and_the_next_ten_are_stored(tmp_path):
    # A JSON header may carry "\udcff" (a lone surrogate): no UTF-8 table can hold that id.
    pipeline, store, journal, metrics, engine = pipeline_for(tmp_path)
    pipeline.start()
    assert pipeline.submit_frame(streamed("bad\udcff", 1))
    for i in range(10):
        assert pipeline.submit_frame(streamed(f"good-{i}", 2 + i))
    assert pipeline.drain(60), "the writer must not retry a refused result forever"

    stored = sorted(store.frame_table()["source"].tolist())
    assert stored == sorted(f"zmq:good-{i}" for i in range(10))
    failures = store.failure_table()
    assert failures["reason"].tolist() == ["unstorable"]
    assert failures["source"].tolist() == ["zmq:bad\\udcff"]  # kept readable, escaped
    assert metrics.registry.get_sample_value("artifactd_store_retries_total") == 0
    assert pipeline.tally.failed == {"unstorable": 1}
    assert pipeline.tally.clean + pipeline.tally.flagged == 10
    close_all(store, journal, engine)


def test_a_passing_inference_fault_is_tried_again_and_the_frame_is_processed(tmp_path):
    root = tmp_path / "in"
    paths = write_frames(root, 3, size=128)
    pipeline, store, journal, metrics, engine = pipeline_for(tmp_path, faults=2)
    pipeline.start()
    for path in paths:
        assert pipeline.submit_file(ready(root, path))
    wait_for(lambda: pipeline.in_flight == 0, 60, "every frame to be durable")
    assert pipeline.drain(60)

    assert sorted(store.frame_table()["source"].tolist()) == sorted(
        p.relative_to(root).as_posix() for p in paths)
    assert len(store.failure_table()["source"]) == 0
    assert metrics.registry.get_sample_value(
        "artifactd_frames_retried_total", {"reason": "inference"}) == 2
    assert all(journal.outcome(ready(root, p).key) in ("clean", "flagged") for p in paths)
    close_all(store, journal, engine)


def test_a_lasting_inference_fault_is_recorded_but_not_journaled_as_done(tmp_path):
    root = tmp_path / "in"
    [path] = write_frames(root, 1, size=128)
    pipeline, store, journal, _metrics, engine = pipeline_for(tmp_path, faults=100, retries=2)
    pipeline.start()
    assert pipeline.submit_file(ready(root, path))
    wait_for(lambda: pipeline.in_flight == 0, 60, "the frame's last try")
    assert pipeline.drain(60)

    failures = store.failure_table()
    assert failures["reason"].tolist() == ["inference"]
    assert "failed 3 time(s)" in failures["message"][0]
    assert "next start" in failures["message"][0]
    assert journal.outcome(ready(root, path).key) is None  # so the next start tries it again
    assert pipeline.tally.not_done == [path.relative_to(root).as_posix()]
    close_all(store, journal, engine)


def test_frames_waiting_out_a_back_off_at_drain_are_recorded_not_lost(tmp_path):
    root = tmp_path / "in"
    [path] = write_frames(root, 1, size=128)
    pipeline, store, journal, metrics, engine = pipeline_for(tmp_path, faults=1, retry_delay_s=30)
    pipeline.start()
    assert pipeline.submit_file(ready(root, path))
    wait_for(lambda: metrics.registry.get_sample_value(
        "artifactd_frames_retried_total", {"reason": "inference"}) == 1, 30, "the first fault")
    started = time.monotonic()
    assert pipeline.drain(60)
    assert time.monotonic() - started < 10, "drain must not wait out a 30 s back-off"
    assert store.failure_table()["reason"].tolist() == ["inference"]
    assert journal.outcome(ready(root, path).key) is None
    close_all(store, journal, engine)


# ----------------------------------------------------------------------------- real service


def without_root_override() -> list[str]:
    """Root reads any file whatever its mode; without its override capabilities a chmod bites."""
    if os.getuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root and setpriv (util-linux) is missing, so a chmod cannot "
                    "make a file unreadable to the service")
    caps = "-dac_override,-dac_read_search"
    return [setpriv, f"--bounding-set={caps}", f"--inh-caps={caps}", "--"]


def run_once_unprivileged(config: Path, log: Path) -> int:
    with log.open("ab") as handle:
        return subprocess.run(
            [*without_root_override(), sys.executable, "-m", "daemon.cli", "run", "--config",
             str(config), "--once"],
            cwd=REPO, stdout=handle, stderr=subprocess.STDOUT, timeout=180,
        ).returncode


def test_an_unreadable_file_is_not_done_and_is_processed_once_readable(tmp_path):
    folder = tmp_path / "in"
    paths = write_frames(folder, 3, size=128)
    locked = paths[1]
    os.chmod(locked, 0o000)
    mtime = locked.stat().st_mtime_ns
    store = tmp_path / "results.zarr"
    config = config_file(tmp_path, input_dir=folder, store=store,
                         pipeline={"retries": 2, "retry_delay_s": 0.1})
    log = tmp_path / "first.log"

    assert run_once_unprivileged(config, log) == 1, log.read_text()
    text = log.read_text()
    name = locked.relative_to(folder).as_posix()
    assert "2 frame(s) processed" in text and "failed: 1 permission" in text, text
    assert "next run processes them again" in text and name in text
    assert sorted(stored_sources(store)) == sorted(p.relative_to(folder).as_posix()
                                                   for p in paths if p != locked)

    os.chmod(locked, 0o644)  # fixed by hand: the mtime is unchanged
    assert locked.stat().st_mtime_ns == mtime
    log = tmp_path / "second.log"
    assert run_once_unprivileged(config, log) == 0, log.read_text()
    assert "1 frame(s) processed" in log.read_text()
    assert sorted(stored_sources(store)) == sorted(p.relative_to(folder).as_posix() for p in paths)


def test_a_file_name_that_is_not_utf8_is_processed_under_an_escaped_name(tmp_path):
    folder = tmp_path / "in"
    [path] = write_frames(folder, 1, size=128)
    odd = os.fsencode(path.parent) + b"/dust\xff.tif"
    os.rename(path, odd)
    config = config_file(tmp_path, input_dir=folder, store=tmp_path / "out.zarr")
    log = tmp_path / "once.log"
    with log.open("ab") as handle:
        done = subprocess.run([sys.executable, "-m", "daemon.cli", "run", "--config", str(config),
                               "--once"], cwd=REPO, stdout=handle, stderr=subprocess.STDOUT,
                              timeout=180)
    assert done.returncode == 0, log.read_text()
    assert stored_sources(tmp_path / "out.zarr") == ["Plate1/dust\\xff.tif"]


def test_once_names_a_file_it_could_not_hand_on_and_exits_1(tmp_path, monkeypatch, caplog):
    folder = tmp_path / "in"
    paths = write_frames(folder, 2, size=128)
    config_path = config_file(tmp_path, input_dir=folder, store=tmp_path / "out.zarr",
                              metrics={"enabled": False})
    blocked = paths[0].relative_to(folder).as_posix()
    real_is_done = Journal.is_done

    def locked_journal(self, key):  # another process holding the journal, as sqlite says it
        if key.source == blocked:
            raise sqlite3.OperationalError("database is locked")
        return real_is_done(self, key)

    monkeypatch.setattr(Journal, "is_done", locked_journal)
    args = type("Args", (), {"config": config_path, "input": None, "output": None,
                             "metrics_port": None})()
    service = Service(configure(args), once=True)
    with caplog.at_level(logging.INFO):
        code = service.run()
    assert code == 1
    assert any(blocked in r.getMessage() and "was not processed" in r.getMessage()
               for r in caplog.records)
    assert stored_sources(tmp_path / "out.zarr") == [paths[1].relative_to(folder).as_posix()]


def test_a_folder_source_remembers_what_it_could_not_hand_on(tmp_path):
    folder = tmp_path / "in"
    paths = write_frames(folder, 2, size=64)
    handed: list[str] = []

    def on_ready(ready_file: ReadyFile) -> None:
        if ready_file.path == paths[0]:
            raise OSError(28, "No space left on device")
        handed.append(ready_file.key.source)

    config = Config().with_section("input", folder=str(folder), settle_s=0.0).input
    source = FolderSource(config, on_ready, is_done=lambda key: False)
    source.start()
    try:
        wait_for(lambda: source.backlog_done, 30, "the backlog")
    finally:
        source.stop()
    assert handed == [paths[1].relative_to(folder).as_posix()]
    assert list(source.not_handed_on) == [str(paths[0])]
    assert "No space left on device" in source.not_handed_on[str(paths[0])]


def test_the_input_folder_is_checked_before_anything_is_created(tmp_path):
    config = config_file(tmp_path, input_dir=tmp_path / "no-such-folder",
                         store=tmp_path / "out.zarr",
                         output={"journal": str(tmp_path / "journal.sqlite")})
    done = subprocess.run([sys.executable, "-m", "daemon.cli", "run", "--config", str(config),
                           "--once"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "no-such-folder is not a folder" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out.zarr").exists() and not (tmp_path / "journal.sqlite").exists()
