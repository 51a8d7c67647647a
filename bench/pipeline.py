"""Pipeline benchmark: artifactd end to end vs the bare engine vs a naive loop, same frames.

    python -m bench.pipeline [--frames 60] [--size 1080] [--rss-frames 2000]

All three run in this one process, one after the other, on the same files, so their ratio is
fair on a shared, noisy machine:

- bare engine: one engine on all cores in a loop, frames already in memory, batches of
  max_batch through detect + segment (every frame, or the flagged ones: as the model card says,
  as the service does);
- engine pool: the same, but with the service's engines (one single-threaded engine per core)
  taking batches side by side — what inference alone could reach the way the service runs it;
- artifactd: the real pipeline (folder source -> decode pool -> batcher -> engine pool ->
  post-processing pool -> store + journal) from files on disk to durable results;
- naive loop: read -> infer -> post-process -> write -> commit, one frame at a time, with one
  engine on all cores (what a straightforward script does).

Then the pipeline runs over --rss-frames files (hard links of the same frames, so disk use stays
small) while resident memory is sampled, to show it stays flat.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import tifffile

from daemon.config import Config
from daemon.decode.tiff import DecodeOptions, read_frame
from daemon.frames import FrameKey, FrameResult, ReadyFile
from daemon.ops.metrics import Metrics
from daemon.pipeline.analysis import Analysis, postprocess_options, segment_all
from daemon.pipeline.stages import Pipeline, PipelineParts
from daemon.results.journal import Journal
from daemon.results.store import ResultsStore
from daemon.sources.fs import FolderSource
from engines.data.synth import SynthOptions, frame_for
from engines.files import write_text_atomically
from engines.runtime.analyse import AnalysisOptions, analyse, infer
from engines.runtime.modelcard import load_model
from engines.runtime.postprocess import PostprocessOptions
from engines.select import create_engine, create_engines

logger = logging.getLogger("bench.pipeline")


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def make_frames(folder: Path, count: int, size: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"r01c{i % 12 + 1:02d}f{i // 12 + 1:02d}p01-ch1sk1fk1fl1.tiff"
        if not path.exists():
            options = SynthOptions(height=size, width=size, artifact_probability=0.3)
            frame = frame_for(77, i, options)
            tifffile.imwrite(path, frame.image)
        paths.append(path)
    return paths


def percentiles(values: list[float]) -> dict[str, float]:
    return {"p50": float(np.percentile(values, 50)), "p99": float(np.percentile(values, 99))}


def bare_engine(engines, paths: list[Path], max_batch: int, threshold: float, every: bool) -> float:
    """Engines with nothing around them: frames in memory, batches of max_batch shared among
    the engines side by side (one engine: a plain loop), detect, then segment every frame
    (`every`) or the flagged ones."""
    decoded: dict[int, np.ndarray] = {}  # hard links of one file are decoded once
    frames = []
    for path in paths:
        inode = path.stat().st_ino
        if inode not in decoded:
            decoded[inode] = tifffile.imread(path)
        frames.append(decoded[inode])
    batches = [np.stack(frames[i : i + max_batch]) for i in range(0, len(frames), max_batch)]
    options = AnalysisOptions(threshold, every, PostprocessOptions())  # post-processing unused
    lock = threading.Lock()

    def work(engine) -> None:
        while True:
            with lock:
                if not batches:
                    return
                batch = batches.pop()
            infer(engine, batch, options)

    threads = [threading.Thread(target=work, args=(engine,)) for engine in engines]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(frames) / (time.perf_counter() - started)


def warm_up(engines, frame: np.ndarray, max_batch: int) -> None:
    """Every batch size once through both models: first runs of a shape allocate memory."""
    for engine in engines:
        for n in range(1, max_batch + 1):
            batch = np.stack([frame] * n)
            engine.detect(batch)
            engine.segment(batch)


def key_of(root: Path, path: Path) -> FrameKey:
    stat = path.stat()
    return FrameKey(str(path.relative_to(root)), stat.st_size, stat.st_mtime_ns)


def naive_loop(engine, bundle, config: Config, root: Path, paths: list[Path], work: Path) -> float:
    store = ResultsStore(work / "naive.zarr")
    journal = Journal(work / "naive.sqlite")
    decode = DecodeOptions.from_config(config.input, config.metadata)
    options = AnalysisOptions(bundle.card.detect_threshold, segment_all(config, bundle),
                              postprocess_options(config, bundle))
    started = time.perf_counter()
    for path in paths:
        frame = read_frame(ReadyFile(path, key_of(root, path), time.monotonic()), decode)
        (found,) = analyse(engine, frame.pixels[None], options, [frame.meta.pixel_size_um])
        stamp = datetime.now(UTC).isoformat()
        store.append([FrameResult(frame, found.score, found.flagged, found.labels,
                                  found.artifacts, found.area_fraction, found.n_artifacts, stamp)])
        journal.commit([frame.key], "flagged" if found.flagged else "clean")
    rate = len(paths) / (time.perf_counter() - started)
    store.close()
    journal.close()
    return rate


def through_pipeline(engines, bundle, config: Config, root: Path, work: Path, name: str,
                     expected: int, on_progress=None) -> tuple[float, list[float]]:
    latencies: list[float] = []
    first_result: list[float] = []  # when the first results were durable
    done = threading.Event()

    def record(results, lat) -> None:
        if not latencies:
            first_result.append(time.perf_counter())
        latencies.extend(lat)
        if on_progress:
            on_progress(len(latencies))
        if len(latencies) >= expected:
            done.set()

    store = ResultsStore(work / f"{name}.zarr")
    journal = Journal(work / f"{name}.sqlite")
    pipeline = Pipeline(PipelineParts(
        engines=engines, store=store, journal=journal, metrics=Metrics(),
        decode=DecodeOptions.from_config(config.input, config.metadata),
        analysis=Analysis(postprocess_options(config, bundle), bundle.card.detect_threshold,
                          segment_all(config, bundle)),
        sinks=(record,),
        thumbnail_downsample=config.thumbnails.downsample if config.thumbnails.enabled else 0,
    ), config.pipeline)
    pipeline.start()
    source = FolderSource(replace(config.input, settle_s=0.2), pipeline.submit_file,
                          is_done=journal.is_done, root=root)
    started = time.perf_counter()
    source.start()
    done.wait()
    rate = expected / (time.perf_counter() - started)
    logger.warning("%s: first results durable %.2f s after start, %.1f frames/s overall",
                   name, first_result[0] - started, rate)
    source.stop()
    source.join()
    pipeline.drain(60)
    store.close()
    journal.close()
    return rate, latencies


def paced(engines, bundle, config: Config, files: list[Path], work: Path, rate: float) -> dict:
    """Frames arriving at `rate` per second (as an instrument writes them): real latency."""
    root = work / f"paced-{rate:g}"
    root.mkdir()
    stop = threading.Event()

    def instrument() -> None:
        started = time.monotonic()
        for i, path in enumerate(files):
            if stop.wait(max(0.0, started + i / rate - time.monotonic())):
                return
            tmp = root / f".{path.name}.part"
            shutil.copyfile(path, tmp)
            os.replace(tmp, root / path.name)  # renamed into place when complete

    writer = threading.Thread(target=instrument)
    writer.start()
    try:
        fps, latencies = through_pipeline(engines, bundle, config, root, work, f"paced{rate:g}",
                                          len(files))
    finally:
        stop.set()
        writer.join()
    return {"offered_fps": rate, "fps": fps, "latency_s": percentiles(latencies)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--size", type=int, default=1080)
    parser.add_argument("--repeat", type=int, default=10,
                        help="each frame this many times (hard links) in the throughput runs")
    parser.add_argument("--rss-frames", type=int, default=2000)
    parser.add_argument("--max-batch", type=int, default=Config().pipeline.max_batch)
    parser.add_argument("--engine-workers", type=int, default=Config().pipeline.engine_workers,
                        help="engines side by side in the service (0: one per core)")
    parser.add_argument("--rates", type=lambda t: [float(r) for r in t.split(",")],
                        default=[5.0, 10.0], help="offered frames/s for the paced (latency) runs")
    parser.add_argument("--cache", type=Path, default=Path("runs/bench-frames"))
    parser.add_argument("--out", type=Path, default=Path("runs/bench-pipeline.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    config = Config()
    config = config.with_section("pipeline", max_batch=args.max_batch,
                                 engine_workers=args.engine_workers)
    bundle = load_model("default")
    # The service's engines (one single-threaded engine per core), and the one engine on all
    # cores a naive loop would open.
    engines = create_engines(bundle, backend="onnxruntime",
                             workers=config.pipeline.engine_workers, threads=config.model.threads)
    naive_engine = create_engine(bundle, backend="onnxruntime")
    source_dir = args.cache / f"{args.size}"
    paths = make_frames(source_dir, args.frames, args.size)
    work = Path(tempfile.mkdtemp(prefix="artifactd-bench-"))
    try:
        # The same frames several times over, so a run lasts long enough that filling and
        # emptying the pipeline at its ends does not dominate the rate.
        root = work / "in"
        files = linked_copies(paths, root, args.frames * args.repeat)
        warm_up((*engines, naive_engine), tifffile.imread(files[0]), args.max_batch)
        threshold = bundle.card.detect_threshold
        every = segment_all(config, bundle)
        bare = bare_engine([naive_engine], files, args.max_batch, threshold, every)
        pool = bare_engine(engines, files, args.max_batch, threshold, every)
        e2e, latencies = through_pipeline(engines, bundle, config, root, work, "pipeline",
                                          len(files))
        naive = naive_loop(naive_engine, bundle, config, root, files, work)
        steady = [paced(engines, bundle, config, paths, work, rate) for rate in args.rates]
        results = {
            "frames": len(files), "distinct_frames": len(paths), "size": args.size,
            "max_batch": args.max_batch,
            "engine_workers": len(engines),
            "cpu_count": os.cpu_count(), "model": bundle.model_id,
            "bare_engine_fps": bare, "engine_pool_fps": pool, "artifactd_fps": e2e,
            "naive_fps": naive,
            "pipeline_efficiency": e2e / bare, "share_of_engine_pool": e2e / pool,
            "speedup_vs_naive": e2e / naive,
            "backlog_latency_s": percentiles(latencies),
            "paced": steady,
        }
        print(json.dumps(results, indent=2), flush=True)
        if args.rss_frames:
            results["rss"] = rss_run(engines, bundle, config, paths, work, args.rss_frames)
            print(json.dumps(results["rss"], indent=2), flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomically(args.out, json.dumps(results, indent=2) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def linked_copies(paths: list[Path], root: Path, count: int) -> list[Path]:
    """`count` files named as an Operetta names them: hard links of `paths`, so disk use stays
    small however many frames a run needs."""
    root.mkdir()
    files = []
    for i in range(count):
        row, column, field = i // 240 + 1, i % 12 + 1, (i // 12) % 20 + 1
        link = root / f"r{row:02d}c{column:02d}f{field:02d}p01-ch1sk1fk1fl1.tiff"
        os.link(paths[i % len(paths)], link)
        files.append(link)
    return files


def rss_run(engines, bundle, config: Config, paths: list[Path], work: Path, count: int) -> dict:
    root = work / "rss"
    linked_copies(paths, root, count)
    samples: dict[int, float] = {}
    every = max(1, count // 10)

    def sample(done: int) -> None:
        # Results arrive in batches, so sample on passing each tenth, not on hitting it.
        if done // every > len(samples):
            samples[done] = rss_mib()

    rate, _ = through_pipeline(engines, bundle, config, root, work, "rss", count, sample)
    return {"frames": count, "fps": rate, "rss_mib_by_frames": samples}


if __name__ == "__main__":
    raise SystemExit(main())
