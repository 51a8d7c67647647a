"""What the service asks of every source of frames (the folder, the ZeroMQ stream)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class Source(Protocol):
    """A source hands frames to the pipeline from its own threads, between start() and stop().

    `stop()` ends intake; `join()` then waits until what the source still held has been handed
    on, so the pipeline's drain sees it. `--once` ends when every source's `backlog_done` is
    true and the pipeline is empty, and names what `not_handed_on` lists as not processed.
    """

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def join(self, timeout: float | None = None) -> None: ...

    @property
    def backlog_done(self) -> bool:
        """True once everything present when the source started has been handed on."""
        ...

    @property
    def not_handed_on(self) -> dict[str, str]:
        """What the source could not hand on (name -> why); it stays where it was, not done."""
        ...
