"""The driver: a Dask cluster runs the tasks, the driver commits what they return.

`--scheduler local[:N]` starts a LocalCluster of N worker processes (one thread each) on this
machine; `tcp://HOST:PORT` connects to a running scheduler (its workers must see the archive
and the model at the same paths). The model plugin is registered once; tasks are handed out a
few per worker thread ahead of time (`reprocess.tasks_per_worker`), so the scheduler holds a
bounded number of tasks however large the archive, and the driver's memory holds only their
results until they are committed.

Faults: a task that raises is run again by Dask (`retries`), on any worker; after the last try
its frames are recorded as failed, not done. A worker that dies has its tasks (and results not
yet fetched) computed again elsewhere by the scheduler (up to `distributed.scheduler.
allowed-failures` deaths per task); the driver commits each task once, when its result first
arrives, and the store skips any identity it holds, so nothing is stored twice.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import queue
import statistics
import threading
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import CancelledError
from dataclasses import dataclass, field

import dask
from distributed import Client, Future, LocalCluster
from distributed.scheduler import KilledWorker
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from daemon.config import Config, local_workers
from daemon.tools.reprocess.committer import Committer, TaskFailure
from daemon.tools.reprocess.plan import Task
from daemon.tools.reprocess.worker import (
    EVENTS,
    KEY_PREFIX,
    PLUGIN,
    ModelOnWorker,
    TaskFailed,
    TaskOutcome,
    analyse_task,
)
from engines.select import usable_cores

logger = logging.getLogger(__name__)

SETTLED = ("finished", "error", "cancelled")  # a future's states that stay


class DriverError(RuntimeError):
    """The cluster cannot be started or reached; one sentence saying which and why."""


@dataclass(slots=True)
class Timings:
    """What the tasks reported about themselves: where the time went."""

    # (worker, thread, start, end) of every task done
    runs: list[tuple[str, int, float, float]] = field(default_factory=list)
    engines: dict[str, int] = field(default_factory=dict)  # worker -> engines it opened
    raised: int = 0  # task attempts that raised (each retried, or recorded after the last)

    def add(self, outcomes: Sequence[TaskOutcome]) -> None:
        for o in outcomes:
            self.runs.append((o.worker, o.thread, o.started, o.finished))
            self.engines[o.worker] = max(self.engines.get(o.worker, 0), o.engines_opened)

    def task_s(self) -> list[float]:
        return [end - start for _, _, start, end in self.runs]

    def gaps_s(self) -> list[float]:
        """Per worker thread, the time from one task's end to the next one's start, while
        tasks were waiting: what coordinating a task costs (scheduling, result hand-over)."""
        by_thread: dict[tuple[str, int], list[tuple[float, float]]] = defaultdict(list)
        for worker, thread, start, end in self.runs:
            by_thread[(worker, thread)].append((start, end))
        gaps = []
        for runs in by_thread.values():
            runs.sort()
            gaps += [max(0.0, b[0] - a[1]) for a, b in itertools.pairwise(runs)]
        return gaps

    def overhead(self) -> str:
        gaps, busy = self.gaps_s(), self.task_s()
        if not gaps:
            return "not measured (no worker thread ran two tasks)"
        share = sum(gaps) / (sum(busy) + sum(gaps)) if sum(busy) else 0.0
        return (f"{statistics.median(gaps) * 1000:.1f} ms median between a worker thread's "
                f"tasks (tasks took {statistics.mean(busy) * 1000:.0f} ms on average; "
                f"{share:.1%} of worker time)")


@dataclass(frozen=True, slots=True)
class RunOptions:
    scheduler: str
    retries: int
    tasks_per_worker: int


@contextlib.contextmanager
def connect(scheduler: str) -> Iterator[tuple[Client, str]]:
    """A client of a new LocalCluster ("local", "local:N") or of a running scheduler, and a
    description of it for the log."""
    workers = local_workers(scheduler)
    if workers is not None:
        workers = workers or usable_cores()
        try:
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                   dashboard_address=":0")  # any free port: runs side by side
        except Exception as exc:
            raise DriverError(f"cannot start a local Dask cluster of {workers} worker(s) "
                              f"({type(exc).__name__}: {exc})") from None
        with cluster, Client(cluster) as client:
            yield client, f"a local cluster of {workers} worker process(es)"
        return
    try:
        client = Client(scheduler, timeout=dask.config.get("distributed.comm.timeouts.connect"))
    except (OSError, TimeoutError) as exc:
        raise DriverError(f"cannot reach the Dask scheduler at {scheduler} ({exc}); expected a "
                          "running `dask scheduler` there, with workers") from None
    with client:
        yield client, f"the Dask scheduler at {scheduler}"


class Driver:
    """Hands the tasks to the cluster, commits what comes back, shows progress."""

    def __init__(self, client: Client, committer: Committer, options: RunOptions, *,
                 function: Callable[[Task, str], TaskOutcome] = analyse_task) -> None:
        self.client = client
        self.committer = committer
        self.options = options
        self.function = function  # what a task runs (bench/reprocess.py times an empty one)
        self.run = uuid.uuid4().hex[:12]
        self.timings = Timings()
        self.stop = threading.Event()  # set by a signal: stop handing out, commit no more
        self.left = 0  # tasks not committed when it stopped
        self.committed: list[Task] = []  # tasks whose frames are stored or recorded as failed
        self.abandoned = ""  # why it stopped early, when no worker could open the model
        self.began = self.took = 0.0  # when the tasks were first handed out, and for how long
        self._threads = (0, 0.0)  # worker threads, when last asked
        self._finished: queue.Queue[Future] = queue.Queue()  # futures as they finish

    def process(self, tasks: Sequence[Task], config: Config, model: str) -> None:
        """Every task once into the store; returns when all are committed or recorded."""
        self.began = time.monotonic()
        self.client.register_plugin(ModelOnWorker(config, model), name=PLUGIN)
        try:
            self._process(tasks)
        finally:
            self.took = time.monotonic() - self.began
            self._count_raised()
            with contextlib.suppress(Exception):
                self.client.unregister_worker_plugin(PLUGIN)  # the workers free the engines

    def _process(self, tasks: Sequence[Task]) -> None:
        pending = deque(tasks)
        in_flight: dict[str, tuple[Task, Future]] = {}  # by key, until committed
        tally = self.committer.tally
        with logging_redirect_tqdm(), tqdm(total=sum(len(t.files) for t in tasks), unit="frame",
                                           desc="reprocess", smoothing=0.05,
                                           mininterval=0.5) as bar:
            self._hand_out(pending, in_flight)
            while in_flight and not self.stop.is_set() and not self.abandoned:
                batch = self._next_batch()
                if not batch:
                    continue
                outcomes, failed, tasks_done = self._sort(batch, in_flight)
                self.committed += tasks_done
                self.committer.commit(outcomes, failed)
                self.timings.add(outcomes)
                bar.update(sum(len(o.rows) + len(o.failures) for o in outcomes)
                           + sum(len(f.task.files) for f in failed))
                bar.set_postfix(flagged=tally.flagged, failed=sum(tally.failed.values()),
                                refresh=False)
                del batch, outcomes  # committed: the futures go, and Dask forgets the results
                self._give_up_on_a_broken_model(failed)
                self._hand_out(pending, in_flight)
            if in_flight:  # stopped: what is not committed is left for --resume
                self.client.cancel([future for _, future in in_flight.values()])
        self.left = len(pending) + len(in_flight)

    def _next_batch(self) -> list[Future]:
        """The futures finished since the last batch (waits a little for the first one, so a
        signal is noticed within 0.2 s)."""
        try:
            batch = [self._finished.get(timeout=0.2)]
        except queue.Empty:
            return []
        with contextlib.suppress(queue.Empty):
            while True:
                batch.append(self._finished.get_nowait())
        return batch

    def _give_up_on_a_broken_model(self, failed: list[TaskFailure]) -> None:
        """A model no worker can open fails every task: stop at the first such task, rather
        than record the whole archive as failed."""
        model = [f for f in failed if f.reason == "model"]
        if model and not self.timings.runs:
            self.abandoned = model[0].message

    def _hand_out(self, pending: deque[Task], in_flight: dict[str, tuple[Task, Future]]) -> None:
        """Keep a few tasks per worker thread submitted; more wait here, not at the scheduler."""
        room = max(1, self._worker_threads()) * self.options.tasks_per_worker - len(in_flight)
        chosen = [pending.popleft() for _ in range(min(room, len(pending)))]
        if not chosen:
            return
        keys = [f"{KEY_PREFIX}{self.run}-{task.id}" for task in chosen]
        futures = self.client.map(self.function, chosen, [self.run] * len(chosen), key=keys,
                                  pure=False, retries=self.options.retries)
        for key, task, future in zip(keys, chosen, futures, strict=True):
            in_flight[key] = (task, future)
            future.add_done_callback(self._finished.put)  # runs on Dask's callback thread

    def _sort(self, batch: list[Future], in_flight: dict[str, tuple[Task, Future]]
              ) -> tuple[list[TaskOutcome], list[TaskFailure], list[Task]]:
        """The finished futures' results, fetched together (one request per worker, not one
        per task), and the failed ones' exceptions."""
        batch = [f for f in batch if f.key in in_flight]  # each task is committed once
        for future in [f for f in batch if f.status not in SETTLED]:
            future.add_done_callback(self._finished.put)  # lost with its worker: computed again
        batch = [f for f in batch if f.status in SETTLED]
        done = [f for f in batch if f.status == "finished"]
        values = dict(zip((f.key for f in done), self.client.gather(done), strict=True))
        outcomes, failed, tasks = [], [], []
        for future in batch:
            task, _ = in_flight.pop(future.key)
            tasks.append(task)
            if future.key in values:
                outcomes.append(values[future.key])
            else:
                failed.append(self._failure(task, _exception(future)))
        return outcomes, failed, tasks

    def _failure(self, task: Task, exc: BaseException) -> TaskFailure:
        tries = self.options.retries + 1
        if isinstance(exc, TaskFailed):
            return TaskFailure(task, exc.reason, exc.message, tries)
        if isinstance(exc, KilledWorker):
            allowed = int(dask.config.get("distributed.scheduler.allowed-failures"))
            return TaskFailure(task, "worker_lost", "the workers running this task died "
                               f"{allowed + 1} times (distributed.scheduler.allowed-failures)",
                               allowed + 1)
        return TaskFailure(task, "task", f"{type(exc).__name__}: {exc}", tries)

    def _worker_threads(self) -> int:
        """Threads of the workers now connected (asked again every few seconds: workers come
        and go); until one connects, tasks wait at the scheduler."""
        threads, asked = self._threads
        if time.monotonic() - asked > 5.0:
            threads = sum(self.client.nthreads().values())
            if not threads:
                logger.info("no Dask worker connected yet; tasks wait at the scheduler")
            self._threads = (threads, time.monotonic())
        return threads

    def _count_raised(self) -> None:
        with contextlib.suppress(Exception):
            events = self.client.get_events(EVENTS)
            self.timings.raised = sum(1 for _, msg in events if msg.get("run") == self.run)



def _exception(future: Future) -> BaseException:
    """Why a future that did not finish did not (raised on its last try, or cancelled)."""
    try:
        return future.exception() or RuntimeError(f"task ended as {future.status}")
    except CancelledError as exc:
        return exc
