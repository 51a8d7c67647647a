"""Client and verdict publisher over real sockets: frames in, verdicts out, one for one."""

from __future__ import annotations

import time

import numpy as np
import pytest
import zmq

from daemon.config import VerdictsConfig, ZmqConfig
from daemon.frames import Frame, FrameKey, FrameMeta, FrameResult
from daemon.ops.metrics import Metrics
from daemon.sinks.alerts import Alert
from daemon.sinks.verdicts import VerdictPublisher
from daemon.sources.zmq import ZmqSource
from daemon.tools.client import ArtifactClient
from tests.daemon.test_zmq_source import LOOPBACK, unused_port, wait_until


def judge(frame: Frame) -> FrameResult:
    """A stand-in for the engine: frames brighter than 100 on average are flagged."""
    flagged = bool(frame.pixels.mean() > 100)
    labels = (frame.pixels > 100).astype(np.uint16)
    return FrameResult(
        frame=frame, score=0.9 if flagged else 0.1, flagged=flagged, labels=labels,
        area_fraction=float(labels.mean()), n_artifacts=int(flagged),
        processed_at="2026-01-01T12:00:01+00:00",
    )


def subscribe(publisher: VerdictPublisher, client: ArtifactClient) -> None:
    """PUB/SUB slow joiner: publish probes until one arrives, then drain the rest."""
    assert wait_until(
        lambda: publisher.publish_alert({"probe": True}) or client.next_verdict(0.02) is not None
    )
    while client.next_verdict(0.1) is not None:
        pass


@pytest.fixture
def publisher():
    publisher = VerdictPublisher(VerdictsConfig(enabled=True, endpoint=LOOPBACK))
    yield publisher
    publisher.close()


def test_frames_in_verdicts_out_one_for_one(publisher):
    def pipeline(frame: Frame) -> None:
        publisher.publish([judge(frame)], [time.monotonic() - frame.ready_at])

    sent = {f"P1-C07-{i}": np.full((16, 16), 20 * i, dtype=np.uint8) for i in range(12)}
    source = ZmqSource(ZmqConfig(enabled=True, endpoint=LOOPBACK), pipeline, Metrics())
    with source, ArtifactClient(source.endpoint, publisher.endpoint) as client:
        subscribe(publisher, client)
        for i, (frame_id, pixels) in enumerate(sent.items()):
            client.send(frame_id, pixels, plate="P1", well="C07", field=i)
        verdicts = []
        for verdict in client.verdicts(timeout_s=5):
            verdicts.append(verdict)
            if len(verdicts) == len(sent):
                break
    assert [v["frame_id"] for v in verdicts] == list(sent)
    for i, verdict in enumerate(verdicts):
        assert verdict["topic"] == "verdict"
        assert verdict["source"] == f"zmq:P1-C07-{i}"
        assert (verdict["plate"], verdict["well"], verdict["field"]) == ("P1", "C07", i)
        assert verdict["flagged"] is (20 * i > 100)
        assert verdict["score"] == (0.9 if verdict["flagged"] else 0.1)
        assert verdict["area_fraction"] == (1.0 if verdict["flagged"] else 0.0)
        assert verdict["n_artifacts"] == int(verdict["flagged"])
        assert 0 <= verdict["latency_s"] < 5
        assert verdict["processed_at"] == "2026-01-01T12:00:01+00:00"


def test_file_verdicts_name_the_source_and_nan_becomes_null(publisher):
    key = FrameKey("plate1/C07_f2.tif", 1234, 5678)
    frame = Frame(FrameMeta(source=key.source, plate="plate1"), np.zeros((2, 2), np.uint16), 0.0,
                  key=key, frame_id=key.source)
    result = FrameResult(frame, float("nan"), False, np.zeros((2, 2), np.uint16))
    with ArtifactClient(None, publisher.endpoint) as client:
        subscribe(publisher, client)
        publisher.publish([result], [0.25])
        verdict = client.next_verdict(5)
    assert verdict is not None
    assert verdict["frame_id"] == verdict["source"] == "plate1/C07_f2.tif"
    assert verdict["score"] is None  # NaN is not JSON
    assert verdict["latency_s"] == 0.25
    with pytest.raises(ValueError):
        publisher.publish([result], [])


def test_alerts_are_published_on_their_own_topic(publisher):
    alert = Alert("P1", "well_fields", "firing", "plate P1 well C07: 3 flagged fields (>= 3)",
                  well="C07", value=3, threshold=3, at="2026-01-01T12:00:00+00:00")
    with ArtifactClient(None, publisher.endpoint) as client:
        subscribe(publisher, client)
        publisher.publish_alert(alert)
        message = client.next_verdict(5)
    assert message == {**alert.as_dict(), "topic": "alert"}


def test_client_refuses_pixels_artifactd_cannot_take():
    with (
        ArtifactClient("tcp://127.0.0.1:9", None) as client,
        pytest.raises(ValueError, match="uint8"),
    ):
        client.send("f", np.zeros((4, 4), np.float32))


def test_client_send_times_out_when_nothing_listens():
    client = ArtifactClient(f"tcp://127.0.0.1:{unused_port()}", None, send_timeout_s=0.1)
    try:
        with pytest.raises(zmq.Again):
            client.send("f", np.zeros((4, 4), np.uint8))
    finally:
        client.close()
