"""The few lines an acquisition script needs: send frames to artifactd, read its verdicts.

    with ArtifactClient() as client:
        client.send("P1-C07-f3", pixels, plate="P1", well="C07", field=3)
        for verdict in client.verdicts(timeout_s=5):
            if verdict["topic"] == "verdict" and verdict["flagged"]:
                reimage(verdict["frame_id"])

`send` blocks while artifactd is down or full (its default overload policy), or raises zmq.Again
after `send_timeout_s`. Verdicts arrive on a PUB/SUB socket: those published before the
subscription has reached artifactd, just after connecting, are not delivered. ZeroMQ sockets are
not thread-safe: a thread that reads verdicts while another sends uses a client of its own.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from types import TracebackType
from typing import Any

import numpy as np
import zmq

SUPPORTED_DTYPES = ("uint8", "uint16")
SEND_QUEUE_FRAMES = 10


class ArtifactClient:
    def __init__(
        self,
        frames_endpoint: str | None = "tcp://127.0.0.1:9752",
        verdicts_endpoint: str | None = "tcp://127.0.0.1:9751",
        *,
        context: zmq.Context[Any] | None = None,
        send_timeout_s: float | None = None,
    ) -> None:
        """Either endpoint may be None: a client that only sends, or only listens."""
        self._owned_context = None
        if context is None:
            context = self._owned_context = zmq.Context()
        self._frames = self._verdicts = None
        if frames_endpoint is not None:
            self._frames = context.socket(zmq.PUSH)
            # Queue only to a live artifactd, and only a few frames: send() blocks (rather than
            # piling up gigabytes here) while artifactd is down or full.
            self._frames.setsockopt(zmq.IMMEDIATE, 1)
            self._frames.setsockopt(zmq.SNDHWM, SEND_QUEUE_FRAMES)
            if send_timeout_s is not None:
                self._frames.setsockopt(zmq.SNDTIMEO, int(send_timeout_s * 1000))
            self._frames.setsockopt(zmq.LINGER, 5000)  # close() waits this long for queued frames
            self._frames.connect(frames_endpoint)
        if verdicts_endpoint is not None:
            self._verdicts = context.socket(zmq.SUB)
            self._verdicts.setsockopt(zmq.LINGER, 0)
            self._verdicts.setsockopt(zmq.SUBSCRIBE, b"verdict")
            self._verdicts.setsockopt(zmq.SUBSCRIBE, b"alert")
            self._verdicts.connect(verdicts_endpoint)

    def send(self, frame_id: str, pixels: np.ndarray, **meta: Any) -> None:
        """Send one frame; meta: plate, well, field, channel, pixel_size_um, acquired_at."""
        if self._frames is None:
            raise RuntimeError("this client was made without a frames_endpoint")
        if pixels.dtype.name not in SUPPORTED_DTYPES:
            raise ValueError(f"pixels: expected dtype uint8 or uint16, got {pixels.dtype}")
        buffer = np.ascontiguousarray(pixels, dtype=pixels.dtype.newbyteorder("<"))
        header = {"frame_id": frame_id, "shape": list(buffer.shape), "dtype": buffer.dtype.name}
        head = json.dumps({**meta, **header}).encode()
        self._frames.send_multipart([head, buffer.data], copy=False)

    def next_verdict(self, timeout_s: float | None = None) -> dict[str, Any] | None:
        """The next verdict or alert (its "topic" key says which); None after timeout_s."""
        if self._verdicts is None:
            raise RuntimeError("this client was made without a verdicts_endpoint")
        timeout_ms = None if timeout_s is None else int(timeout_s * 1000)
        if not self._verdicts.poll(timeout_ms):
            return None
        topic, body = self._verdicts.recv_multipart()
        return {**json.loads(body), "topic": topic.decode()}

    def verdicts(self, timeout_s: float | None = None) -> Iterator[dict[str, Any]]:
        """Verdicts and alerts as they come, until none arrives for timeout_s."""
        while (message := self.next_verdict(timeout_s)) is not None:
            yield message

    def close(self) -> None:
        for sock in (self._frames, self._verdicts):
            if sock is not None:
                sock.close()
        if self._owned_context is not None:
            self._owned_context.term()

    def __enter__(self) -> ArtifactClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
