"""Every time the service writes has one format: RFC 3339, UTC, milliseconds."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest
import zarr
import zmq

from daemon.results.store import ResultsStore
from engines.timestamps import timestamp, timestamp_ns
from tests.daemon.service_helpers import (
    config_file,
    free_port,
    metrics_port,
    start_service,
    stop,
    wait_for,
    write_frames,
)

pytestmark = pytest.mark.timeout(180)

RFC3339_UTC_MS = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")


def assert_one_format(where: str, values) -> None:
    values = [str(v) for v in values]
    assert values, f"{where}: nothing written"
    odd = [v for v in values if not RFC3339_UTC_MS.fullmatch(v)]
    assert not odd, f"{where}: {odd[:3]} are not RFC 3339 UTC with milliseconds"


def test_a_moment_is_written_in_utc_with_milliseconds():
    moment = datetime(2026, 12, 2, 12, 16, 34, 123456, tzinfo=UTC)
    local = moment.astimezone(timezone(timedelta(hours=5, minutes=30)))
    for given in (moment, local):
        text = timestamp(given)
        assert RFC3339_UTC_MS.fullmatch(text)
        parsed = datetime.fromisoformat(text)
        assert parsed.utcoffset() == timedelta(0)
        assert timedelta(0) <= moment - parsed < timedelta(milliseconds=1)
    before = datetime.now(UTC)
    now = datetime.fromisoformat(timestamp())
    assert before - timedelta(milliseconds=1) <= now <= datetime.now(UTC)


def test_a_file_time_in_nanoseconds_is_truncated_not_rounded():
    ms = time.time_ns() // 1_000_000
    text = timestamp_ns(ms * 1_000_000 + 999_999)  # a nanosecond short of the next millisecond
    assert RFC3339_UTC_MS.fullmatch(text)
    assert datetime.fromisoformat(text) == datetime.fromtimestamp(ms / 1000, tz=UTC)


def test_the_service_writes_every_time_in_one_format(tmp_path):
    """A real service: frame and failure tables, store settings, journal and alert events."""
    folder, log = tmp_path / "in", tmp_path / "service.log"
    store = tmp_path / "out" / "results.zarr"
    folder.mkdir()
    verdicts_port = free_port()
    config = config_file(
        tmp_path, input_dir=folder, store=store,
        verdicts={"enabled": True, "endpoint": f"tcp://127.0.0.1:{verdicts_port}"},
        # A pixel threshold that finds an artifact in every field, and alerts on any flagged
        # field: alert events for certain.
        model={"segment": "all"},
        postprocess={"method": "fixed", "threshold": 0.01, "min_area_px": 1},
        alerts={"plate_window": 1, "plate_flagged_fraction": 1.0, "well_flagged_fields": 1},
    )
    subscriber = zmq.Context.instance().socket(zmq.SUB)
    subscriber.setsockopt(zmq.SUBSCRIBE, b"alert")
    subscriber.connect(f"tcp://127.0.0.1:{verdicts_port}")
    process = start_service(config, log=log)
    alerts = []
    try:
        metrics_port(log)
        time.sleep(0.5)  # PUB/SUB: let the subscription reach the publisher
        frames = write_frames(folder, 8)
        (folder / "Plate1" / "broken.tif").write_bytes(b"II*\x00 not a whole TIFF")

        def all_written() -> bool:
            while subscriber.poll(0):
                alerts.append(subscriber.recv_multipart()[1])
            return _rows(store) == (len(frames), 1) and len(alerts) >= 2

        wait_for(all_written, 120, "8 frames and 1 failure in the store, and alerts")
    finally:
        assert stop(process) == 0, log.read_text()
        subscriber.close(linger=0)
    reader = ResultsStore(store, read_only=True)
    try:
        frames_table, failures = reader.frame_table(), reader.failure_table()
    finally:
        reader.close()
    settings = zarr.open_group(store, mode="r").attrs["artifactd"]
    assert_one_format("frames.processed_at", frames_table["processed_at"])
    assert_one_format("frames.acquired_at (file times)", frames_table["acquired_at"])
    assert_one_format("failures.failed_at", failures["failed_at"])
    assert_one_format("store settings", [settings["created_at"]])
    with sqlite3.connect(str(store) + ".journal.sqlite") as journal:
        committed = [row[0] for row in journal.execute("SELECT committed_at FROM done")]
    assert len(committed) == len(frames) + 1
    assert_one_format("journal.committed_at", committed)
    assert_one_format("alert events", [json.loads(body)["at"] for body in alerts])


def _rows(store) -> tuple[int, int]:
    try:
        reader = ResultsStore(store, read_only=True)
    except Exception:
        return (0, 0)  # not created yet
    try:
        return len(reader.frame_table()["source"]), len(reader.failure_table()["source"])
    finally:
        reader.close()
