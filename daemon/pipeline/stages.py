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
(engines.select.inference_plan has the measurement).
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from daemon.pipeline.analysis import Analysis, Scored
from daemon.config import PipelineConfig
from daemon.decode.tiff import DecodeOptions, FrameError, read_frame
from daemon.frames import STATIONARY, Frame, FrameFailure, FrameKey, FrameResult, ReadyFile
from daemon.ops.metrics import Metrics
from daemon.pipeline.retries import Retries
from daemon.results.thumbnails import make_thumbnail
from engines.runtime.base import Engine
from engines.runtime.familiarity import Familiarity
from engines.runtime.postprocess import PostprocessOptions

logger = logging.getLogger(__name__)

END = object()  # end marker passed downstream on drain

# Failures that say nothing about the file's content, so they are not journaled as done: the
# next start looks at the file again. "changed": a newer version is on its way; "missing": the
# file went away before it was read (if it comes back, it is seen again).
PASSING_REASONS = frozenset({"changed", "missing", "permission", "inference", "postprocess",
                             "writer"})
# Of those, the ones tried again in this run after a back-off (daemon.pipeline.retries).
RETRIED_REASONS = frozenset({"permission", "inference", "postprocess"})
# A result the store refuses for what it holds (not for the disk): that frame fails alone.
UNSTORABLE = "unstorable"

Sink = Callable[[Sequence[FrameResult], Sequence[float]], None]


class ResultsWriter(Protocol):
    """What the writer needs from the results store (the real one: daemon.results.store.ResultsStore)."""

    def append(self, results: Sequence[FrameResult]) -> list[str]: ...
    def record_failures(self, failures: Sequence[FrameFailure]) -> None: ...


class DoneJournal(Protocol):
    """What the writer needs from the journal (the real one: daemon.results.journal.Journal)."""

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
    # Marks artifacts on the optics (daemon.sinks.optics.OpticsTracker.mark) before rows are written,
    # so the stored artifact table says which; called on the writer thread, in arrival order.
    mark_stationary: Callable[[Sequence[FrameResult]], list[FrameResult]] | None = None
    thumbnail_downsample: int = 0  # a thumbnail per frame at 1/this scale; 0 = none


@dataclass(slots=True)
class Tally:
    """What became durable in this run: the `--once` summary."""

    clean: int = 0
    flagged: int = 0
    failed: Counter = field(default_factory=Counter)  # reason -> frames
    not_done: list[str] = field(default_factory=list)  # sources to process again (first 100)
    not_done_count: int = 0

    def add_failure(self, failure: FrameFailure) -> None:
        self.failed[failure.reason] += 1
        if failure.reason in PASSING_REASONS:
            self.not_done_count += 1
            if len(self.not_done) < 100:
                self.not_done.append(failure.source)


