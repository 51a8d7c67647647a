"""The pipeline with several engines side by side: real engines, store and journal."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

from daemon.config import Config
from daemon.decode import DecodeOptions
from daemon.frames import FrameKey, ReadyFile
from daemon.journal import Journal
from daemon.metrics import Metrics
from daemon.pipeline import Pipeline, PipelineParts
from daemon.service import postprocess_options
from daemon.store import ResultsStore
from engines.backends.select import create_engines
from engines.modelcard import load_model
from tests.daemon.service_helpers import write_frames


class CountingEngine:
    """A real engine that also notes which worker thread ran each batch."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.info = engine.info
        self.bundle = engine.bundle
        self.threads: Counter[str] = Counter()

    def detect(self, frames):
        self.threads[threading.current_thread().name] += 1
        return self.engine.detect(frames)

    def segment(self, frames):
        return self.engine.segment(frames)

    def close(self) -> None:
        self.engine.close()


def ready(root: Path, path: Path) -> ReadyFile:
    stat = path.stat()
    return ReadyFile(path, FrameKey(str(path.relative_to(root)), stat.st_size, stat.st_mtime_ns),
                     time.monotonic())


def test_engines_side_by_side_share_the_batches_and_every_frame_is_stored_once(tmp_path):
    root = tmp_path / "in"
    paths = write_frames(root, 16, size=160)
    bundle = load_model("default")
    config = Config().with_section("pipeline", max_batch=1, engine_workers=2)
    engines = [CountingEngine(e) for e in create_engines(bundle, backend="onnxruntime", workers=2)]
    store = ResultsStore(tmp_path / "out.zarr")
    journal = Journal(tmp_path / "journal.sqlite")
    pipeline = Pipeline(PipelineParts(
        engines=engines, store=store, journal=journal, metrics=Metrics(),
        decode=DecodeOptions.from_config(config.input, config.metadata),
        postprocess=postprocess_options(config, bundle),
        detect_threshold=bundle.card.detect_threshold,
    ), config.pipeline)
    pipeline.start()
    for path in paths:
        assert pipeline.submit_file(ready(root, path))
    assert pipeline.drain(60)

    assert sorted(store.frame_table()["source"].tolist()) == sorted(
        str(p.relative_to(root)) for p in paths)
    assert len(journal) == len(paths)
    # Each engine ran in its own worker thread, and both took batches.
    ran = [e.threads for e in engines]
    assert all(len(threads) == 1 for threads in ran), ran
    assert {next(iter(t)) for t in ran} == {"engine-0", "engine-1"}
    assert sum(sum(t.values()) for t in ran) == len(paths)
    for engine in engines:
        engine.close()
    store.close()
    journal.close()
