"""ZeroMQ source: frames streamed by the acquisition software, PULL (default) or SUB.

A message is two ZeroMQ frames: a JSON header and the raw C-contiguous pixel buffer.

    {"frame_id": "P1-C07-f3", "shape": [2048, 2048], "dtype": "uint16",
     "plate": "P1", "well": "C07", "field": 3, "channel": 0, "pixel_size_um": 0.65,
     "acquired_at": "2026-01-01T12:00:00Z"}

`frame_id`, `shape` ([H, W] or [C, H, W]) and `dtype` (uint8 or uint16, little-endian) are
required; unknown keys are ignored so senders may carry their own. A malformed message is counted
under `artifactd_frames_failed_total{reason}`, logged (once per reason, then at most once a
minute with the number not logged) and dropped; nothing a sender does stops the source.
Reasons: zmq_parts, zmq_json, zmq_header, zmq_shape, zmq_dtype, zmq_buffer (length is not
shape x itemsize), zmq_too_large (over `zmq.max_message_bytes`); "internal" when `on_frame`
raises. Frames that arrive are counted as seen by the pipeline they are handed to.

Overload (`zmq.overload`), when the pipeline is full and `on_frame` blocks:

- "block": the receiver waits inside `on_frame`, the socket fills to `zmq.high_water_mark` and a
  PUSH sender's `send` blocks. Nothing is lost. (A PUB sender never waits: ZeroMQ drops at the
  publisher, out of our sight, which is why `mode = "sub"` with "block" logs a warning.)
- "drop_oldest": the receiver keeps reading into a local backlog of `zmq.high_water_mark` frames
  that a second thread feeds to `on_frame`; when it is full the oldest frame is dropped, counted
  in `artifactd_frames_dropped_total{policy="drop_oldest"}` and logged once per burst.

`on_frame` may return False to refuse a frame (a pipeline that no longer accepts): the frame
is counted as failed with reason "refused" and the first refusal is logged. `stop()` stops
receiving; what the socket already holds (up to the high-water mark) and the backlog are still
handed to `on_frame` before the threads end, so the pipeline must outlive the source.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Any

import zmq

from daemon.config import ConfigError, ZmqConfig
from daemon.endpoints import binds_all_interfaces
from daemon.frames import Frame
from daemon.ops.metrics import Metrics
from daemon.sources.messages import MessageError, parse_message
from daemon.threads import StoppableThread

logger = logging.getLogger(__name__)

POLL_MS = 100  # how often a waiting thread looks at its stop flag
LOG_REPEAT_S = 60.0


class ZmqSource:
    """Receives frames on a ZeroMQ socket and hands each one to `on_frame`."""

    def __init__(
        self,
        config: ZmqConfig,
        on_frame: Callable[[Frame], bool | None],
        metrics: Metrics,
        *,
        context: zmq.Context[Any] | None = None,
    ) -> None:
        self._config = config
        self._on_frame = on_frame
        self._metrics = metrics
        self._context = context
        self._endpoint = ""
        self._threads: list[StoppableThread] = []

    @property
    def endpoint(self) -> str:
        """The endpoint actually bound or connected (a tcp port 0 resolved); set by start()."""
        return self._endpoint

    @property
    def backlog_done(self) -> bool:
        """Always: a stream has no backlog (frames sent before start() are the sender's)."""
        return True

    @property
    def not_handed_on(self) -> dict[str, str]:
        """Always empty: a frame that cannot be handed on is counted and logged, not named."""
        return {}

    def start(self) -> None:
        config = self._config
        context, owned_context = self._context, None
        if context is None:
            context = owned_context = zmq.Context()
        socket = context.socket(zmq.PULL if config.mode == "pull" else zmq.SUB)
        socket.setsockopt(zmq.RCVHWM, config.high_water_mark)
        socket.setsockopt(zmq.LINGER, 0)
        # No ZMQ_MAXMSGSIZE: ZeroMQ would disconnect the sender and silently lose every message
        # it had queued; an oversized message is received, counted and dropped instead.
        if config.mode == "sub":
            socket.setsockopt(zmq.SUBSCRIBE, b"")
        try:
            if config.bind:
                socket.bind(config.endpoint)
            else:
                socket.connect(config.endpoint)
        except zmq.ZMQError as exc:
            socket.close()
            if owned_context is not None:
                owned_context.term()
            verb = "bind" if config.bind else "connect to"
            raise ConfigError(f"zmq.endpoint: cannot {verb} {config.endpoint} ({exc})") from None
        self._endpoint = socket.getsockopt_string(zmq.LAST_ENDPOINT)
        if config.bind and binds_all_interfaces(config.endpoint):
            logger.warning(
                "ZeroMQ frames listener bound to all interfaces (%s) as configured: any host "
                "that can reach this machine can send frames",
                self._endpoint,
            )
        if config.mode == "sub" and config.overload == "block":
            logger.warning(
                "zmq.mode = 'sub': a PUB sender never waits, so frames beyond the high-water "
                "mark are dropped by the sender's ZeroMQ where they cannot be counted; use "
                "mode = 'pull' for lossless intake"
            )
        hand_over = _HandOver(self._on_frame, self._metrics)
        if config.overload == "drop_oldest":
            backlog = _Backlog(config.high_water_mark, self._metrics)
            receiver = _Receiver(socket, backlog.put, config, self._metrics, owned_context)
            self._threads = [receiver, _Feeder(backlog, hand_over, receiver)]
        else:
            self._threads = [_Receiver(socket, hand_over, config, self._metrics, owned_context)]
        for thread in self._threads:
            thread.start()
        logger.info(
            "ZeroMQ %s source %s %s (overload policy %s)",
            config.mode.upper(), "bound to" if config.bind else "connected to",
            self._endpoint, config.overload,
        )

    def stop(self) -> None:
        """Stop receiving; frames already received are still handed over (see the module doc)."""
        for thread in self._threads:
            thread.stop()

    def join(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> ZmqSource:
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


class _HandOver:
    """Calls on_frame; a frame it raises on or refuses is counted as failed, never lost silently."""

    def __init__(self, on_frame: Callable[[Frame], bool | None], metrics: Metrics) -> None:
        self._on_frame = on_frame
        self._failed = metrics.failed
        self._refusal_logged = False

    def __call__(self, frame: Frame) -> None:
        try:
            accepted = self._on_frame(frame)
        except Exception:
            self._failed.labels(reason="internal").inc()
            logger.exception(
                "streamed frame %r could not be handed to the pipeline", frame.frame_id
            )
            return
        if accepted is False:
            self._failed.labels(reason="refused").inc()
            if not self._refusal_logged:
                logger.warning(
                    "the pipeline refused streamed frame %r (it no longer accepts frames); "
                    "further refusals are counted, not logged", frame.frame_id,
                )
                self._refusal_logged = True


class _Receiver(StoppableThread):
    """Owns the socket from start() on (ZeroMQ sockets are not thread-safe)."""

    def __init__(
        self,
        socket: zmq.Socket[Any],
        deliver: Callable[[Frame], None],
        config: ZmqConfig,
        metrics: Metrics,
        owned_context: zmq.Context[Any] | None,
    ) -> None:
        super().__init__(name="zmq-receiver")
        self._socket = socket
        self._deliver = deliver
        self._config = config
        self._metrics = metrics
        self._owned_context = owned_context
        self._reported: dict[str, tuple[float, int]] = {}  # reason -> (logged at, not logged)

    def run(self) -> None:
        try:
            while self.should_keep_running():
                if self._socket.poll(POLL_MS):
                    self._receive(0)
            # What the socket already holds was accepted from the sender: hand it over too.
            for _ in range(self._config.high_water_mark):
                if not self._receive(zmq.NOBLOCK):
                    break
        finally:
            self._socket.close(linger=0)
            if self._owned_context is not None:
                self._owned_context.term()

    def _receive(self, flags: int) -> bool:
        try:
            parts = self._socket.recv_multipart(flags, copy=False)
        except zmq.Again:
            return False
        try:
            frame = parse_message(parts, self._config.max_message_bytes)
        except MessageError as error:
            self._metrics.failed.labels(reason=error.reason).inc()
            self._report(error)
            return True
        self._deliver(frame)
        return True

    def _report(self, error: MessageError) -> None:
        """The first message of each reason is logged, then at most one per LOG_REPEAT_S."""
        now = time.monotonic()
        logged_at, not_logged = self._reported.get(error.reason, (-math.inf, 0))
        if now - logged_at < LOG_REPEAT_S:
            self._reported[error.reason] = (logged_at, not_logged + 1)
            return
        more = f" ({not_logged} more like it since the last report)" if not_logged else ""
        logger.warning("ZeroMQ message dropped (%s): %s%s", error.reason, error.message, more)
        self._reported[error.reason] = (now, 0)


class _Backlog:
    """Frames received but not yet handed over; when full, the oldest is dropped and counted."""

    def __init__(self, capacity: int, metrics: Metrics) -> None:
        self._capacity = capacity
        self._frames: deque[Frame] = deque()
        self._ready = threading.Condition()
        self._dropped = metrics.dropped.labels(policy="drop_oldest")
        self._depth = metrics.queue_depth.labels(stage="zmq")
        self._dropped_in_burst = 0

    def put(self, frame: Frame) -> None:
        with self._ready:
            if len(self._frames) >= self._capacity:
                oldest = self._frames.popleft()
                self._dropped.inc()
                if self._dropped_in_burst == 0:
                    logger.warning(
                        "the pipeline is not keeping up with the ZeroMQ stream: dropping the "
                        "oldest frames (zmq.overload = 'drop_oldest'), first %r",
                        oldest.frame_id,
                    )
                self._dropped_in_burst += 1
            self._frames.append(frame)
            self._depth.set(len(self._frames))
            self._ready.notify()

    def get(self, timeout: float) -> Frame | None:
        with self._ready:
            if not self._frames:
                self._ready.wait(timeout)
            if not self._frames:
                return None
            frame = self._frames.popleft()
            self._depth.set(len(self._frames))
            if not self._frames and self._dropped_in_burst:
                logger.warning(
                    "ZeroMQ stream caught up; %d frames were dropped", self._dropped_in_burst
                )
                self._dropped_in_burst = 0
            return frame


class _Feeder(StoppableThread):
    """Feeds the backlog to the pipeline; ends once the receiver has ended and it is empty."""

    def __init__(self, backlog: _Backlog, hand_over: _HandOver, receiver: _Receiver) -> None:
        super().__init__(name="zmq-feeder")
        self._backlog = backlog
        self._hand_over = hand_over
        self._receiver = receiver

    def run(self) -> None:
        while True:
            # Read before get(): a receiver that has ended has put all it ever will.
            receiver_done = not self._receiver.is_alive()
            frame = self._backlog.get(POLL_MS / 1000)
            if frame is not None:
                self._hand_over(frame)
            elif receiver_done:
                return