class Pipeline:
    def __init__(self, parts: PipelineParts, config: PipelineConfig) -> None:
        self.parts = parts
        self.config = config
        self.analysis = Analysis(parts.postprocess, parts.detect_threshold, parts.segment_all,
                                 parts.familiarity)
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
        self.tally = Tally()
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
                         "(they stay on disk and are processed on the next start)", timeout, self.in_flight)
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
        metrics.batch_size.observe(len(frames))
        try:
            started = time.perf_counter()
            scored = self.analysis.infer(engine, frames)
            metrics.inference.observe(time.perf_counter() - started)
        except Exception as exc:  # one bad batch must not stop the service
            logger.exception("inference failed for a batch of %d frames", len(frames))
            for frame in frames:
                failure = self._failure(frame, "inference", f"inference failed ({exc})")
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
                failure = self._failure(item.frame, "postprocess", f"post-processing failed ({exc})")
                self._retry_or_fail(item.frame, failure, self.batch_q)
        self._pass_end("postprocess", self.write_q, 1)

    def _measure(self, item: Scored) -> FrameResult:
        result = self.analysis.measure(item)
        if not self.parts.thumbnail_downsample:
            return result
        # Here, not in the writer: the post-processing threads make them side by side.
        thumbnail = make_thumbnail(result.frame.pixels, result.labels, self.parts.thumbnail_downsample)
        return replace(result, thumbnail=thumbnail)

    @staticmethod
    def _failure(frame: Frame, reason: str, message: str) -> FrameFailure:
        return FrameFailure(frame.meta.source, reason, f"{frame.meta.source}: {message}", frame.key)

    def _retry_or_fail(self, item: ReadyFile | Frame, failure: FrameFailure, stage: queue.Queue) -> None:
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
                self._write_or_give_up(work)

    def _write_or_give_up(self, items: list) -> None:
        """A writer fault must not stop the service: those frames stay not done (processed
        again on the next start) and are counted as failed."""
        try:
            self._write(items)
        except Exception as exc:
            logger.exception("writing %d result(s) failed", len(items))
            failures = [i if isinstance(i, FrameFailure) else self._failure(i.frame, "writer", str(exc))
                        for i in items]
            for failure in failures:
                self.parts.metrics.failed.labels(reason="writer").inc()
                self.tally.add_failure(replace(failure, reason="writer"))
            self._done(len(items))

    def _write(self, items: list) -> None:
        results = self._mark_stationary([i for i in items if isinstance(i, FrameResult)])
        failures = [i for i in items if isinstance(i, FrameFailure)]
        durable = self._durably(results, failures)
        if durable is None:
            return
        results, failures = durable
        self._commit(results, failures)
        latencies = [time.monotonic() - r.frame.ready_at for r in results]
        self._account(results, failures, latencies)
        for sink in self.parts.sinks:
            try:
                sink(results, latencies)
            except Exception:
                logger.exception("a results sink failed; results are durable regardless")
        self._done(len(items))

    def _mark_stationary(self, results: list[FrameResult]) -> list[FrameResult]:
        mark = self.parts.mark_stationary
        if mark is None or not results:
            return results
        try:
            return mark(results)
        except Exception:  # the results matter more than the marking
            logger.exception("marking artifacts on the optics failed; %d result(s) stored "
                             "unmarked", len(results))
            return results

    def _durably(self, results: list[FrameResult],
                 failures: list[FrameFailure]) -> tuple[list[FrameResult], list[FrameFailure]] | None:
        """Make results and failures durable; returns what was stored, or None on abort.

        Only I/O failures of the store (disk full, permissions, a lost mount) are retried,
        with back-off, the store marked unwritable meanwhile: the queues fill, intake stops
        and frames wait on disk. Any other error is a fault of one result: that frame is
        recorded as failed and the others are stored.
        """
        delay = 0.5
        while not self._abort.is_set():
            try:
                stored, refused = self._append(results)
                self._record([*failures, *refused])
            except Exception as exc:
                if not is_io_failure(exc):
                    raise
                self._mark_unwritable(exc)
                self.parts.metrics.store_retries.inc()
                self._abort.wait(delay)
                delay = min(delay * 2, 30.0)
                continue
            if not self.store_healthy.is_set():
                logger.info("results store writable again; resuming")
                self.store_healthy.set()
                self.parts.metrics.output_ok.set(1)
            return stored, [*failures, *refused]
        return None

    def _append(self, results: list[FrameResult]) -> tuple[list[FrameResult], list[FrameFailure]]:
        kept, written, refused = append_or_refuse(self.parts.store, results)
        return self._mark_duplicates(kept, written), refused

    def _mark_duplicates(self, results: list[FrameResult], written: list[str]) -> list[FrameResult]:
        """Results the store already held (a re-sent frame, a replay after a crash) come back
        marked duplicate, with the verdict that was stored for them."""
        fresh = set(written)
        repeats = []  # positions of results the store already held
        for i, result in enumerate(results):
            if result.frame.identity in fresh:
                fresh.discard(result.frame.identity)  # a second copy in this batch is a repeat
            else:
                repeats.append(i)
        if not repeats:
            return results
        stored = self.parts.store.stored_verdicts([results[i].frame.identity for i in repeats])
        marked = list(results)
        for i in repeats:
            marked[i] = _as_stored(results[i], stored.get(results[i].frame.identity))
        return marked

    def _record(self, failures: list[FrameFailure]) -> None:
        """The failure table; a row it refuses is still logged and counted (never a stall)."""
        if not failures:
            return
        try:
            self.parts.store.record_failures(failures)
        except Exception as exc:
            if is_io_failure(exc):
                raise
            logger.exception("the results store refused %d failure row(s); they are logged only",
                             len(failures))

    def _mark_unwritable(self, exc: BaseException) -> None:
        if self.store_healthy.is_set():
            logger.error("cannot write results (%s); intake paused, retrying", exc)
            self.store_healthy.clear()
            self.parts.metrics.output_ok.set(0)

    def _commit(self, results: list[FrameResult], failures: list[FrameFailure]) -> None:
        if self.parts.journal is not None:
            commit_done(self.parts.journal, results, failures)

    def _account(self, results: list[FrameResult], failures: list[FrameFailure],
                 latencies: list[float]) -> None:
        metrics = self.parts.metrics
        for result, latency in zip(results, latencies, strict=True):
            if result.duplicate:
                metrics.duplicates.inc()
                logger.info("%s: already stored (sent again); answered with the stored verdict",
                            result.frame.meta.source)
                continue
            metrics.frames.labels(outcome="flagged" if result.flagged else "clean").inc()
            if result.flagged:
                self.tally.flagged += 1
            else:
                self.tally.clean += 1
            metrics.latency.observe(latency)
            metrics.area_fraction.observe(result.area_fraction)
            stationary = result.artifacts.get(STATIONARY)
            if stationary is not None:
                metrics.stationary.inc(int(np.count_nonzero(stationary)))
            if not math.isnan(result.unfamiliarity):
                metrics.unfamiliarity.observe(result.unfamiliarity)
        for failure in failures:
            metrics.failed.labels(reason=failure.reason).inc()
            self.tally.add_failure(failure)
            logger.warning("%s", failure.message)


