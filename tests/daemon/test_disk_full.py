"""A real full disk under the results store: intake pauses, nothing is lost, it resumes."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections import Counter

import pytest

from tests.daemon.service_helpers import (
    config_file,
    metrics_port,
    scrape,
    start_service,
    stop,
    stored_sources,
    wait_for,
    write_frames,
)

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def tiny_disk(tmp_path):
    """A 32 MiB tmpfs: needs root (or CAP_SYS_ADMIN) to mount."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32M", "tmpfs", str(mount_point)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill up (needs root): {result.stderr.strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(folder):
    """Fill the file system up to the last block; returns the filler files."""
    fillers = []
    for block in (65536, 4096, 512):
        path = folder / f"filler-{block}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT)
        fillers.append(path)
        try:
            while True:
                os.write(fd, b"\0" * block)
        except OSError:
            pass
        finally:
            os.close(fd)
    return fillers


def test_full_disk_pauses_then_resumes_without_loss(tmp_path, tiny_disk):
    folder = tmp_path / "in"
    store = tiny_disk / "results.zarr"
    log = tmp_path / "service.log"
    first = write_frames(folder, 3, seed=31)
    config = config_file(tmp_path, input_dir=folder, store=store,
                         output={"journal": str(tmp_path / "journal.sqlite")})
    process = start_service(config, log=log)
    try:
        port = metrics_port(log)
        wait_for(lambda: len(stored_sources(store)) == 3, 90, "the first frames")
        fillers = fill(tiny_disk)
        more = write_frames(folder, 5, seed=31, start=3)
        wait_for(lambda: "artifactd_output_writable 0.0" in scrape(port), 60,
                 "the service to report the store unwritable")
        assert "cannot write results" in log.read_text()
        assert len(stored_sources(store)) == 3
        assert process.poll() is None, "the service must keep running on a full disk"
        for filler in fillers:
            filler.unlink()
        wait_for(lambda: len(stored_sources(store)) == 8, 120, "all frames after space returned")
        assert "artifactd_output_writable 1.0" in scrape(port)
    finally:
        code = stop(process)
    assert code == 0, log.read_text()
    counts = Counter(stored_sources(store))
    assert set(counts) == {str(p.relative_to(folder)) for p in first + more}
    assert max(counts.values()) == 1


class WatchdogListener:
    """A real NOTIFY_SOCKET, as systemd gives a unit with WatchdogSec=: collects the pings."""

    def __init__(self, path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.pings: list[float] = []

    def collect(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                message = self.sock.recv(4096)
            except TimeoutError:
                continue
            if b"WATCHDOG=1" in message.split(b"\n"):
                self.pings.append(time.monotonic())

    def discard_waiting(self) -> None:
        """Forget the pings sent so far (they queue in the socket until read)."""
        self.sock.setblocking(False)
        try:
            while True:
                self.sock.recv(4096)
        except BlockingIOError:
            pass
        finally:
            self.sock.settimeout(0.2)

    def pinged_within(self, seconds: float) -> bool:
        before = len(self.pings)
        self.collect(seconds)
        return len(self.pings) > before

    def close(self) -> None:
        self.sock.close()


def test_watchdog_pings_stop_while_no_frame_becomes_durable_and_resume(tmp_path, tiny_disk):
    folder = tmp_path / "in"
    store = tiny_disk / "results.zarr"
    log = tmp_path / "service.log"
    write_frames(folder, 2, seed=41)
    config = config_file(tmp_path, input_dir=folder, store=store,
                         output={"journal": str(tmp_path / "journal.sqlite")},
                         service={"stall_timeout_s": 3.0, "drain_timeout_s": 30.0})
    listener = WatchdogListener(tmp_path / "notify.sock")
    process = start_service(config, log=log, env={
        "NOTIFY_SOCKET": listener.path, "WATCHDOG_USEC": "1000000"})
    try:
        wait_for(lambda: len(stored_sources(store)) == 2, 90, "the first frames")
        assert listener.pinged_within(3), "a working service pings"
        fillers = fill(tiny_disk)
        write_frames(folder, 3, seed=41, start=2)
        wait_for(lambda: "no frame has become durable" in log.read_text(), 60,
                 "the service to notice it is stalled")
        listener.discard_waiting()
        assert not listener.pinged_within(3), "pings must stop so systemd restarts the service"
        assert process.poll() is None
        for filler in fillers:
            filler.unlink()
        wait_for(lambda: len(stored_sources(store)) == 5, 120, "all frames after space returned")
        assert listener.pinged_within(3), "pings resume once frames become durable"
    finally:
        code = stop(process)
        listener.close()
    assert code == 0, log.read_text()
