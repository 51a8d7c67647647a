"""The writer stage: the only one that makes results durable.

It appends a batch of results and failures to the store, and only then commits the file versions
to the journal and tells the sinks (verdicts, alerts). A crash anywhere therefore loses nothing:
uncommitted files are simply processed again, and the store skips identities it already holds.
The reprocess command commits its results by the same rules (append_or_refuse, commit_done).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from daemon.frames import STATIONARY, Frame, FrameFailure, FrameKey, FrameResult
from daemon.ops.metrics import Metrics

logger = logging.getLogger(__name__)

# Failures that say nothing about the file's content, so they are not journaled as done: the
# next start looks at the file again. "changed": a newer version is on its way; "missing": the
# file went away before it was read (if it comes back, it is seen again).
PASSING_REASONS = frozenset({"changed", "missing", "permission", "inference", "postprocess",
                             "writer"})
# A result the store refuses for what it holds (not for the disk): that frame fails alone.
UNSTORABLE = "unstorable"

Sink = Callable[[Sequence[FrameResult], Sequence[float]], None]
MarkStationary = Callable[[Sequence[FrameResult]], list[FrameResult]]
JudgeAgainstPlate = Callable[[Sequence[FrameResult]], list[FrameResult]]


class ResultsWriter(Protocol):
    """What the writer needs from the results store (daemon.results.store.ResultsStore)."""

    def append(self, results: Sequence[FrameResult]) -> list[str]: ...
    def record_failures(self, failures: Sequence[FrameFailure]) -> None: ...


class DoneJournal(Protocol):
    """What the writer needs from the journal (daemon.results.journal.Journal)."""

    def commit(self, keys: Sequence[FrameKey], outcome: str) -> None: ...


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


class Writer:
    """Makes batches of results and failures durable, then journals them and tells the sinks.

    Runs on the pipeline's writer thread. `abort` ends a wait for the store to become writable
    again; `done(n)` is called once n items are finished with (durable, or given up on).
    """

    def __init__(self, store: ResultsWriter, journal: DoneJournal | None, metrics: Metrics, *,
                 sinks: Sequence[Sink], mark_stationary: MarkStationary | None,
                 abort: threading.Event, done: Callable[[int], None],
                 judge: JudgeAgainstPlate | None = None) -> None:
        self.store = store
        self.journal = journal
        self.metrics = metrics
        self.sinks = tuple(sinks)
        self.mark_stationary = mark_stationary
        self.judge = judge
        self._abort = abort
        self._done = done
        self.tally = Tally()
        self.store_healthy = threading.Event()
        self.store_healthy.set()

    def write(self, items: list) -> None:
        """A writer fault must not stop the service: those frames stay not done (processed
        again on the next start) and are counted as failed."""
        try:
            self._write(items)
        except Exception as exc:
            logger.exception("writing %d result(s) failed", len(items))
            failures = [i if isinstance(i, FrameFailure)
                        else frame_failure(i.frame, "writer", str(exc)) for i in items]
            for failure in failures:
                self.metrics.failed.labels(reason="writer").inc()
                self.tally.add_failure(replace(failure, reason="writer"))
            self._done(len(items))

    def _write(self, items: list) -> None:
        # Marked first: a field showing dirt on the optics keeps its flag whatever its plate's
        # baseline (daemon.pipeline.plate_verdict).
        results = [i for i in items if isinstance(i, FrameResult)]
        results = _amended(self.mark_stationary, results, "marking artifacts on the optics "
                           "failed; {n} result(s) stored unmarked")
        results = _amended(self.judge, results, "the plate-relative verdict failed; {n} "
                           "result(s) stored with the detector's own verdict")
        failures = [i for i in items if isinstance(i, FrameFailure)]
        durable = self._durably(results, failures)
        if durable is None:
            return
        results, failures = durable
        self._commit(results, failures)
        latencies = [time.monotonic() - r.frame.ready_at for r in results]
        self._account(results, failures, latencies)
        for sink in self.sinks:
            try:
                sink(results, latencies)
            except Exception:
                logger.exception("a results sink failed; results are durable regardless")
        self._done(len(items))

    def _durably(
        self, results: list[FrameResult], failures: list[FrameFailure]
    ) -> tuple[list[FrameResult], list[FrameFailure]] | None:
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
                record_failures(self.store, [*failures, *refused])
            except Exception as exc:
                if not is_io_failure(exc):
                    raise
                self._mark_unwritable(exc)
                self.metrics.store_retries.inc()
                self._abort.wait(delay)
                delay = min(delay * 2, 30.0)
                continue
            if not self.store_healthy.is_set():
                logger.info("results store writable again; resuming")
                self.store_healthy.set()
                self.metrics.output_ok.set(1)
            return stored, [*failures, *refused]
        return None

    def _append(self, results: list[FrameResult]) -> tuple[list[FrameResult], list[FrameFailure]]:
        kept, written, refused = append_or_refuse(self.store, results)
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
        stored = self.store.stored_verdicts([results[i].frame.identity for i in repeats])
        marked = list(results)
        for i in repeats:
            marked[i] = _as_stored(results[i], stored.get(results[i].frame.identity))
        return marked

    def _mark_unwritable(self, exc: BaseException) -> None:
        if self.store_healthy.is_set():
            logger.error("cannot write results (%s); intake paused, retrying", exc)
            self.store_healthy.clear()
            self.metrics.output_ok.set(0)

    def _commit(self, results: list[FrameResult], failures: list[FrameFailure]) -> None:
        if self.journal is not None:
            commit_done(self.journal, results, failures)

    def _account(self, results: list[FrameResult], failures: list[FrameFailure],
                 latencies: list[float]) -> None:
        metrics = self.metrics
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


def _amended(step: MarkStationary | JudgeAgainstPlate | None, results: list[FrameResult],
             failed: str) -> list[FrameResult]:
    """The results after a step that annotates them before they are stored (the optics
    marking, then the plate-relative verdict: a field showing dirt on the optics keeps its
    flag); as they were where the step fails, since the results matter more than the step."""
    if step is None or not results:
        return results
    try:
        return step(results)
    except Exception:
        logger.exception(failed.format(n=len(results)))
        return results


def frame_failure(frame: Frame, reason: str, message: str) -> FrameFailure:
    return FrameFailure(frame.meta.source, reason, f"{frame.meta.source}: {message}", frame.key)


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


def record_failures(store: ResultsWriter, failures: list[FrameFailure]) -> None:
    """The failure table; a row it refuses is still logged and counted (never a stall). I/O
    failures of the store itself are raised, to be retried like any append."""
    if not failures:
        return
    try:
        store.record_failures(failures)
    except Exception as exc:
        if is_io_failure(exc):
            raise
        logger.exception("the results store refused %d failure row(s); they are logged only",
                         len(failures))


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
