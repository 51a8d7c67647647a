"""The frame pipeline: decode pool -> batcher -> engine pool -> post-processing pool -> writer.

Every arrow is a bounded queue, so a slow stage makes the one before it wait; files wait on
disk, never in an unbounded buffer. The writer is the only stage that makes results durable:
it appends them to the store, and only then commits the file versions to the journal and
tells the sinks (verdicts, alerts). A crash anywhere therefore loses nothing: uncommitted
files are simply processed again, and the store skips identities it already holds.

Shutdown is a drain: intake stops, each stage finishes its queue and passes an end marker
downstream, and the writer flushes last.

The engine pool holds one engine per inference worker, each running whole batches: on a CPU,
frames side by side on separate cores go faster than one frame split over all of them
(engines.backends.select.inference_plan has the measurement).
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from daemon.config import PipelineConfig
from daemon.decode import DecodeOptions, FrameError, read_frame
from daemon.frames import Frame, FrameFailure, FrameKey, FrameResult, ReadyFile
from daemon.metrics import Metrics
from engines.backends.base import Engine
from engines.familiarity import Familiarity
from engines.modelcard import frame_flagged
from engines.postprocess import PostprocessOptions, postprocess
from engines.timestamps import timestamp

logger = logging.getLogger(__name__)

END = object()  # end marker passed downstream on drain

# Failures not journaled: the file will be seen again (a newer version is on its way).
RETRYABLE_REASONS = frozenset({"changed"})

Sink = Callable[[Sequence[FrameResult], Sequence[float]], None]


class ResultsWriter(Protocol):
    """What the writer needs from the results store (the real one: daemon.store.ResultsStore)."""

    def append(self, results: Sequence[FrameResult]) -> list[str]: ...
    def record_failures(self, failures: Sequence[FrameFailure]) -> None: ...


class DoneJournal(Protocol):
    """What the writer needs from the journal (the real one: daemon.journal.Journal)."""

    def commit(self, keys: Sequence[FrameKey], outcome: str) -> None: ...


@dataclass(frozen=True, slots=True)
class PipelineParts:
    engines: Sequence[Engine]  # one per inference worker, all of the same model
    store: ResultsWriter
    journal: DoneJournal | None  # None when only streamed frames arrive
    metrics: Metrics
    decode: DecodeOptions
    postprocess: PostprocessOptions
    detect_threshold: float
    segment_all: bool = False
    sinks: tuple[Sink, ...] = ()
    familiarity: Familiarity | None = None  # the model's training frames' appearance


@dataclass(slots=True)
class Scored:
    frame: Frame
    score: float
    probability: np.ndarray | None  # None: not segmented (not flagged)


class Pipeline:
    def __init__(self, parts: PipelineParts, config: PipelineConfig) -> None:
        self.parts = parts
        self.config = config
        size = config.queue_size
        self.decode_q: queue.Queue = queue.Queue(size)
        self.batch_q: queue.Queue = queue.Queue(size)
        self.infer_q: queue.Queue = queue.Queue(max(1, size // config.max_batch))  # of batches
        self.post_q: queue.Queue = queue.Queue(size)
        self.write_q: queue.Queue = queue.Queue(size)
        self._accepting = True
        self._abort = threading.Event()
        self._in_flight = 0
        self._in_flight_lock = threading.Condition()
        self._last_progress = time.monotonic()
        self._decoders = [
            threading.Thread(target=self._decode_loop, name=f"decode-{i}")
            for i in range(config.decode_workers)
        ]
        self._batcher = threading.Thread(target=self._batch_loop, name="batcher")
        self._inferers = [
            threading.Thread(target=self._infer_loop, args=(engine,), name=f"engine-{i}")
            for i, engine in enumerate(parts.engines)
        ]
        self._posters = [
            threading.Thread(target=self._post_loop, name=f"postprocess-{i}")
            for i in range(config.postprocess_workers)
        ]
        self._writer = threading.Thread(target=self._write_loop, name="writer")
        # Workers of each pool still running: the last one out passes the end marker on.
        self._left = {"decode": len(self._decoders), "infer": len(self._inferers),
                      "postprocess": len(self._posters)}
        self._count_lock = threading.Lock()
        self.store_healthy = threading.Event()
        self.store_healthy.set()

    @property
    def _threads(self) -> tuple[threading.Thread, ...]:
        return (*self._decoders, self._batcher, *self._inferers, *self._posters, self._writer)

    # ------------------------------------------------------------------ intake

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def submit_file(self, ready: ReadyFile) -> bool:
        """Hand a complete file to the decode pool; blocks while the pipeline is full."""
        return self._submit(self.decode_q, ready)

    def submit_frame(self, frame: Frame) -> bool:
        """Hand an already decoded (streamed) frame to the batcher; blocks while full."""
        return self._submit(self.batch_q, frame)

    def _submit(self, target: queue.Queue, item: object) -> bool:
        if not self._accepting:
            return False
        self.parts.metrics.frames_seen.inc()
        with self._in_flight_lock:
            self._in_flight += 1
        while not self._abort.is_set():
            try:
                target.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        self._done(1)
        return False

    @property
    def in_flight(self) -> int:
        with self._in_flight_lock:
            return self._in_flight

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until every submitted frame is durable (or failed and recorded)."""
        with self._in_flight_lock:
            return self._in_flight_lock.wait_for(lambda: self._in_flight == 0, timeout)

    def _done(self, n: int) -> None:
        with self._in_flight_lock:
            self._in_flight -= n
            self._last_progress = time.monotonic()
            self._in_flight_lock.notify_all()

    def seconds_since_progress(self) -> float:
        """0 while idle; else how long since a frame last became durable."""
        with self._in_flight_lock:
            if self._in_flight == 0:
                return 0.0
            return time.monotonic() - self._last_progress

    # ------------------------------------------------------------------ shutdown

    def drain(self, timeout: float) -> bool:
        """Stop intake, finish everything queued, flush; True when all threads ended in time."""
        self._accepting = False
        for _ in self._decoders:
            self._put(self.decode_q, END)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        finished = not any(t.is_alive() for t in self._threads)
        if not finished:
            logger.error("drain did not finish within %.0f s; stopping with %d frames not written "
                         "(they stay on disk and are processed on the next start)", timeout, self.in_flight)
            self.abort()
        return finished

    def abort(self) -> None:
        """Stop at once; whatever is not committed is processed again on the next start."""
        self._accepting = False
        self._abort.set()
        for thread in self._threads:
            thread.join(5.0)

    def _put(self, target: queue.Queue, item: object) -> None:
        while not self._abort.is_set():
            try:
                target.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def _get(self, source: queue.Queue, stage: str, timeout: float = 0.2) -> object | None:
        """Next item, or None on timeout (so loops can notice an abort)."""
        try:
            item = source.get(timeout=timeout)
        except queue.Empty:
            return None
        self.parts.metrics.queue_depth.labels(stage=stage).set(source.qsize())
        return item

    def _until_end(self, source: queue.Queue, stage: str) -> Iterator:
        """The items of a stage's queue, up to its end marker (or an abort)."""
        while not self._abort.is_set():
            item = self._get(source, stage)
            if item is None:
                continue
            if item is END:
                return
            yield item

    def _pass_end(self, stage: str, target: queue.Queue, markers: int) -> None:
        """A worker of `stage` is done; the last one puts `markers` end markers on `target`."""
        with self._count_lock:
            self._left[stage] -= 1
            last = self._left[stage] == 0
        if last:
            for _ in range(markers):
                self._put(target, END)

    # ------------------------------------------------------------------ stages

    def _decode_loop(self) -> None:
        for item in self._until_end(self.decode_q, "decode"):
            try:
                frame = read_frame(item, self.parts.decode)
            except FrameError as exc:
                self._put(self.write_q, FrameFailure(item.key.source, exc.reason, str(exc), item.key))
                continue
            except Exception as exc:  # a decoder bug must not stop the service
                logger.exception("unexpected error decoding %s", item.path)
                self._put(self.write_q, FrameFailure(item.key.source, "decode", f"{item.path}: {exc}", item.key))
                continue
            self._put(self.batch_q, frame)
        self._pass_end("decode", self.batch_q, 1)

    def _batch_loop(self) -> None:
        pending: dict[tuple[int, ...], list[Frame]] = {}
        first_at: dict[tuple[int, ...], float] = {}
        wait = self.config.max_wait_ms / 1000
        ending = False
        while not self._abort.is_set() and not (ending and not pending):
            due = min(first_at.values(), default=None)
            timeout = 0.2 if due is None else max(0.0, due + wait - time.monotonic())
            item = None if ending else self._get(self.batch_q, "batch", timeout)
            if item is END:
                ending = True
            elif item is not None:
                shape = item.pixels.shape
                pending.setdefault(shape, []).append(item)
                first_at.setdefault(shape, time.monotonic())
            now = time.monotonic()
            for shape in list(pending):
                if ending or len(pending[shape]) >= self.config.max_batch or now - first_at[shape] >= wait:
                    self._put(self.infer_q, pending.pop(shape))
                    first_at.pop(shape)
        for _ in self._inferers:
            self._put(self.infer_q, END)

    def _infer_loop(self, engine: Engine) -> None:
        for batch in self._until_end(self.infer_q, "infer"):
            self._infer(engine, batch)
        self._pass_end("infer", self.post_q, len(self._posters))

    def _infer(self, engine: Engine, frames: list[Frame]) -> None:
        metrics = self.parts.metrics
        batch = np.stack([f.pixels for f in frames])
        metrics.batch_size.observe(len(frames))
        try:
            started = time.perf_counter()
            scores = engine.detect(batch)
            flagged = scores >= self.parts.detect_threshold
            chosen = np.arange(len(frames)) if self.parts.segment_all else np.flatnonzero(flagged)
            probabilities: list[np.ndarray | None] = [None] * len(frames)
            if len(chosen):
                for i, p in zip(chosen, engine.segment(batch[chosen]), strict=True):
                    probabilities[i] = p
            metrics.inference.observe(time.perf_counter() - started)
        except Exception as exc:  # one bad batch must not stop the service
            logger.exception("inference failed for a batch of %d frames", len(frames))
            for frame in frames:
                self._put(self.write_q, self._failure(frame, "inference", f"inference failed: {exc}"))
            return
        for frame, score, probability in zip(frames, scores, probabilities, strict=True):
            self._put(self.post_q, Scored(frame, float(score), probability))

    def _post_loop(self) -> None:
        for item in self._until_end(self.post_q, "postprocess"):
            try:
                self._put(self.write_q, self._measure(item))
            except Exception as exc:
                logger.exception("post-processing failed for %s", item.frame.meta.source)
                self._put(self.write_q, self._failure(item.frame, "postprocess", str(exc)))
        self._pass_end("postprocess", self.write_q, 1)

    def _measure(self, item: Scored) -> FrameResult:
        frame = item.frame
        intensity = frame.pixels if frame.pixels.ndim == 2 else frame.pixels[0]
        stamp = timestamp()
        familiarity = self.parts.familiarity
        unfamiliarity = familiarity.score(intensity) if familiarity is not None else math.nan
        if item.probability is None:
            empty = np.zeros(intensity.shape, dtype=np.uint16)
            flagged = frame_flagged(item.score, 0, self.parts.detect_threshold)
            return FrameResult(frame, item.score, flagged, empty, {}, 0.0, 0, stamp, unfamiliarity)
        found = postprocess(item.probability, intensity, self.parts.postprocess, frame.meta.pixel_size_um)
        flagged = frame_flagged(item.score, found.n_artifacts, self.parts.detect_threshold)
        return FrameResult(
            frame, item.score, flagged, found.labels, found.artifacts,
            found.area_fraction, found.n_artifacts, stamp, unfamiliarity,
        )

    @staticmethod
    def _failure(frame: Frame, reason: str, message: str) -> FrameFailure:
        return FrameFailure(frame.meta.source, reason, f"{frame.meta.source}: {message}", frame.key)

    # ------------------------------------------------------------------ writer

    def _write_loop(self) -> None:
        ending = False
        while not self._abort.is_set() and not ending:
            first = self._get(self.write_q, "write")
            if first is None:
                continue
            items = [first]
            # Batch what is already waiting: one durable append per batch, not per frame.
            while len(items) < 64 and items[-1] is not END:
                try:
                    items.append(self.write_q.get_nowait())
                except queue.Empty:
                    break
            ending = items[-1] is END
            work = [i for i in items if i is not END]
            if work:
                self._write(work)

    def _write(self, items: list) -> None:
        results = [i for i in items if isinstance(i, FrameResult)]
        failures = [i for i in items if isinstance(i, FrameFailure)]
        if not self._durably(results, failures):
            return
        self._commit(results, failures)
        latencies = [time.monotonic() - r.frame.ready_at for r in results]
        self._account(results, failures, latencies)
        for sink in self.parts.sinks:
            try:
                sink(results, latencies)
            except Exception:
                logger.exception("a results sink failed; results are durable regardless")
        self._done(len(items))

    def _durably(self, results: list[FrameResult], failures: list[FrameFailure]) -> bool:
        """Append to the store, retrying while it is unwritable (disk full, permissions).

        Meanwhile the queues fill and intake stops: frames wait on disk, none is lost.
        """
        delay = 0.5
        while not self._abort.is_set():
            try:
                if results:
                    self.parts.store.append(results)
                if failures:
                    self.parts.store.record_failures(failures)
            except Exception as exc:
                if self.store_healthy.is_set():
                    logger.error("cannot write results (%s); intake paused, retrying", exc)
                    self.store_healthy.clear()
                    self.parts.metrics.output_ok.set(0)
                self._abort.wait(delay)
                delay = min(delay * 2, 30.0)
                continue
            if not self.store_healthy.is_set():
                logger.info("results store writable again; resuming")
                self.store_healthy.set()
                self.parts.metrics.output_ok.set(1)
            return True
        return False

    def _commit(self, results: list[FrameResult], failures: list[FrameFailure]) -> None:
        journal = self.parts.journal
        if journal is None:
            return
        for outcome in ("clean", "flagged"):
            keys = [r.frame.key for r in results
                    if r.frame.key is not None and (r.flagged == (outcome == "flagged"))]
            if keys:
                journal.commit(keys, outcome)
        for failure in failures:
            if failure.key is not None and failure.reason not in RETRYABLE_REASONS:
                journal.commit([failure.key], f"failed:{failure.reason}")

    def _account(self, results: list[FrameResult], failures: list[FrameFailure],
                 latencies: list[float]) -> None:
        metrics = self.parts.metrics
        for result, latency in zip(results, latencies, strict=True):
            metrics.frames.labels(outcome="flagged" if result.flagged else "clean").inc()
            metrics.latency.observe(latency)
            metrics.area_fraction.observe(result.area_fraction)
            if not math.isnan(result.unfamiliarity):
                metrics.unfamiliarity.observe(result.unfamiliarity)
        for failure in failures:
            metrics.failed.labels(reason=failure.reason).inc()
            logger.warning("%s", failure.message)
