"""Alerts to a chat webhook: a Slack/Teams-compatible JSON body posted on its own thread.

The body is {"text": "..."}: what Slack incoming webhooks and Teams Office 365 connectors take
(and Mattermost, Rocket.Chat). Teams "Workflows" webhooks take Adaptive Cards only; point such
a workflow's "post message" step at the request body's `text`.

notify() never blocks the pipeline: alerts wait in a bounded queue (a full queue drops the
oldest, with a log line) and are posted with urllib, retried with exponential back-off on
network errors, HTTP 5xx, 408 and 429 (`alerts.webhook_retries` times, from BACKOFF_S up to
MAX_BACKOFF_S), each attempt limited to `alerts.webhook_timeout_s`. The URL comes only from the
config and is never logged whole: its path is the secret.
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import threading
import urllib.error
import urllib.request
from collections import deque
from urllib.parse import urlsplit

from daemon.config import AlertsConfig
from daemon.sinks.alerts import Alert
from daemon.threads import StoppableThread

logger = logging.getLogger(__name__)

BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
RETRY_STATUS = (408, 429)  # and every 5xx


class WebhookNotifier(StoppableThread):
    """start() it, pass notify as an alert sink; stop() + join() try what is queued once more."""

    def __init__(self, config: AlertsConfig, *, queue_size: int = 100) -> None:
        super().__init__(name="alert-webhook")
        if not config.webhook_url:
            raise ValueError("alerts.webhook_url is empty: there is no webhook to post to")
        self._config = config
        self._host = urlsplit(config.webhook_url).hostname or "?"
        self._queue: deque[Alert] = deque()
        self._queue_size = queue_size
        self._changed = threading.Condition()

    def notify(self, alert: Alert) -> None:
        with self._changed:
            if len(self._queue) >= self._queue_size:
                lost = self._queue.popleft()
                logger.warning(
                    "alert webhook %s is behind: dropped the queued %s alert %s/%s",
                    self._host, lost.state, lost.plate, lost.rule,
                )
            self._queue.append(alert)
            self._changed.notify()

    def on_stop(self) -> None:
        with self._changed:
            self._changed.notify()

    def run(self) -> None:
        while (alert := self._next()) is not None:
            if not self._deliver(alert) and not self.should_keep_running():
                self._drop_rest()
                return

    def _next(self) -> Alert | None:
        """The oldest queued alert; None once stopped with nothing left."""
        with self._changed:
            while not self._queue and self.should_keep_running():
                self._changed.wait()
            return self._queue.popleft() if self._queue else None

    def _drop_rest(self) -> None:
        """Stopping with the webhook failing: do not hold up the shutdown for the rest."""
        with self._changed:
            left = len(self._queue)
            self._queue.clear()
        if left:
            logger.error(
                "alert webhook %s: %d queued alerts not delivered at stop", self._host, left
            )

    def _deliver(self, alert: Alert) -> bool:
        body = json.dumps({"text": _text(alert)}).encode()
        attempts = self._config.webhook_retries + 1
        for attempt in range(1, attempts + 1):
            request = urllib.request.Request(
                self._config.webhook_url, data=body, method="POST",
                headers={"Content-Type": "application/json"},
            )
            error, retry = self._post(request)
            if error is None:
                return True
            if not retry or attempt == attempts or not self.should_keep_running():
                logger.error(
                    "alert webhook %s: gave up on the %s alert %s/%s after %d attempt(s): %s",
                    self._host, alert.state, alert.plate, alert.rule, attempt, error,
                )
                return False
            delay = min(BACKOFF_S * 2 ** (attempt - 1), MAX_BACKOFF_S)
            logger.warning(
                "alert webhook %s: %s; retry %d of %d in %.1f s",
                self._host, error, attempt, attempts - 1, delay,
            )
            self.wait(delay)
        return False

    def _post(self, request: urllib.request.Request) -> tuple[str | None, bool]:
        """(None, _) when delivered, else (what went wrong, whether to retry)."""
        try:
            with urllib.request.urlopen(request, timeout=self._config.webhook_timeout_s) as reply:
                reply.read()
            return None, False
        except urllib.error.HTTPError as exc:
            exc.close()
            return f"HTTP {exc.code}", exc.code >= 500 or exc.code in RETRY_STATUS
        except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts, resets
            return f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}", True


def _text(alert: Alert) -> str:
    state = "FIRING" if alert.state == "firing" else "resolved"
    return f"[artifactd@{socket.gethostname()}] {state} {alert.rule}: {alert.message}"
