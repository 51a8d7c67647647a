"""Dirt on the optics through the real service: a simulated instrument writes a plate with (and
without) a smudge at the same place of every field into the watched folder; the service, a real
subprocess with the shipped model, stores the artifacts marked stationary and raises the optics
alert over ZeroMQ and /metrics, not a plate contamination alert."""

from __future__ import annotations

import csv
import threading

import pytest
from prometheus_client.parser import text_string_to_metric_families

from daemon.cli import main as cli_main
from daemon.results.store import ResultsStore
from daemon.sinks.alerts import OPTICS
from daemon.tools.client import ArtifactClient
from daemon.tools.simulate import DEFAULT_SMUDGE, SimulateOptions, simulate_plate
from tests.daemon.service_helpers import (
    config_file,
    free_port,
    metrics_port,
    scrape,
    start_service,
    stop,
    stored_sources,
    wait_for,
)

pytestmark = pytest.mark.timeout(300)

FIELDS = 40  # ten wells of four fields


def run_plate(tmp_path, smudge):
    """The service watching a folder while the instrument writes a clean plate into it; returns
    the alerts it published, its /metrics at the end and the store's path."""
    folder, store, log = tmp_path / "in", tmp_path / "results.zarr", tmp_path / "service.log"
    folder.mkdir()
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    config = config_file(tmp_path, input_dir=folder, store=store,
                         verdicts={"enabled": True, "endpoint": endpoint})
    process = start_service(config, log=log)
    alerts: list[dict] = []
    try:
        port = metrics_port(log)
        with ArtifactClient(None, endpoint) as client:
            done = threading.Event()

            def listen() -> None:
                while not done.is_set():
                    message = client.next_verdict(0.2)
                    if message is not None and message["topic"] == "alert":
                        alerts.append(message)

            listener = threading.Thread(target=listen)
            listener.start()
            try:
                simulate_plate(folder, SimulateOptions(
                    rate=0, fields=4, size=256, seed=31, pixel_size_um=0.5,
                    artifact_probability=0.0, limit=FIELDS, plate_name="Plate7", smudge=smudge))
                wait_for(lambda: len(stored_sources(store)) >= FIELDS, 120, "every field stored")
                wait_for(lambda: any(a["rule"] == OPTICS for a in alerts) or smudge is None, 10,
                         "the optics alert")
                metrics = scrape(port)
                assert stop(process) == 0, log.read_text()
                wait_for(lambda: process.poll() is not None, 10, "the service to exit")
            finally:
                done.set()
                listener.join()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return alerts, metrics, store


def gauges(metrics: str) -> dict[tuple[str, str], float]:
    found = {}
    for family in text_string_to_metric_families(metrics):
        if family.name == "artifactd_contamination":
            for sample in family.samples:
                found[(sample.labels["plate"], sample.labels["rule"])] = sample.value
    return found


def counter(metrics: str, name: str) -> float:
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    return 0.0


def test_a_smudge_in_every_field_fires_optics_not_plate(tmp_path):
    alerts, metrics, store = run_plate(tmp_path, DEFAULT_SMUDGE)

    assert [(a["plate"], a["rule"], a["state"]) for a in alerts] == [("Plate7", OPTICS, "firing")]
    assert "clean the light path" in alerts[0]["message"]
    assert gauges(metrics) == {("Plate7", OPTICS): 1.0}

    reader = ResultsStore(store, read_only=True)
    artifacts, frames = reader.artifact_table(), reader.frame_table()
    reader.close()
    stationary = artifacts["stationary"]
    # The smudge's first sightings were stored before it could be recognised; all later ones
    # are marked (the model finds it in nearly every field).
    assert stationary.sum() >= FIELDS - 10
    assert counter(metrics, "artifactd_artifacts_stationary_total") == stationary.sum()
    y, x, radius = DEFAULT_SMUDGE
    centre_y, centre_x = artifacts["centroid_y"][stationary], artifacts["centroid_x"][stationary]
    assert abs(centre_y - y * 255).max() < radius * 256 / 2
    assert abs(centre_x - x * 255).max() < radius * 256 / 2
    # The frames stay flagged (the smudge is in their pixels); the plate's flag rate does not
    # count what is on the optics.
    assert frames["flagged"].sum() >= FIELDS - 5
    flagged_rate = [s for f in text_string_to_metric_families(metrics)
                    if f.name == "artifactd_plate_fields" for s in f.samples
                    if s.name == "artifactd_plate_fields_total"]
    by_outcome = {s.labels["outcome"]: s.value for s in flagged_rate}
    assert by_outcome.get("flagged", 0) <= 4 < by_outcome["clean"]

    # Export writes the column: one of the store's artifact columns like any other.
    out = tmp_path / "artifacts.csv"
    assert cli_main(["export", str(store), "--artifacts", str(out)]) == 0
    with out.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(stationary)
    assert sum(row["stationary"] == "true" for row in rows) == stationary.sum()


def test_a_plate_without_a_smudge_does_not_fire_optics(tmp_path):
    alerts, metrics, store = run_plate(tmp_path, None)
    assert OPTICS not in {a["rule"] for a in alerts}
    assert (("Plate7", OPTICS)) not in gauges(metrics)
    reader = ResultsStore(store, read_only=True)
    artifacts = reader.artifact_table()
    reader.close()
    assert not artifacts["stationary"].any()
    assert counter(metrics, "artifactd_artifacts_stationary_total") == 0

