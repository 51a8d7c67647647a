"""`artifactd bench`: inference backends, precisions, batch sizes and frame sizes, measured.

For each backend x precision x frame size x batch size it runs detect + segment (what the
pipeline does per batch when every frame is segmented; --task picks one) on synthetic uint16
frames, numpy in and numpy out, so host<->device copies and on-device preprocessing are in the
figures. It reports frames/s, megapixels/s, p50/p99 batch latency and GPU memory, prints a
Markdown table and can write everything to JSON.

Offered-load mode (--offered-rate FPS): frames arrive at a fixed rate; a greedy batcher takes
every frame that has arrived (up to the batch size, waiting at most --max-wait-ms for more) and
runs it; per-frame latency is completion minus arrival, so queueing is counted. The rate is
"kept up with" when the last frame is done within a second of arriving. It runs in the calling
thread against an arrival schedule (no producer thread), and every configuration is bounded: at
most --frames frames, offered over at most --seconds, then at most 2 x --seconds to drain.

"torch-eager" is the torch backend in fp32 without CUDA graphs: the baseline the GPU targets are
stated against. A backend or precision that cannot run here is reported as skipped, with why.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engines.files import write_text_atomically
from engines.gpu.enginecache import parse_frame_size
from engines.runtime.modelcard import ModelBundle, ModelError, load_model

logger = logging.getLogger(__name__)

BENCH_BACKENDS = ("onnxruntime", "torch", "torch-eager", "tensorrt")
TASKS = ("both", "detect", "segment")
WARMUP_CALLS = 3  # the torch backend captures its CUDA graph on the second call
# Offered mode: the rate was kept up with when every offered frame is done within this long
# after the last one arrived.
KEPT_UP_DRAIN_S = 1.0


@dataclass(slots=True)
class BenchResult:
    backend: str
    precision: str
    size: str  # "HxW"
    batch: int
    mode: str  # "throughput" | "offered"
    status: str  # "ok" | "skipped: why" | "error: what"
    device: str = ""
    frames: int = 0
    seconds: float = 0.0
    frames_per_s: float = 0.0
    megapixels_per_s: float = 0.0
    p50_ms: float = 0.0  # batch latency (throughput) or per-frame latency (offered)
    p99_ms: float = 0.0
    gpu_memory_mib: float | None = None
    offered_fps: float | None = None
    kept_up: bool | None = None  # offered mode: done within KEPT_UP_DRAIN_S of the last arrival


@dataclass(frozen=True, slots=True)
class BenchOptions:
    backends: tuple[str, ...]
    precisions: tuple[str, ...]
    batch_sizes: tuple[int, ...]
    sizes: tuple[tuple[int, int], ...]
    frames: int = 256  # per configuration, at most
    seconds: float = 20.0  # per configuration, at most
    offered_rate: float | None = None
    max_wait_ms: float = 0.0
    task: str = "both"
    threads: int = 0
    engine_cache: Path | None = None
    seed: int = 0


def synthetic_frames(count: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """uint16 frames that look like a brightfield field: a smooth background, noise, specks."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    background = 1500 + 400 * np.sin(yy / max(height, 1) * 3.1) * np.cos(xx / max(width, 1) * 2.3)
    frames = np.empty((count, height, width), dtype=np.uint16)
    for i in range(count):
        frame = background + rng.normal(0, 60, (height, width)).astype(np.float32)
        for _ in range(3):
            cy, cx = rng.integers(0, height), rng.integers(0, width)
            r = rng.integers(4, 40)
            frame[max(cy - r, 0):cy + r, max(cx - r, 0):cx + r] -= 600
        frames[i] = np.clip(frame, 0, 65535).astype(np.uint16)
    return frames


def _percentile_ms(samples: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples) * 1e3, q)) if samples else 0.0


class _GpuMemory:
    """Peak GPU memory of one configuration, by whatever the backend can report."""

    def __init__(self, engine: Any, backend: str) -> None:
        self.engine, self.backend = engine, backend
        self.torch = None
        if backend.startswith("torch") and engine.info.device.startswith("cuda"):
            import torch

            self.torch = torch
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def read_mib(self) -> float | None:
        if self.torch is not None:
            return self.torch.cuda.max_memory_allocated() / 2**20
        if hasattr(self.engine, "gpu_memory_used"):  # TensorRT: device memory in use
            return self.engine.gpu_memory_used() / 2**20
        return None


def _runner(engine: Any, task: str) -> Callable[[np.ndarray], None]:
    if task == "detect":
        return engine.detect
    if task == "segment":
        return engine.segment

    def both(frames: np.ndarray) -> None:
        engine.detect(frames)
        engine.segment(frames)

    return both


def measure_throughput(engine: Any, frames: np.ndarray, batch: int, options: BenchOptions,
                       clock: Callable[[], float] = time.perf_counter) -> tuple[int, float, list]:
    """(frames done, seconds, per-batch latencies) with batches of `batch` frames."""
    run = _runner(engine, options.task)
    data = frames[:batch]
    for _ in range(WARMUP_CALLS):
        run(data)
    latencies: list[float] = []
    done = 0
    started = clock()
    while done < options.frames and clock() - started < options.seconds:
        t0 = clock()
        run(data)
        latencies.append(clock() - t0)
        done += batch
    return done, clock() - started, latencies


