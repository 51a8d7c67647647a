"""`artifactd bench`: a bounded smoke run on tiny frames, and the offered-load batcher on a
simulated clock."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from daemon.cli import main as cli_main
from engines.evaluation.bench import (
    BenchOptions,
    markdown_table,
    measure_offered,
    measure_throughput,
    synthetic_frames,
)
from engines.runtime.base import EngineInfo
from tests.engines.test_backends import make_tiny_model


@pytest.fixture(scope="session")
def tiny_model_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 1e-6)


class FakeEngine:
    """Takes `fixed + per_frame * n` simulated seconds per call."""

    def __init__(self, clock: Clock, fixed: float, per_frame: float) -> None:
        self.clock, self.fixed, self.per_frame = clock, fixed, per_frame
        self.batches: list[int] = []
        self.info = EngineInfo("fake", "m", "fp32", "cpu")

    def detect(self, frames: np.ndarray) -> np.ndarray:
        self.batches.append(len(frames))
        self.clock.now += self.fixed + self.per_frame * len(frames)
        return np.zeros(len(frames), np.float32)

    segment = detect

    def close(self) -> None:
        pass


def options(**changes: object) -> BenchOptions:
    base = dict(backends=("fake",), precisions=("fp32",), batch_sizes=(8,), sizes=((8, 8),),
                frames=200, seconds=2.0, task="detect")
    base.update(changes)
    return BenchOptions(**base)  # type: ignore[arg-type]


def test_offered_load_that_is_kept_up_with() -> None:
    clock = Clock()
    engine = FakeEngine(clock, fixed=0.002, per_frame=0.001)
    frames = synthetic_frames(8, 8, 8)
    done, _, latencies, kept_up = measure_offered(
        engine, frames, 8, options(offered_rate=100.0), clock=clock, sleep=clock.sleep)
    assert kept_up and done == 200 and len(latencies) == 200
    assert max(latencies) < 0.01  # a frame waits at most for the batch in flight
    assert set(engine.batches[3:]) <= {1, 2}  # greedy: frames go as they arrive


def test_offered_load_that_falls_behind_is_reported() -> None:
    clock = Clock()
    engine = FakeEngine(clock, fixed=0.05, per_frame=0.02)  # ~ 45 frames/s at batch 8
    frames = synthetic_frames(8, 8, 8)
    _, _, latencies, kept_up = measure_offered(
        engine, frames, 8, options(offered_rate=100.0, frames=1000, seconds=1.0),
        clock=clock, sleep=clock.sleep)
    assert not kept_up
    assert np.percentile(latencies, 99) > 1.0
    assert max(engine.batches) == 8


def test_max_wait_builds_fuller_batches() -> None:
    clock = Clock()
    engine = FakeEngine(clock, fixed=0.001, per_frame=0.0)
    measure_offered(engine, synthetic_frames(8, 8, 8), 4,
                    options(offered_rate=100.0, max_wait_ms=50.0), clock=clock,
                    sleep=clock.sleep)
    assert max(engine.batches[3:]) == 4


def test_throughput_is_bounded_by_frames_and_time() -> None:
    clock = Clock()
    engine = FakeEngine(clock, fixed=0.01, per_frame=0.0)
    done, seconds, latencies = measure_throughput(
        engine, synthetic_frames(8, 8, 8), 4, options(frames=40), clock=clock)
    assert done == 40 and len(latencies) == 10
    done, seconds, _ = measure_throughput(
        engine, synthetic_frames(8, 8, 8), 4, options(frames=10**6, seconds=0.5), clock=clock)
    assert seconds == pytest.approx(0.5, abs=0.02)


def test_synthetic_frames() -> None:
    frames = synthetic_frames(3, 40, 50, seed=1)
    assert frames.shape == (3, 40, 50) and frames.dtype == np.uint16
    assert frames.min() < frames.mean() < 65535
    np.testing.assert_array_equal(frames, synthetic_frames(3, 40, 50, seed=1))


@pytest.mark.slow
def test_bench_smoke_run(tiny_model_folder: Path, tmp_path: Path,
                         capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "bench.json"
    code = cli_main([
        "bench", "--model", str(tiny_model_folder),
        "--backends", "onnxruntime,torch-eager,tensorrt", "--precisions", "fp32",
        "--batch-sizes", "1,2", "--sizes", "32x48", "--frames", "4", "--seconds", "2",
        "--offered-rate", "200", "--out", str(out),
    ])
    assert code == 0
    table = capsys.readouterr().out
    assert table.startswith("| backend | precision |")
    report = json.loads(out.read_text())
    rows = report["results"]
    ok = [r for r in rows if r["status"] == "ok"]
    assert {(r["backend"], r["batch"], r["mode"]) for r in ok} >= {
        ("onnxruntime", 1, "throughput"), ("onnxruntime", 2, "offered"),
        ("torch-eager", 2, "throughput"),
    }
    for r in ok:
        assert r["frames"] > 0 and r["frames_per_s"] > 0 and r["p99_ms"] >= r["p50_ms"] > 0
        assert r["megapixels_per_s"] == pytest.approx(r["frames_per_s"] * 32 * 48 / 1e6,
                                                      abs=0.1)
    trt = [r for r in rows if r["backend"] == "tensorrt"]
    assert trt and all(r["status"] == "ok" or r["status"].startswith("skipped:") for r in trt)
    assert report["environment"]["python"] and report["model"].startswith("tiny-0-")


def test_bench_refuses_bad_arguments(capsys: pytest.CaptureFixture) -> None:
    assert cli_main(["bench", "--backends", "openvino"]) == 2
    assert "unknown" in capsys.readouterr().err
    assert cli_main(["bench", "--sizes", "big"]) == 2
    assert "HEIGHTxWIDTH" in capsys.readouterr().err


def test_markdown_table_marks_skips_and_falling_behind() -> None:
    from engines.evaluation.bench import BenchResult

    rows = [BenchResult("tensorrt", "fp16", "8x8", 1, "throughput", "skipped: no GPU"),
            BenchResult("torch", "fp32", "8x8", 1, "offered", "ok", device="cpu",
                        offered_fps=100.0, kept_up=False)]
    table = markdown_table(rows)
    assert "skipped: no GPU" in table and "offered 100/s (fell behind)" in table
