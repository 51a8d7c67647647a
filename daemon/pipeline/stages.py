"""The frame pipeline: decode pool -> batcher -> engine pool -> post-processing pool -> writer.

Every arrow is a bounded queue, so a slow stage makes the one before it wait; files wait on
disk, never in an unbounded buffer. The writer (daemon.pipeline.writer) is the only stage that
makes results durable, and only then journals them and tells the sinks. Frames of one shape are
batched for the engines by daemon.pipeline.batcher; passing faults are tried again after a
back-off by daemon.pipeline.retries.

Shutdown is a drain: intake stops, each stage finishes its queue and passes an end marker
downstream, and the writer flushes last.

The engine pool holds one engine per inference worker, each running whole batches: on a CPU,
frames side by side on separate cores go faster than one frame split over all of them
(engines.select.inference_plan has the measurement).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

from daemon.config import PipelineConfig
from daemon.decode.tiff import DecodeOptions, FrameError, read_frame
from daemon.frames import Frame, FrameFailure, FrameResult, ReadyFile
from daemon.ops.metrics import Metrics
from daemon.pipeline.analysis import Analysis, Scored
from daemon.pipeline.batcher import Batcher
from daemon.pipeline.retries import Retries
from daemon.pipeline.writer import (
    DoneJournal,
    JudgeAgainstPlate,
    MarkStationary,
    ResultsWriter,
    Sink,
    Writer,
    frame_failure,
)
from daemon.results.thumbnails import make_thumbnail
from engines.runtime.base import Engine

logger = logging.getLogger(__name__)

END = object()  # end marker passed downstream on drain

# Passing faults (daemon.pipeline.writer.PASSING_REASONS) tried again in this run after a
# back-off (daemon.pipeline.retries).
RETRIED_REASONS = frozenset({"permission", "inference", "postprocess"})


@dataclass(frozen=True, slots=True)
class PipelineParts:
    engines: Sequence[Engine]  # one per inference worker, all of the same model
    store: ResultsWriter
    journal: DoneJournal | None  # None when only streamed frames arrive
    metrics: Metrics
    decode: DecodeOptions
    analysis: Analysis  # thresholds and post-processing (Analysis.for_model in the service)
    sinks: tuple[Sink, ...] = ()
    # Marks artifacts on the optics (daemon.sinks.optics.OpticsTracker.mark) before rows are
    # written, so the stored artifact table says which; called on the writer thread, in order.
    mark_stationary: MarkStationary | None = None
    # The plate-relative verdict (daemon.pipeline.plate_verdict.PlateVerdict), on the writer
    # thread before anything is stored; None: the detector's own verdict.
    judge: JudgeAgainstPlate | None = None
    thumbnail_downsample: int = 0  # a thumbnail per frame at 1/this scale; 0 = none


class Pipeline:
    def __init__(self, parts: PipelineParts, config: PipelineConfig) -> None:
        self.parts = parts
        self.config = config
        self.analysis = parts.analysis
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
        self._retries = Retries(config.retries, config.retry_delay_s)
        self.writer = Writer(parts.store, parts.journal, parts.metrics, sinks=parts.sinks,
                             mark_stationary=parts.mark_stationary, abort=self._abort,
                             done=self._done, judge=parts.judge)
        self.tally = self.writer.tally  # what became durable in this run: the --once summary
        # Cleared while the store cannot be written (the plate page shows it).
        self.store_healthy = self.writer.store_healthy
        # Workers of each pool still running: the last one out passes the end marker on.
        self._left = {"decode": len(self._decoders), "infer": len(self._inferers),
                      "postprocess": len(self._posters)}
        self._count_lock = threading.Lock()

    @property
    def _threads(self) -> tuple[threading.Thread, ...]:
        return (*self._decoders, self._batcher, *self._inferers, *self._posters, self._writer)

    # ------------------------------------------------------------------ intake

    def start(self) -> None:
        self._retries.start()
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
        # Frames still waiting out a back-off are recorded as failures (not done: the next
        # start tries them again) before the end markers, so the writer sees them.
        for failure in self._retries.close():
            self._put(self.write_q, failure)
        for _ in self._decoders:
            self._put(self.decode_q, END)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._stop_retries()
        finished = not any(t.is_alive() for t in self._threads)
        if not finished:
            logger.error("drain did not finish within %.0f s; stopping with %d frames not written "
                         "(they stay on disk and are processed on the next start)", timeout,
                         self.in_flight)
            self.abort()
        return finished

    def abort(self) -> None:
        """Stop at once; whatever is not committed is processed again on the next start."""
        self._accepting = False
        self._abort.set()
        for thread in self._threads:
            thread.join(5.0)
        self._stop_retries()

    def _stop_retries(self) -> None:
        if self._retries.is_alive():
            self._retries.stop()
            self._retries.join()

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
                failure = FrameFailure(item.key.source, exc.reason, str(exc), item.key)
                self._retry_or_fail(item, failure, self.decode_q)
                continue
            except Exception as exc:  # a decoder bug must not stop the service
                logger.exception("unexpected error decoding %s", item.path)
                self._put(self.write_q, FrameFailure(item.key.source, "decode",
                                                     f"{item.path}: {exc}", item.key))
                continue
            self._put(self.batch_q, frame)
        self._pass_end("decode", self.batch_q, 1)

    def _batch_loop(self) -> None:
        batcher = Batcher(self.config.max_batch, self.config.max_wait_ms / 1000)
        ending = False
        while not self._abort.is_set() and not (ending and not batcher):
            timeout = batcher.timeout(time.monotonic(), idle=0.2)
            item = None if ending else self._get(self.batch_q, "batch", timeout)
            if item is END:
                ending = True
            elif item is not None:
                batcher.add(item, time.monotonic())
            for batch in batcher.ready(time.monotonic(), everything=ending):
                self._put(self.infer_q, batch)
        for _ in self._inferers:
            self._put(self.infer_q, END)

    def _infer_loop(self, engine: Engine) -> None:
        for batch in self._until_end(self.infer_q, "infer"):
            self._infer(engine, batch)
        self._pass_end("infer", self.post_q, len(self._posters))

    def _infer(self, engine: Engine, frames: list[Frame]) -> None:
        metrics = self.parts.metrics
        metrics.batch_size.observe(len(frames))
        try:
            started = time.perf_counter()
            scored = self.analysis.infer(engine, frames)
            metrics.inference.observe(time.perf_counter() - started)
        except Exception as exc:  # one bad batch must not stop the service
            logger.exception("inference failed for a batch of %d frames", len(frames))
            for frame in frames:
                failure = frame_failure(frame, "inference", f"inference failed ({exc})")
                self._retry_or_fail(frame, failure, self.batch_q)
            return
        for item in scored:
            self._put(self.post_q, item)

    def _post_loop(self) -> None:
        for item in self._until_end(self.post_q, "postprocess"):
            try:
                self._put(self.write_q, self._measure(item))
            except Exception as exc:
                logger.exception("post-processing failed for %s", item.frame.meta.source)
                failure = frame_failure(item.frame, "postprocess",
                                        f"post-processing failed ({exc})")
                self._retry_or_fail(item.frame, failure, self.batch_q)
        self._pass_end("postprocess", self.write_q, 1)

    def _measure(self, item: Scored) -> FrameResult:
        result = self.analysis.measure(item)
        if not self.parts.thumbnail_downsample:
            return result
        # Here, not in the writer: the post-processing threads make them side by side.
        thumbnail = make_thumbnail(result.frame.pixels, result.labels,
                                   self.parts.thumbnail_downsample)
        return replace(result, thumbnail=thumbnail)

    def _retry_or_fail(self, item: ReadyFile | Frame, failure: FrameFailure,
                       stage: queue.Queue) -> None:
        """A passing fault is tried again after a back-off (the item goes back to `stage`);
        a fault of the file's own content, or the last try, goes to the writer as a failure."""
        if failure.reason in RETRIED_REASONS and self._retries.allows(item.attempt):
            attempt = item.attempt + 1
            final = _not_done(failure, attempt)
            if self._retries.later(replace(item, attempt=attempt), stage, final, attempt):
                self.parts.metrics.retried.labels(reason=failure.reason).inc()
                return
        if failure.reason in RETRIED_REASONS:
            failure = _not_done(failure, item.attempt + 1)
        self._put(self.write_q, failure)

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
                self.writer.write(work)


def _not_done(failure: FrameFailure, tries: int) -> FrameFailure:
    """The failure recorded after the last try: it says the frame can be processed again."""
    again = ("it is not marked done, so the next start of the service processes it again"
             if failure.key is not None else "the sender can send it again")
    return replace(failure, message=f"{failure.message}; failed {tries} time(s), {again}")