def measure_offered(engine: Any, frames: np.ndarray, batch: int, options: BenchOptions,
                    clock: Callable[[], float] = time.perf_counter,
                    sleep: Callable[[float], None] = time.sleep) -> tuple[int, float, list, bool]:
    """Frames arriving at options.offered_rate; returns (done, seconds, per-frame latencies,
    kept up)."""
    rate = float(options.offered_rate or 0)
    if rate <= 0:
        raise ValueError(f"offered rate {rate}: expected frames per second > 0")
    run = _runner(engine, options.task)
    for _ in range(WARMUP_CALLS):
        run(frames[:batch])
    total = max(1, min(options.frames, int(rate * options.seconds)))
    max_wait = options.max_wait_ms / 1e3
    start = clock()
    arrivals = start + np.arange(total) / rate
    latencies: list[float] = []
    next_frame = 0
    deadline = start + 2 * options.seconds + total / rate
    while next_frame < total:
        now = clock()
        if now > deadline:
            break
        arrived = int(np.searchsorted(arrivals, now, side="right"))
        waiting = arrived - next_frame
        if waiting <= 0:
            sleep(max(0.0, arrivals[next_frame] - now))
            continue
        if waiting < batch and now - arrivals[next_frame] < max_wait and arrived < total:
            sleep(min(arrivals[arrived] - now, arrivals[next_frame] + max_wait - now))
            continue
        count = min(batch, waiting)
        picks = np.arange(next_frame, next_frame + count) % len(frames)
        run(frames[picks])
        finished = clock()
        latencies.extend(finished - arrivals[next_frame:next_frame + count])
        next_frame += count
    end = clock()
    kept_up = bool(next_frame == total and end - arrivals[-1] <= KEPT_UP_DRAIN_S)
    return next_frame, end - start, latencies, kept_up


def _open(bundle: ModelBundle, backend: str, precision: str, max_batch: int,
          size: tuple[int, int], options: BenchOptions) -> Any:
    from engines.select import create_engine

    if backend == "torch-eager":
        if precision != "fp32":
            raise ValueError("torch-eager is the fp32 baseline; it runs fp32 only")
        from engines.pytorch.backend import TorchEngine
        from engines.select import choose_backend

        choice = choose_backend("torch", precision)
        return TorchEngine(bundle, device=choice.device, precision=precision,
                           threads=options.threads, cuda_graphs=False)
    return create_engine(bundle, backend=backend, precision=precision, threads=options.threads,
                         max_batch=max_batch, engine_cache=options.engine_cache,
                         frame_shape=size)


def run_bench(bundle: ModelBundle, options: BenchOptions) -> list[BenchResult]:
    results: list[BenchResult] = []
    max_batch = max(options.batch_sizes)
    for height, width in options.sizes:
        size = f"{height}x{width}"
        frames = synthetic_frames(max_batch, height, width, options.seed)
        for backend in options.backends:
            for precision in options.precisions:
                try:
                    engine = _open(bundle, backend, precision, max_batch, (height, width),
                                   options)
                except Exception as exc:  # one unavailable backend must not end the run
                    reason = f"skipped: {exc}"
                    logger.info("%s %s %s: %s", backend, precision, size, reason)
                    results += [BenchResult(backend, precision, size, b, "throughput", reason)
                                for b in options.batch_sizes]
                    continue
                try:
                    for batch in options.batch_sizes:
                        results.append(_one(engine, backend, precision, size, batch, frames,
                                            options))
                        if options.offered_rate:
                            results.append(_one(engine, backend, precision, size, batch,
                                                 frames, options, offered=True))
                finally:
                    engine.close()
    return results


def _one(engine: Any, backend: str, precision: str, size: str, batch: int, frames: np.ndarray,
         options: BenchOptions, *, offered: bool = False) -> BenchResult:
    mode = "offered" if offered else "throughput"
    result = BenchResult(backend, precision, size, batch, mode, "ok", device=engine.info.device)
    memory = _GpuMemory(engine, backend)
    try:
        if offered:
            done, seconds, latencies, kept_up = measure_offered(engine, frames, batch, options)
            result.offered_fps, result.kept_up = options.offered_rate, kept_up
        else:
            done, seconds, latencies = measure_throughput(engine, frames, batch, options)
    except Exception as exc:
        logger.warning("%s %s %s batch %d (%s): %s", backend, precision, size, batch, mode, exc)
        result.status = f"error: {type(exc).__name__}: {exc}"
        return result
    h, w = parse_frame_size(size)
    result.frames, result.seconds = done, round(seconds, 3)
    result.frames_per_s = round(done / seconds, 2) if seconds > 0 else 0.0
    result.megapixels_per_s = round(result.frames_per_s * h * w / 1e6, 1)
    result.p50_ms = round(_percentile_ms(latencies, 50), 2)
    result.p99_ms = round(_percentile_ms(latencies, 99), 2)
    mib = memory.read_mib()
    result.gpu_memory_mib = None if mib is None else round(mib, 1)
    logger.info("%s %s %s batch %d %s: %.1f frames/s, p99 %.1f ms", backend, precision, size,
                batch, mode, result.frames_per_s, result.p99_ms)
    return result


