"""The systemd notify protocol (sd_notify(3)) without libsystemd.

Under `Type=notify` systemd passes $NOTIFY_SOCKET, an AF_UNIX datagram socket (a path, or an
abstract name written with a leading "@"); the service sends "READY=1" once it serves,
"WATCHDOG=1" at least every WatchdogSec (systemd passes it as $WATCHDOG_USEC), "STOPPING=1"
when it begins to drain and "STATUS=..." for `systemctl status`. Outside systemd every call
does nothing. A failed send is logged, never raised: notification must not stop the service.
"""

from __future__ import annotations

import logging
import os
import socket

logger = logging.getLogger(__name__)


class SystemdNotifier:
    def __init__(self, socket_path: str | None = None) -> None:
        """socket_path: None reads $NOTIFY_SOCKET; "" disables notification."""
        path = os.environ.get("NOTIFY_SOCKET", "") if socket_path is None else socket_path
        self._address = "\0" + path[1:] if path.startswith("@") else path
        self._socket: socket.socket | None = None
        self._failed = False
        if self._address:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)

    @property
    def enabled(self) -> bool:
        return self._socket is not None

    def ready(self) -> None:
        self._send("READY=1")

    def stopping(self) -> None:
        self._send("STOPPING=1")

    def watchdog(self) -> None:
        self._send("WATCHDOG=1")

    def status(self, text: str) -> None:
        # One line: the protocol is newline-separated assignments.
        self._send("STATUS=" + " ".join(text.splitlines()))

    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings (half of WatchdogSec), or None without a watchdog."""
        usec = os.environ.get("WATCHDOG_USEC", "")
        pid = os.environ.get("WATCHDOG_PID", "")
        if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
            return None
        return int(usec) / 2e6

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _send(self, message: str) -> None:
        if self._socket is None:
            return
        try:
            self._socket.sendto(message.encode(), self._address)
        except OSError as exc:
            if not self._failed:  # a flapping socket would otherwise log every watchdog ping
                logger.warning("systemd notify socket %r: %s (%s)", self._address, exc, message)
            self._failed = True
        else:
            self._failed = False