def append_or_refuse(store: ResultsWriter, results: Sequence[FrameResult]
                     ) -> tuple[list[FrameResult], list[str], list[FrameFailure]]:
    """Append; on a fault that is not I/O, one by one, so only the faulty frame fails.

    Returns the results the store took or already held, the identities it wrote (those it
    held are not among them) and a failure for each result it refused. I/O faults of the
    store itself are raised, for the caller to retry.
    """
    if not results:
        return [], [], []
    try:
        return list(results), list(store.append(results)), []
    except Exception as exc:
        if is_io_failure(exc):
            raise
        if len(results) == 1:
            return [], [], [_unstorable(results[0], exc)]
    kept: list[FrameResult] = []
    written: list[str] = []
    refused: list[FrameFailure] = []
    for result in results:
        k, w, r = append_or_refuse(store, [result])
        kept += k
        written += w
        refused += r
    return kept, written, refused


def commit_done(journal: DoneJournal, results: Sequence[FrameResult],
                failures: Sequence[FrameFailure], *, passing: frozenset[str] = PASSING_REASONS
                ) -> None:
    """Journal as done the file versions whose results (or whose failure for their own
    content) are durable in the store; call it only after the store has them. A failure for
    a `passing` reason is not done: the file is processed again."""
    for outcome in ("clean", "flagged"):
        keys = [r.frame.key for r in results
                if r.frame.key is not None and (r.flagged == (outcome == "flagged"))]
        if keys:
            journal.commit(keys, outcome)
    for failure in failures:
        if failure.key is not None and failure.reason not in passing:
            journal.commit([failure.key], f"failed:{failure.reason}")


def is_io_failure(exc: BaseException | None) -> bool:
    """Whether the store failed for its storage (an OSError somewhere in the cause chain)."""
    while exc is not None:
        if isinstance(exc, OSError):
            return True
        exc = exc.__cause__
    return False


def _unstorable(result: FrameResult, exc: BaseException) -> FrameFailure:
    frame = result.frame
    source = _readable(frame.meta.source)  # the failure row must be storable itself
    logger.error("%s: the results store refused its result", source, exc_info=exc)
    return FrameFailure(source, UNSTORABLE, _readable(
        f"{source}: its result could not be stored ({exc}); the other frames go on"), frame.key)


def _readable(text: str) -> str:
    """Text any UTF-8 table can hold: characters it cannot encode become backslash escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _as_stored(result: FrameResult, stored: dict | None) -> FrameResult:
    if stored is None:  # held but not readable back: still not stored twice
        return replace(result, duplicate=True)
    return replace(result, duplicate=True, score=float(stored["score"]),
                   flagged=bool(stored["flagged"]), area_fraction=float(stored["area_fraction"]),
                   n_artifacts=int(stored["n_artifacts"]), processed_at=str(stored["processed_at"]))


def _not_done(failure: FrameFailure, tries: int) -> FrameFailure:
    """The failure recorded after the last try: it says the frame can be processed again."""
    again = ("it is not marked done, so the next start of the service processes it again"
             if failure.key is not None else "the sender can send it again")
    return replace(failure, message=f"{failure.message}; failed {tries} time(s), {again}")
