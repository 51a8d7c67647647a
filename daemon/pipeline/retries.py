"""Passing faults are tried again later: a frame waits out its back-off here, not in a stage.

A file that is not readable yet (permissions being fixed), or an inference or post-processing
error (a passing CUDA fault), says nothing about the frame itself, so the frame is tried again
after `delay_s`, then twice as long each time, up to `retries` times. Waiting happens on this
one thread, so the stages keep working on other frames meanwhile. What is still waiting when
the pipeline drains comes back as failures, so the writer records them before it stops.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import queue
import threading
import time
from dataclasses import dataclass, field

from daemon.frames import FrameFailure
from daemon.threads import StoppableThread

logger = logging.getLogger(__name__)


@dataclass(order=True, slots=True)
class _Waiting:
    due: float
    order: int
    item: object = field(compare=False)  # a ReadyFile or a Frame, with its attempt counted
    target: queue.Queue = field(compare=False)
    failure: FrameFailure = field(compare=False)  # recorded if the pipeline drains first


class Retries(StoppableThread):
    """Puts each item back on its stage's queue once its back-off has passed."""

    def __init__(self, retries: int, delay_s: float) -> None:
        super().__init__(name="retries")
        self.retries = retries
        self.delay_s = delay_s
        self._waiting: list[_Waiting] = []
        self._order = itertools.count()
        self._lock = threading.Condition()
        self._closed = False
        self._putting = False  # an item is on its way back to a stage

    def allows(self, attempt: int) -> bool:
        """Whether a frame that has been tried `attempt` times after a fault may be tried again."""
        return attempt < self.retries

    def later(self, item: object, target: queue.Queue, failure: FrameFailure, attempt: int) -> bool:
        """Queue `item` for `target` after its back-off; False once closed (record `failure`)."""
        with self._lock:
            if self._closed:
                return False
            due = time.monotonic() + self.delay_s * 2 ** (attempt - 1)
            heapq.heappush(self._waiting, _Waiting(due, next(self._order), item, target, failure))
            self._lock.notify()
        logger.info("%s; trying again (%d of %d)", failure.message, attempt, self.retries)
        return True

    def close(self) -> list[FrameFailure]:
        """Take nothing more; the failures of what is still waiting, for the writer to record.

        An item being put back right now lands first, so it is processed, not lost."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()
            self._lock.wait_for(lambda: not self._putting)
            waiting, self._waiting = self._waiting, []
        return [w.failure for w in waiting]

    def on_stop(self) -> None:
        with self._lock:
            self._lock.notify_all()

    def run(self) -> None:
        while self.should_keep_running():
            with self._lock:
                due = self._due()
                if due is None:
                    wait = self._waiting[0].due - time.monotonic() if self._waiting else None
                    self._lock.wait(wait)
                    continue
                self._putting = True
            try:
                # Not under the lock: the stage that takes it may be scheduling a retry itself.
                while self.should_keep_running():
                    try:
                        due.target.put(due.item, timeout=0.2)
                        break
                    except queue.Full:
                        continue
            finally:
                with self._lock:
                    self._putting = False
                    self._lock.notify_all()

    def _due(self) -> _Waiting | None:
        if not self._closed and self._waiting and self._waiting[0].due <= time.monotonic():
            return heapq.heappop(self._waiting)
        return None
