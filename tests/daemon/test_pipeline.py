"""The pipeline with several engines side by side: real engines, store and journal."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

from daemon.config import Config
from daemon.decode.tiff import DecodeOptions
from daemon.frames import FrameKey, ReadyFile
from daemon.ops.metrics import Metrics
from daemon.pipeline.analysis import Analysis, postprocess_options
from daemon.pipeline.stages import Pipeline, PipelineParts
from daemon.results.journal import Journal
from daemon.results.store import ResultsStore
from engines.runtime.modelcard import load_model
from engines.select import create_engines
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
        analysis=Analysis(postprocess_options(config, bundle), bundle.card.detect_threshold),
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


class BlindDetector(CountingEngine):
    """A real engine whose detector scores every frame 0: only the segmenter can flag."""

    def detect(self, frames):
        return super().detect(frames) * 0.0


def obvious_artifact_frame(path: Path) -> Path:
    import numpy as np
    import tifffile

    from engines.data.synth import SynthOptions, frame_for

    frame = frame_for(123, 0, SynthOptions(height=512, width=512, artifact_probability=0.0)).image
    yy, xx = np.mgrid[:512, :512]
    dark = frame.astype(np.float64)
    dark[(yy - 300) ** 2 + (xx - 200) ** 2 <= 18**2] *= 0.35  # a dark 1000 px particle
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, dark.astype(np.uint16))
    return path


def run_one(tmp_path: Path, name: str, path: Path, segment_all: bool):
    bundle = load_model("default")
    config = Config()
    engine = BlindDetector(create_engines(bundle, backend="onnxruntime", workers=1)[0])
    store = ResultsStore(tmp_path / f"{name}.zarr")
    pipeline = Pipeline(PipelineParts(
        engines=[engine], store=store, journal=None, metrics=Metrics(),
        decode=DecodeOptions.from_config(config.input, config.metadata),
        analysis=Analysis(postprocess_options(config, bundle), bundle.card.detect_threshold,
                          segment_all),
    ), config.pipeline)
    pipeline.start()
    assert pipeline.submit_file(ready(path.parent, path))
    assert pipeline.drain(60)
    table = store.frame_table()
    engine.close()
    store.close()
    return table


def test_a_frame_the_segmenter_finds_artifacts_in_is_flagged_even_if_the_detector_is_not(tmp_path):
    path = obvious_artifact_frame(tmp_path / "in" / "dirty.tif")
    every = run_one(tmp_path, "all", path, segment_all=True)
    assert every["score"].tolist() == [0.0]
    assert every["flagged"].tolist() == [True]
    assert every["n_artifacts"][0] >= 1
    # Segmenting only the detector's flagged frames, the same frame passes as clean.
    gated = run_one(tmp_path, "flagged", path, segment_all=False)
    assert gated["flagged"].tolist() == [False]
    assert gated["n_artifacts"].tolist() == [0]
