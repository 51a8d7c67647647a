"""The single committer: finished tasks -> the results store, then the journal (on the driver).

The workers write nothing. The driver appends the rows and masks of every task that finished
since its last append in one `ResultsStore.append` (durable when it returns; readers see only
committed rows, so never a half-merged task), records failures, and only then journals the
file versions as done: the service's rule (daemon.pipeline.writer.commit_done), so a crash anywhere
leaves at most frames in the store that the journal does not know, which the store skips when
they come again. Each frame is therefore stored once, whichever worker or retry produced it.

Only I/O failures of the store (disk full, a lost mount) are retried, with back-off, for as
long as they last, as in the service; a result the store refuses for its content fails alone.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from daemon.frames import FrameFailure, FrameResult
from daemon.pipeline.plate_verdict import PlateVerdict
from daemon.pipeline.writer import (
    PASSING_REASONS,
    append_or_refuse,
    commit_done,
    is_io_failure,
    record_failures,
)
from daemon.results.journal import Journal
from daemon.results.store import ResultsStore
from daemon.tools.reprocess.plan import Task
from daemon.tools.reprocess.worker import TaskOutcome

logger = logging.getLogger(__name__)

# Reasons a whole task failed for (after its retries): none says anything about the files, so
# their frames are not journaled as done and the next --resume processes them again.
TASK_REASONS = frozenset({"model", "inference", "postprocess", "task", "worker_lost"})
NOT_DONE = PASSING_REASONS | TASK_REASONS


@dataclass(frozen=True, slots=True)
class TaskFailure:
    """A task that raised on its last try, or whose workers kept dying."""

    task: Task
    reason: str
    message: str
    tries: int

    def failures(self) -> list[FrameFailure]:
        again = "it is not marked done, so `artifactd reprocess --resume` processes it again"
        return [FrameFailure(f.source, self.reason, f"{f.source}: {self.message}; the task failed "
                             f"{self.tries} time(s); {again}", f.key) for f in self.task.files]


@dataclass(slots=True)
class Tally:
    stored: int = 0
    already: int = 0  # held by the store before (a crash between store and journal)
    flagged: int = 0
    failed: Counter = field(default_factory=Counter)  # reason -> frames
    not_done: list[str] = field(default_factory=list)  # first 100 sources to process again
    not_done_count: int = 0
    appends: int = 0
    commit_s: float = 0.0  # time spent making results durable and journaling them

    @property
    def frames(self) -> int:
        return self.stored + self.already + sum(self.failed.values())


class Committer:
    def __init__(self, store: ResultsStore, journal: Journal,
                 judge: PlateVerdict | None = None) -> None:
        self.store = store
        self.journal = journal
        self.judge = judge  # the plate-relative verdict, in the order tasks finish
        self.tally = Tally()

    def commit(self, outcomes: Sequence[TaskOutcome], failed: Sequence[TaskFailure] = ()) -> None:
        """Make these tasks' results and failures durable, then journal them."""
        started = time.perf_counter()
        results = [row.result() for outcome in outcomes for row in outcome.rows]
        if self.judge is not None:
            results = self.judge(results)
        failures = [f for outcome in outcomes for f in outcome.failures]
        failures += [f for task in failed for f in task.failures()]
        kept, written, failures = self._durably(results, failures)
        commit_done(self.journal, kept, failures, passing=NOT_DONE)
        self._count(kept, written, failures)
        self.tally.appends += 1
        self.tally.commit_s += time.perf_counter() - started

    def _durably(self, results: list[FrameResult], failures: list[FrameFailure]
                 ) -> tuple[list[FrameResult], set[str], list[FrameFailure]]:
        delay, written, warned = 0.5, set(), False
        while True:
            try:
                kept, fresh, refused = append_or_refuse(self.store, results)
                written.update(fresh)  # a retry after a failed failure row finds these held
                record_failures(self.store, [*failures, *refused])
                if warned:
                    logger.info("results store writable again; going on")
                return kept, written, [*failures, *refused]
            except Exception as exc:
                if not is_io_failure(exc):
                    raise
                if not warned:
                    logger.error("cannot write results (%s); retrying until it can", exc)
                    warned = True
                time.sleep(delay)
                delay = min(delay * 2, 30.0)

    def _count(self, kept: list[FrameResult], written: set[str],
               failures: list[FrameFailure]) -> None:
        tally = self.tally
        for result in kept:
            if result.frame.identity not in written:
                tally.already += 1
                continue
            tally.stored += 1
            tally.flagged += bool(result.flagged)
        for failure in failures:
            tally.failed[failure.reason] += 1
            logger.warning("%s", failure.message)
            if failure.reason in NOT_DONE:
                tally.not_done_count += 1
                if len(tally.not_done) < 100:
                    tally.not_done.append(failure.source)
