"""The service with ZeroMQ in and verdicts out: real sockets on loopback, one verdict per frame."""

from __future__ import annotations

import json
import time

import pytest
import zmq

from daemon.results.store import ResultsStore
from daemon.tools.client import ArtifactClient
from engines.data.synth import SynthOptions, frame_for
from tests.daemon.service_helpers import (
    config_file,
    free_port,
    metrics_port,
    scrape,
    start_service,
    stop,
)

pytestmark = pytest.mark.timeout(180)


def streaming_service(tmp_path):
    """Ports, store, log and config of a service with ZeroMQ in and verdicts out, no folder."""
    frames_port, verdicts_port = free_port(), free_port()
    store, log = tmp_path / "results.zarr", tmp_path / "service.log"
    config = config_file(
        tmp_path, input_dir=tmp_path, store=store, input={"folder": ""},
        zmq={"enabled": True, "endpoint": f"tcp://127.0.0.1:{frames_port}"},
        verdicts={"enabled": True, "endpoint": f"tcp://127.0.0.1:{verdicts_port}"},
    )
    return frames_port, verdicts_port, store, log, config


def test_frames_in_verdicts_out_one_for_one(tmp_path):
    frames_port, verdicts_port, store, log, config = streaming_service(tmp_path)
    process = start_service(config, log=log)
    try:
        port = metrics_port(log)
        client = ArtifactClient(f"tcp://127.0.0.1:{frames_port}", f"tcp://127.0.0.1:{verdicts_port}")
        with client:
            time.sleep(0.5)  # PUB/SUB: let the subscription reach the publisher
            # A malformed message first: counted and dropped, the service keeps answering.
            raw = zmq.Context.instance().socket(zmq.PUSH)
            raw.connect(f"tcp://127.0.0.1:{frames_port}")
            header = {"frame_id": "x", "shape": [4, 4], "dtype": "uint16"}
            raw.send_multipart([json.dumps(header).encode(), b"short"])
            raw.close(linger=1000)
            sent = {}
            for i in range(8):
                frame = frame_for(21, i, SynthOptions(height=160, width=160))
                sent[f"f{i}"] = frame.label
                client.send(f"f{i}", frame.image, plate="P1", well="B02", field=i,
                            pixel_size_um=0.6)
            verdicts = []
            deadline = time.monotonic() + 90
            while len(verdicts) < len(sent) and time.monotonic() < deadline:
                message = client.next_verdict(timeout_s=5)
                if message is not None and message["topic"] == "verdict":
                    verdicts.append(message)
        assert sorted(v["frame_id"] for v in verdicts) == sorted(sent)
        for v in verdicts:
            assert set(v) >= {"score", "flagged", "area_fraction", "n_artifacts", "latency_s"}
            assert v["latency_s"] > 0
        text = scrape(port)
        assert 'artifactd_frames_failed_total{reason="zmq_buffer"} 1.0' in text
    finally:
        assert stop(process) == 0, log.read_text()
    reader = ResultsStore(store, read_only=True)
    try:
        assert sorted(map(str, reader.frame_table()["source"])) == sorted(f"zmq:{k}" for k in sent)
        assert set(map(str, reader.frame_table()["well"])) == {"B02"}
    finally:
        reader.close()


def test_a_resent_frame_is_answered_from_the_store_and_a_reused_id_is_a_new_frame(tmp_path):
    frames_port, verdicts_port, store, log, config = streaming_service(tmp_path)
    first = frame_for(23, 0, SynthOptions(height=160, width=160)).image
    rerun = frame_for(23, 1, SynthOptions(height=160, width=160)).image  # same id, new pixels
    process = start_service(config, log=log)
    try:
        port = metrics_port(log)
        client = ArtifactClient(f"tcp://127.0.0.1:{frames_port}", f"tcp://127.0.0.1:{verdicts_port}")
        with client:
            time.sleep(0.5)  # PUB/SUB: let the subscription reach the publisher
            answers = []
            for pixels in (first, first, rerun):  # the README's ids: P1-{position}-{time}
                client.send("P1-0-0", pixels, plate="P1", well="A01", field=0)
                message = None
                deadline = time.monotonic() + 60
                while message is None and time.monotonic() < deadline:
                    got = client.next_verdict(timeout_s=5)
                    message = got if got is not None and got["topic"] == "verdict" else None
                assert message is not None, log.read_text()
                answers.append(message)
        original, resent, new = answers
        assert [a["duplicate"] for a in answers] == [False, True, False]
        for name in ("score", "flagged", "area_fraction", "n_artifacts", "processed_at"):
            assert resent[name] == original[name], name  # the stored verdict, not a new one
        assert new["processed_at"] != original["processed_at"]
        text = scrape(port)
        assert "artifactd_frames_duplicate_total 1.0" in text
        processed = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                        if line.startswith("artifactd_frames_total{"))
        assert processed == 2  # the re-send is not counted as a processed frame
        assert "already stored (sent again)" in log.read_text()
    finally:
        assert stop(process) == 0, log.read_text()
    reader = ResultsStore(store, read_only=True)
    try:
        table = reader.frame_table()
        assert list(map(str, table["source"])) == ["zmq:P1-0-0", "zmq:P1-0-0"]
        assert len(set(map(str, table["identity"]))) == 2
    finally:
        reader.close()
