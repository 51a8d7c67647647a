"""A real full disk under the results store: intake pauses, nothing is lost, it resumes."""

from __future__ import annotations

import os
import subprocess
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
