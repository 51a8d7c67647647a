"""The systemd notify protocol against a real AF_UNIX datagram socket."""

from __future__ import annotations

import logging
import os
import socket
import uuid

import pytest

from daemon.ops.notify import SystemdNotifier


@pytest.fixture
def listener(tmp_path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify.sock"
    sock.bind(str(path))
    sock.settimeout(2)
    yield str(path), sock
    sock.close()


def received(sock: socket.socket, n: int) -> list[bytes]:
    return [sock.recv(4096) for _ in range(n)]


def test_ready_status_watchdog_stopping_reach_the_socket(listener):
    path, sock = listener
    notifier = SystemdNotifier(path)
    assert notifier.enabled
    notifier.ready()
    notifier.status("processing plate P1\n12 frames queued")
    notifier.watchdog()
    notifier.stopping()
    notifier.close()
    assert received(sock, 4) == [
        b"READY=1", b"STATUS=processing plate P1 12 frames queued", b"WATCHDOG=1", b"STOPPING=1",
    ]


def test_the_socket_comes_from_the_environment(listener, monkeypatch):
    path, sock = listener
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    notifier = SystemdNotifier()
    notifier.ready()
    notifier.close()
    assert received(sock, 1) == [b"READY=1"]


def test_abstract_namespace_sockets():
    name = f"artifactd-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        notifier = SystemdNotifier("@" + name)
        notifier.watchdog()
        notifier.close()
        assert received(sock, 1) == [b"WATCHDOG=1"]


def test_without_notify_socket_every_call_does_nothing(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = SystemdNotifier()
    assert not notifier.enabled
    notifier.ready()
    notifier.watchdog()
    notifier.status("x")
    notifier.stopping()
    assert not SystemdNotifier("").enabled


def test_a_vanished_socket_is_logged_once_and_never_raises(tmp_path, caplog):
    notifier = SystemdNotifier(str(tmp_path / "gone.sock"))
    with caplog.at_level(logging.WARNING, logger="daemon.ops.notify"):
        for _ in range(3):
            notifier.watchdog()
    notifier.close()
    assert len(caplog.records) == 1
    assert "gone.sock" in caplog.records[0].getMessage()


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        ("30000000", None, 15.0),
        ("30000000", "self", 15.0),
        ("30000000", "1", None),  # the watchdog is meant for another process
        ("0", None, None),
        (None, None, None),
        ("soon", None, None),
    ],
)
def test_watchdog_interval_is_half_of_watchdog_usec(monkeypatch, usec, pid, expected):
    for name, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", pid)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, str(os.getpid()) if value == "self" else value)
    assert SystemdNotifier("").watchdog_interval() == expected
