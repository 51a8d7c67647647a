"""The alert webhook against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from daemon.config import AlertsConfig
from daemon.sinks.alerts import Alert
from daemon.sinks.webhook import WebhookNotifier
from tests.daemon.test_zmq_source import unused_port, wait_until


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    """A proxy from the environment would take the requests meant for 127.0.0.1."""
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
                 "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


class ChatServer:
    """Answers with the given statuses in turn, then 200; records every request."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = list(statuses)
        self.requests: list[tuple[str, dict[str, str], dict[str, str]]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append((self.path, dict(self.headers), body))
                status = server.statuses.pop(0) if server.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/services/T0/B0/secret-token"
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="chat-server")

    def __enter__(self) -> ChatServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()

    def texts(self) -> list[str]:
        return [body["text"] for _, _, body in self.requests]


def alert(plate: str = "P1", state: str = "firing") -> Alert:
    return Alert(plate, "plate_fraction", state, f"plate {plate}: 20 of the last 50 fields flagged",
                 value=0.4, threshold=0.3, at="2026-01-01T12:00:00+00:00")


def test_alert_is_posted_after_two_server_errors(caplog):
    with ChatServer([500, 500]) as chat, WebhookNotifier(
        AlertsConfig(webhook_url=chat.url, webhook_retries=3, webhook_timeout_s=2)
    ) as notifier:
        started = time.monotonic()
        notifier.notify(alert())
        assert wait_until(lambda: len(chat.requests) == 3, timeout=10)
        elapsed = time.monotonic() - started
    assert 1.4 < elapsed < 5  # back-off 0.5 s, then 1 s
    path, headers, body = chat.requests[-1]
    assert path == "/services/T0/B0/secret-token"
    assert headers["Content-Type"] == "application/json"
    assert set(body) == {"text"}
    assert "FIRING plate_fraction: plate P1: 20 of the last 50 fields flagged" in body["text"]
    assert chat.texts() == [body["text"]] * 3
    retries = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    assert len(retries) == 2 and "HTTP 500" in retries[0]
    assert "secret-token" not in caplog.text  # the URL's path is the secret


def test_client_errors_are_not_retried(caplog):
    with ChatServer([404]) as chat, WebhookNotifier(
        AlertsConfig(webhook_url=chat.url, webhook_retries=3)
    ) as notifier:
        notifier.notify(alert("P1"))
        notifier.notify(alert("P2", "resolved"))
        assert wait_until(lambda: len(chat.requests) == 2)
        time.sleep(0.2)
    assert len(chat.requests) == 2
    assert "resolved plate_fraction: plate P2" in chat.texts()[1]
    assert any("gave up" in r.getMessage() and "HTTP 404" in r.getMessage()
               for r in caplog.records)


def test_a_full_queue_drops_the_oldest_alert(caplog):
    with ChatServer([]) as chat:
        notifier = WebhookNotifier(AlertsConfig(webhook_url=chat.url), queue_size=2)
        for plate in ("P1", "P2", "P3"):
            notifier.notify(alert(plate))  # not started yet: the queue fills
        assert any("dropped the queued firing alert P1/plate_fraction" in r.getMessage()
                   for r in caplog.records)
        with notifier:
            assert wait_until(lambda: len(chat.requests) == 2)
    assert ["plate P2" in chat.texts()[0], "plate P3" in chat.texts()[1]] == [True, True]


def test_an_unreachable_webhook_gives_up_after_the_retries(caplog):
    config = AlertsConfig(webhook_url=f"http://127.0.0.1:{unused_port()}/hook/secret-token",
                          webhook_retries=1, webhook_timeout_s=1)
    with caplog.at_level(logging.WARNING), WebhookNotifier(config) as notifier:
        notifier.notify(alert())
        assert wait_until(lambda: "gave up" in caplog.text, timeout=5)
    assert "after 2 attempt(s)" in caplog.text
    assert "secret-token" not in caplog.text


def test_stop_does_not_wait_out_the_back_off(caplog):
    with ChatServer([500] * 10) as chat:
        notifier = WebhookNotifier(AlertsConfig(webhook_url=chat.url, webhook_retries=8))
        notifier.start()
        notifier.notify(alert("P1"))
        notifier.notify(alert("P2"))
        assert wait_until(lambda: "retry 1 of 8" in caplog.text)  # waiting out the back-off
        started = time.monotonic()
        notifier.stop()
        notifier.join(5)
        assert not notifier.is_alive()
        assert time.monotonic() - started < 2
    # One more try for the alert in hand, none for the rest: shutdown is not held up.
    assert len(chat.requests) == 2
    assert all("plate P1" in text for text in chat.texts())
    assert "1 queued alerts not delivered at stop" in caplog.text


def test_a_notifier_needs_a_url():
    with pytest.raises(ValueError, match=r"alerts\.webhook_url"):
        WebhookNotifier(AlertsConfig())
