"""Verdicts out: one JSON message per processed frame on a PUB socket, as soon as it is durable.

Multipart [topic, JSON]. Topic b"verdict":

    {"frame_id": "P1-C07-f3", "source": "zmq:P1-C07-f3", "plate": "P1", "well": "C07",
     "field": 3, "score": 0.97, "flagged": true, "area_fraction": 0.012, "n_artifacts": 2,
     "latency_s": 0.41, "processed_at": "2026-01-01T12:00:01+00:00"}

`frame_id` is the sender's id for streamed frames and the relative path for files (then equal
to `source`). Topic b"alert" carries an Alert (daemon.sinks.alerts) as JSON. A PUB socket never
blocks: a subscriber that does not keep up loses messages at its high-water mark, not us.

PUB sockets are not thread-safe; a lock makes publish() and publish_alert() safe to call from
the writer thread and the alert monitor alike.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import zmq

from daemon.config import ConfigError, VerdictsConfig
from daemon.endpoints import binds_all_interfaces
from daemon.frames import FrameResult
from daemon.sinks.alerts import Alert

logger = logging.getLogger(__name__)


class VerdictPublisher:
    def __init__(self, config: VerdictsConfig, *, context: zmq.Context[Any] | None = None) -> None:
        self._owned_context = None
        if context is None:
            context = self._owned_context = zmq.Context()
        self._lock = threading.Lock()
        self._socket = context.socket(zmq.PUB)
        self._socket.setsockopt(zmq.LINGER, 1000)  # close() gives queued verdicts a second
        try:
            self._socket.bind(config.endpoint)
        except zmq.ZMQError as exc:
            self.close()
            raise ConfigError(f"verdicts.endpoint: cannot bind {config.endpoint} ({exc})") from None
        self.endpoint = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)
        if binds_all_interfaces(config.endpoint):
            logger.warning(
                "verdict publisher bound to all interfaces (%s) as configured", self.endpoint
            )
        logger.info("verdicts published at %s", self.endpoint)

    def publish(self, results: Sequence[FrameResult], latency_s: Sequence[float]) -> None:
        """One verdict per result; latency_s[i] is the i-th frame's ready-to-durable time."""
        messages = [
            [b"verdict", _dumps(_verdict(result, latency))]
            for result, latency in zip(results, latency_s, strict=True)
        ]
        with self._lock:
            for message in messages:
                self._socket.send_multipart(message)

    def publish_alert(self, alert: Alert | Mapping[str, Any]) -> None:
        body = alert.as_dict() if isinstance(alert, Alert) else dict(alert)
        with self._lock:
            self._socket.send_multipart([b"alert", _dumps(body)])

    def close(self) -> None:
        with self._lock:
            self._socket.close()
            if self._owned_context is not None:
                self._owned_context.term()


def _verdict(result: FrameResult, latency_s: float) -> dict[str, Any]:
    frame = result.frame
    return {
        "frame_id": frame.frame_id or frame.meta.source,
        "source": frame.meta.source,
        "plate": frame.meta.plate,
        "well": frame.meta.well,
        "field": frame.meta.field,
        "score": float(result.score),
        "flagged": bool(result.flagged),
        "area_fraction": float(result.area_fraction),
        "n_artifacts": int(result.n_artifacts),
        "latency_s": float(latency_s),
        "processed_at": result.processed_at,
        "duplicate": bool(result.duplicate),  # sent before: this is the stored verdict
    }


def _dumps(body: dict[str, Any]) -> bytes:
    # NaN is not JSON; strict parsers on the acquisition side would reject the whole message.
    return json.dumps(
        {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in body.items()}
    ).encode()