def markdown_table(results: list[BenchResult]) -> str:
    lines = [
        "| backend | precision | frames | batch | mode | frames/s | MP/s | p50 ms | p99 ms "
        "| GPU MiB | device | status |",
        "|---|---|---|---|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in results:
        mode = r.mode if r.offered_fps is None else (
            f"offered {r.offered_fps:g}/s" + ("" if r.kept_up else " (fell behind)"))
        memory = "" if r.gpu_memory_mib is None else f"{r.gpu_memory_mib:.0f}"
        lines.append(
            f"| {r.backend} | {r.precision} | {r.size} | {r.batch} | {mode} | "
            f"{r.frames_per_s:.1f} | {r.megapixels_per_s:.1f} | {r.p50_ms:.1f} | "
            f"{r.p99_ms:.1f} | {memory} | {r.device} | {r.status} |"
        )
    return "\n".join(lines)


def environment() -> dict[str, Any]:
    """What the figures were measured on."""
    info: dict[str, Any] = {"python": platform.python_version(), "machine": platform.machine(),
                            "platform": platform.platform()}
    info["cpus"] = os.cpu_count()
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
            info["cuda"] = torch.version.cuda
    except ImportError:
        pass
    try:
        import tensorrt

        info["tensorrt"] = tensorrt.__version__
    except ImportError:
        pass
    return info


def _csv(text: str, cast: Callable[[str], Any], name: str) -> tuple:
    try:
        values = tuple(cast(v.strip()) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise ValueError(f"--{name} {text!r}: {exc}") from None
    if not values:
        raise ValueError(f"--{name} {text!r}: expected a comma-separated list")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="model folder (default: the shipped model)")
    parser.add_argument("--backends", default="onnxruntime,torch,tensorrt",
                        help=f"comma-separated, from {', '.join(BENCH_BACKENDS)}")
    parser.add_argument("--precisions", default="fp32", help="comma-separated: fp32,fp16,...")
    parser.add_argument("--batch-sizes", default="1,8", help="comma-separated, e.g. 1,2,4,8,16,32")
    parser.add_argument("--sizes", default="1080x1080,2048x2048",
                        help="comma-separated frame sizes HxW")
    parser.add_argument("--frames", type=int, default=256,
                        help="frames per configuration, at most (default %(default)s)")
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="time limit per configuration in s (default %(default)s)")
    parser.add_argument("--offered-rate", type=float, default=None, metavar="FPS",
                        help="also measure per-frame latency with frames arriving at FPS")
    parser.add_argument("--max-wait-ms", type=float, default=0.0,
                        help="offered mode: longest a frame waits for a fuller batch "
                             "(default %(default)s)")
    parser.add_argument("--task", choices=TASKS, default="both",
                        help="detect, segment, or both per batch (default %(default)s)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0 = all)")
    parser.add_argument("--cache", type=Path, default=None, help="TensorRT engine cache folder")
    parser.add_argument("--out", type=Path, default=None, metavar="FILE.json",
                        help="also write the results as JSON")


def main(args: argparse.Namespace) -> int:
    try:
        backends = _csv(args.backends, str, "backends")
        unknown = [b for b in backends if b not in BENCH_BACKENDS]
        if unknown:
            raise ValueError(f"--backends: unknown {unknown}; expected {BENCH_BACKENDS}")
        options = BenchOptions(
            backends=backends,
            precisions=_csv(args.precisions, str, "precisions"),
            batch_sizes=_csv(args.batch_sizes, int, "batch-sizes"),
            sizes=_csv(args.sizes, parse_frame_size, "sizes"),
            frames=args.frames, seconds=args.seconds, offered_rate=args.offered_rate,
            max_wait_ms=args.max_wait_ms, task=args.task, threads=args.threads,
            engine_cache=args.cache,
        )
        if min(options.batch_sizes) < 1 or options.frames < 1 or options.seconds <= 0:
            raise ValueError("batch sizes, --frames and --seconds must be positive")
        if options.offered_rate is not None and options.offered_rate <= 0:
            raise ValueError(f"--offered-rate {options.offered_rate}: expected > 0")
        bundle = load_model(args.model)
    except (ModelError, ValueError) as exc:
        print(f"artifactd bench: {exc}", file=sys.stderr)
        return 2
    results = run_bench(bundle, options)
    table = markdown_table(results)
    print(table)
    if args.out:
        report = {
            "command": "artifactd " + " ".join(sys.argv[1:]) if sys.argv else "",
            "model": bundle.model_id,
            "environment": environment(),
            "options": {k: (str(v) if isinstance(v, Path) else v)
                        for k, v in asdict(options).items()},
            "results": [asdict(r) for r in results],
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomically(args.out, json.dumps(report, indent=2) + "\n")
    return 0 if any(r.status == "ok" for r in results) else 1
