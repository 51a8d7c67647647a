"""Batching: frames of one shape go to an engine together, up to max_batch of them, and no frame
waits more than max_wait_ms for others to join it."""

from __future__ import annotations

from daemon.frames import Frame


class Batcher:
    """The frames waiting for a batch, by shape. Pure bookkeeping: the clock is passed in."""

    def __init__(self, max_batch: int, max_wait_s: float) -> None:
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._pending: dict[tuple[int, ...], list[Frame]] = {}
        self._first_at: dict[tuple[int, ...], float] = {}

    def __bool__(self) -> bool:
        return bool(self._pending)

    def add(self, frame: Frame, now: float) -> None:
        shape = frame.pixels.shape
        self._pending.setdefault(shape, []).append(frame)
        self._first_at.setdefault(shape, now)

    def timeout(self, now: float, idle: float) -> float:
        """How long to wait for the next frame: until the oldest batch is due, else `idle`."""
        due = min(self._first_at.values(), default=None)
        return idle if due is None else max(0.0, due + self.max_wait_s - now)

    def ready(self, now: float, *, everything: bool = False) -> list[list[Frame]]:
        """The batches that are full or have waited long enough (all of them, `everything`)."""
        out = []
        for shape in list(self._pending):
            if (everything or len(self._pending[shape]) >= self.max_batch
                    or now - self._first_at[shape] >= self.max_wait_s):
                out.append(self._pending.pop(shape))
                self._first_at.pop(shape)
        return out
