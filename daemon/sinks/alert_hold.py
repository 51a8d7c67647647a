"""The contamination rules judge a field once the optics tracker has decided on its artifacts.

The first sightings of dirt on the optics look like dirt in the sample: only later fields show
that it stays at the same place (daemon.sinks.optics). Judged at once, those first fields would
raise a well or plate alert for dirt that is not in the plate. So fields wait here, in the order
they became durable, until each of their artifacts is known to be on the optics or not (its place
confirmed, or forgotten); the rules (daemon.sinks.alerts) then judge them without the artifacts
on the optics. Alerts about the optics themselves go out at once.

The wait is bounded. A place is decided within OpticsTracker.max_wait fields of its first
sighting, so at most that many fields wait (beyond it, the oldest is judged as it stands: a place
seen field after field in one well only stays undecided). When no new field has come for
IDLE_RELEASE_S (the plate is done, the instrument paused) and at shutdown, every waiting field is
judged as it stands. Nothing waits longer than that: what waits is a small record per field, not
its pixels.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

from daemon.frames import FrameResult
from daemon.sinks.alerts import Alert, ContaminationMonitor
from daemon.sinks.optics import OpticsTracker, Sighting

IDLE_RELEASE_S = 60.0


class HeldAlerts:
    """The pipeline's alert sink when the optics tracker runs.

    observe() runs on the writer thread, tick() on the service's main loop; a lock keeps the
    monitor judging from one thread at a time.
    """

    def __init__(self, monitor: ContaminationMonitor, tracker: OpticsTracker, *,
                 idle_release_s: float = IDLE_RELEASE_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._monitor = monitor
        self._tracker = tracker
        self._idle_release_s = idle_release_s
        self._clock = clock
        self._waiting: deque[Sighting] = deque()
        self._last_field = clock()
        self._lock = threading.Lock()

    @property
    def waiting(self) -> int:
        with self._lock:
            return len(self._waiting)

    def observe(self, results: Sequence[FrameResult],
                _latencies: Sequence[float] = ()) -> list[Alert]:
        """The results just stored: optics alerts now, fields once decided."""
        with self._lock:
            sightings, events = self._tracker.take(results)
            alerts: list[Alert] = []
            for event in events:
                alerts += self._monitor.optics(event)
            if sightings:
                self._last_field = self._clock()
            self._waiting.extend(sightings)
            return alerts + self._release(everything=False)

    def tick(self) -> list[Alert]:
        """Judge what waits once no field has come for idle_release_s."""
        with self._lock:
            if not self._waiting or self._clock() - self._last_field < self._idle_release_s:
                return []
            return self._release(everything=True)

    def flush(self) -> list[Alert]:
        """Judge everything that waits (at shutdown)."""
        with self._lock:
            return self._release(everything=True)

    def _release(self, *, everything: bool) -> list[Alert]:
        ready = []
        limit = self._tracker.max_wait
        while self._waiting and (everything or self._waiting[0].decided
                                 or len(self._waiting) > limit):
            ready.append(self._waiting.popleft().judged())
        return self._monitor.observe_fields(ready) if ready else []
