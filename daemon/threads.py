"""A thread that stops cleanly: a stop Event, should_keep_running(), stop() + join().

Worker threads are not daemon threads: on SIGTERM the service stops intake and joins them, so
queued frames are drained rather than abandoned.
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType

logger = logging.getLogger(__name__)


class StoppableThread(threading.Thread):
    def __init__(self, name: str) -> None:
        super().__init__(name=name, daemon=False)
        self._stop_event = threading.Event()

    def should_keep_running(self) -> bool:
        return not self._stop_event.is_set()

    def stop(self) -> None:
        self._stop_event.set()
        self.on_stop()

    def on_stop(self) -> None:
        """Wake the thread if it is blocked (override when it waits on something else)."""

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`; returns True when asked to stop meanwhile."""
        return self._stop_event.wait(seconds)

    def __enter__(self) -> StoppableThread:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        self.join()
