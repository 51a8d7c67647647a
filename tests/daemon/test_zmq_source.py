"""The ZeroMQ source with real sockets on 127.0.0.1: frames in, malformed messages, overload."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.config import ConfigError, ZmqConfig
from daemon.endpoints import binds_all_interfaces
from daemon.frames import Frame, pixel_digest
from daemon.ops.metrics import Metrics
from daemon.sources.messages import MessageError, parse_message
from daemon.sources.zmq import ZmqSource
from daemon.tools.client import ArtifactClient

LOOPBACK = "tcp://127.0.0.1:0"


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def unused_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def failures(metrics: Metrics) -> float:
    """Messages counted as failed, whatever the reason."""
    return sum(
        sample.value
        for family in metrics.registry.collect()
        if family.name == "artifactd_frames_failed"
        for sample in family.samples
        if sample.name.endswith("_total")
    )


def failed(metrics: Metrics, reason: str) -> float:
    value = metrics.registry.get_sample_value("artifactd_frames_failed_total", {"reason": reason})
    return value or 0.0


def header(
    frame_id: str = "f", shape: object = (4, 6), dtype: str = "uint8", **extra: object
) -> bytes:
    fields = {"frame_id": frame_id, "shape": list(shape), "dtype": dtype, **extra}
    return json.dumps(fields).encode()


@pytest.fixture
def push():
    """A raw PUSH socket factory, for messages the client would never send."""
    context = zmq.Context()
    sockets: list[zmq.Socket] = []

    def connect(endpoint: str, **options: int) -> zmq.Socket:
        sock = context.socket(zmq.PUSH)
        sock.setsockopt(zmq.LINGER, 0)
        for name, value in options.items():
            sock.setsockopt(getattr(zmq, name), value)
        sock.connect(endpoint)
        sockets.append(sock)
        return sock

    yield connect
    for sock in sockets:
        sock.close()
    context.term()


def test_frames_in_one_for_one_with_pixels_and_meta():
    metrics = Metrics()
    received: list[Frame] = []
    rng = np.random.default_rng(0)
    sent = [
        rng.integers(0, 255, size=(32, 48), dtype=np.uint8),
        rng.integers(0, 65535, size=(64, 40), dtype=np.uint16),
        rng.integers(0, 65535, size=(3, 16, 20), dtype=np.uint16),
        # big-endian and non-contiguous input: the client sends little-endian C order
        rng.integers(0, 65535, size=(24, 24), dtype=np.uint16).astype(">u2"),
        rng.integers(0, 255, size=(40, 30), dtype=np.uint8).T,
    ] * 4
    with (
        ZmqSource(ZmqConfig(enabled=True, endpoint=LOOPBACK), received.append, metrics) as source,
        ArtifactClient(source.endpoint, None) as client,
    ):
        for i, pixels in enumerate(sent):
            client.send(
                f"P1-B02-{i}", pixels, plate="P1", well="B02", field=i, channel=1,
                pixel_size_um=0.65, acquired_at="2026-01-01T12:00:00Z",
            )
        assert wait_until(lambda: len(received) == len(sent))
    for i, (frame, pixels) in enumerate(zip(received, sent, strict=True)):
        assert frame.frame_id == f"P1-B02-{i}"
        assert frame.key is None
        assert frame.identity == f"zmq:P1-B02-{i}#{pixel_digest(frame.pixels)}"
        assert frame.meta.source == f"zmq:P1-B02-{i}"
        assert (frame.meta.plate, frame.meta.well, frame.meta.field) == ("P1", "B02", i)
        assert (frame.meta.channel, frame.meta.plane) == (1, -1)
        assert frame.meta.pixel_size_um == 0.65
        assert frame.meta.acquired_at == "2026-01-01T12:00:00Z"
        assert frame.pixels.shape == pixels.shape
        assert frame.pixels.dtype.name == pixels.dtype.name
        np.testing.assert_array_equal(frame.pixels, pixels)
        assert frame.pixels.flags.c_contiguous and frame.pixels.flags.owndata
        assert frame.ready_at <= time.monotonic()
    assert failures(metrics) == 0


def test_parse_message_keeps_optional_fields_optional():
    frame = parse_message([header("x", (2, 3)), bytes(6)], max_bytes=100)
    assert frame.meta.source == "zmq:x"
    assert (frame.meta.plate, frame.meta.well, frame.meta.field) == ("", "", -1)
    assert frame.meta.pixel_size_um is None
    assert frame.pixels.shape == (2, 3)
    frame = parse_message([header("y", (2, 2), "uint16", exposure_ms=20), bytes(8)], 100)
    assert frame.pixels.dtype == np.uint16  # unknown keys are ignored


MALFORMED = {
    "bad_json": ([b"{not json", bytes(24)], "zmq_json"),
    "not_utf8": ([b"\xff\xfe{}", bytes(24)], "zmq_json"),
    "deep_json": ([b"[" * 50_000 + b"]" * 50_000, bytes(24)], "zmq_too_large"),
    "nested_json": ([b"[" * 20_000 + b"]" * 20_000, bytes(24)], "zmq_json"),
    "json_list": ([b"[1, 2]", bytes(24)], "zmq_json"),
    "no_frame_id": ([json.dumps({"shape": [4, 6], "dtype": "uint8"}).encode(), bytes(24)],
                    "zmq_header"),
    "frame_id_number": ([json.dumps({"frame_id": 7, "shape": [4, 6], "dtype": "uint8"}).encode(),
                         bytes(24)], "zmq_header"),
    "frame_id_newline": ([header("a\nb"), bytes(24)], "zmq_header"),
    "frame_id_empty": ([header(""), bytes(24)], "zmq_header"),
    "field_text": ([header(field="3"), bytes(24)], "zmq_header"),
    "field_bool": ([header(field=True), bytes(24)], "zmq_header"),
    "plate_number": ([header(plate=12), bytes(24)], "zmq_header"),
    "pixel_size_negative": ([header(pixel_size_um=-0.5), bytes(24)], "zmq_header"),
    "pixel_size_nan": ([b'{"frame_id": "f", "shape": [4, 6], "dtype": "uint8", '
                        b'"pixel_size_um": NaN}', bytes(24)], "zmq_header"),
    "no_shape": ([json.dumps({"frame_id": "f", "dtype": "uint8"}).encode(), bytes(24)],
                 "zmq_shape"),
    "shape_negative": ([header(shape=(-4, 6)), bytes(24)], "zmq_shape"),
    "shape_zero": ([header(shape=(0, 6)), bytes(0)], "zmq_shape"),
    "shape_float": ([header(shape=(4.0, 6)), bytes(24)], "zmq_shape"),
    "shape_1d": ([header(shape=(24,)), bytes(24)], "zmq_shape"),
    "shape_4d": ([header(shape=(1, 1, 4, 6)), bytes(24)], "zmq_shape"),
    "shape_text": ([json.dumps({"frame_id": "f", "shape": "4x6", "dtype": "uint8"}).encode(),
                    bytes(24)], "zmq_shape"),
    "shape_huge": ([header(shape=(10**12, 10**12)), bytes(24)], "zmq_too_large"),
    "dtype_float": ([header(dtype="float32"), bytes(96)], "zmq_dtype"),
    "dtype_missing": ([json.dumps({"frame_id": "f", "shape": [4, 6]}).encode(), bytes(24)],
                      "zmq_dtype"),
    "buffer_short": ([header(), bytes(23)], "zmq_buffer"),
    "buffer_long": ([header(), bytes(25)], "zmq_buffer"),
    "buffer_uint16_half": ([header(dtype="uint16"), bytes(24)], "zmq_buffer"),
    "one_part": ([header()], "zmq_parts"),
    "three_parts": ([header(), bytes(24), b"extra"], "zmq_parts"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_parse_message_names_the_reason(name):
    parts, reason = MALFORMED[name]
    with pytest.raises(MessageError) as caught:
        parse_message(parts, max_bytes=1024)
    assert caught.value.reason == reason
    assert str(caught.value)


def test_malformed_corpus_is_counted_logged_once_and_the_source_still_answers(push, caplog):
    metrics = Metrics()
    received: list[Frame] = []
    config = ZmqConfig(enabled=True, endpoint=LOOPBACK, max_message_bytes=1024)
    with caplog.at_level(logging.WARNING), ZmqSource(config, received.append, metrics) as source:
        sock = push(source.endpoint)
        for _ in range(2):
            for parts, _reason in MALFORMED.values():
                sock.send_multipart(parts)
        sock.send_multipart([header("good", (2, 2)), bytes([1, 2, 3, 4])])
        assert wait_until(lambda: len(received) == 1)
    assert received[0].frame_id == "good"
    np.testing.assert_array_equal(received[0].pixels, [[1, 2], [3, 4]])
    expected: dict[str, int] = {}
    for _parts, reason in MALFORMED.values():
        expected[reason] = expected.get(reason, 0) + 2
    for reason, count in expected.items():
        assert failed(metrics, reason) == count, reason
    dropped_logs = [r for r in caplog.records if "ZeroMQ message dropped" in r.getMessage()]
    # Each reason is logged once; its repeats are counted, not logged.
    assert sorted(r.getMessage().split("(")[1].split(")")[0] for r in dropped_logs) == sorted(
        expected
    )


def test_oversized_buffer_is_counted_under_the_limit(push):
    metrics = Metrics()
    received: list[Frame] = []
    config = ZmqConfig(enabled=True, endpoint=LOOPBACK, max_message_bytes=1000)
    with ZmqSource(config, received.append, metrics) as source:
        sock = push(source.endpoint)
        sock.send_multipart([header("big", (40, 40)), bytes(1600)])  # shape over the limit
        sock.send_multipart([header("long", (10, 10)), bytes(1500)])  # buffer over the limit
        sock.send_multipart([header("ok", (10, 10)), bytes(100)])
        assert wait_until(lambda: len(received) == 1)
    assert failed(metrics, "zmq_too_large") == 1
    assert failed(metrics, "zmq_buffer") == 1


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                   max_size=3),
    max_leaves=8,
)


def mostly(valid: st.SearchStrategy, junk: st.SearchStrategy = json_values) -> st.SearchStrategy:
    """Valid two times in three, so the checks past the first field are reached too."""
    return st.sampled_from([True, True, False]).flatmap(lambda ok: valid if ok else junk)


names = st.text(st.characters(min_codepoint=33, max_codepoint=0x2FF), min_size=1, max_size=12)
header_fields = st.fixed_dictionaries(
    {
        "frame_id": mostly(names, st.text(max_size=4) | json_values),
        "shape": mostly(
            st.lists(st.integers(1, 10), min_size=2, max_size=3),
            st.lists(st.integers(-2, 10), max_size=4) | json_values,
        ),
        "dtype": mostly(st.sampled_from(["uint8", "uint16"]),
                        st.sampled_from(["float32", "int16", ""]) | json_values),
    },
    optional={
        "plate": mostly(names),
        "well": mostly(names),
        "field": mostly(st.integers(-1, 5), st.integers(-5, -2) | json_values),
        "channel": mostly(st.integers(-1, 5)),
        "pixel_size_um": mostly(st.floats(0.01, 10) | st.none(), st.floats() | json_values),
        "acquired_at": mostly(names),
        "extra": json_values,
    },
)


@st.composite
def messages(draw) -> list[bytes]:
    fields = draw(header_fields)
    fields.pop(draw(st.sampled_from(["", "", "", "frame_id", "shape", "dtype"])), None)
    head = draw(mostly(st.just(json.dumps(fields).encode()), st.binary(max_size=48)))
    shape, dtype = fields.get("shape"), fields.get("dtype")
    body = draw(st.binary(max_size=64))
    if isinstance(shape, list) and all(type(n) is int for n in shape) and dtype in (
        "uint8", "uint16"
    ):
        size = int(np.prod(shape)) * (1 if dtype == "uint8" else 2)
        if 0 <= size <= 4096:
            # Mostly the right length, so valid frames come through as well.
            size = max(0, size + draw(st.sampled_from([0, 0, 0, -1, 1, 2])))
            body = bytes([draw(st.integers(0, 255))]) * size  # any bytes are valid pixels
    parts = [head, body]
    return draw(st.sampled_from([parts, parts, parts, parts[:1], [*parts, b"x"]]))


@settings(max_examples=200, deadline=None, database=None)
@given(messages())
def test_parse_message_returns_a_frame_or_raises_message_error(parts):
    try:
        frame = parse_message(parts, max_bytes=4096)
    except MessageError as error:
        assert error.reason.startswith("zmq_")
        return
    assert frame.pixels.nbytes == len(parts[1])
    assert frame.pixels.ndim in (2, 3)
    assert frame.meta.source == f"zmq:{frame.frame_id}"


def test_fuzzed_messages_over_the_socket_leave_the_source_answering(push):
    metrics = Metrics()
    received: list[Frame] = []
    config = ZmqConfig(enabled=True, endpoint=LOOPBACK, max_message_bytes=4096)
    with ZmqSource(config, received.append, metrics) as source:
        sock = push(source.endpoint)

        @settings(
            max_examples=100, deadline=None, database=None,
            suppress_health_check=[HealthCheck.too_slow],
        )
        @given(messages())
        def send_one(parts):
            before = failures(metrics) + len(received)
            sock.send_multipart(parts)
            assert wait_until(lambda: failures(metrics) + len(received) == before + 1)

        send_one()
        before = len(received)
        sock.send_multipart([header("after-fuzz", (2, 2)), bytes(4)])
        assert wait_until(lambda: len(received) == before + 1)
        assert received[-1].frame_id == "after-fuzz"


def test_block_policy_makes_the_sender_wait_and_loses_nothing(push):
    metrics = Metrics()
    release = threading.Event()
    received: list[Frame] = []

    def slow_pipeline(frame: Frame) -> None:
        release.wait()
        received.append(frame)

    config = ZmqConfig(enabled=True, endpoint=LOOPBACK, high_water_mark=2, overload="block")
    payload = bytes(512 * 1024)
    with ZmqSource(config, slow_pipeline, metrics) as source:
        sock = push(source.endpoint, SNDHWM=2, SNDTIMEO=300)
        sent = 0
        for i in range(300):  # 150 MB: more than the socket queues and TCP buffers hold
            try:
                sock.send_multipart([header(f"f{i}", (512, 1024)), payload])
            except zmq.Again:
                break
            sent += 1
        assert 0 < sent < 300, "the sender never had to wait"
        release.set()
        assert wait_until(lambda: len(received) == sent, timeout=10)
    assert [f.frame_id for f in received] == [f"f{i}" for i in range(sent)]
    assert metrics.registry.get_sample_value(
        "artifactd_frames_dropped_total", {"policy": "drop_oldest"}
    ) is None


def test_drop_oldest_counts_every_drop_and_keeps_the_newest(caplog):
    metrics = Metrics()
    release = threading.Event()
    received: list[Frame] = []

    def slow_pipeline(frame: Frame) -> None:
        release.wait()
        received.append(frame)

    def dropped() -> float:
        value = metrics.registry.get_sample_value(
            "artifactd_frames_dropped_total", {"policy": "drop_oldest"}
        )
        return value or 0.0

    n = 40
    config = ZmqConfig(
        enabled=True, endpoint=LOOPBACK, high_water_mark=4, overload="drop_oldest"
    )
    with (
        caplog.at_level(logging.WARNING),
        ZmqSource(config, slow_pipeline, metrics) as source,
        ArtifactClient(source.endpoint, None, send_timeout_s=2) as client,
    ):
        try:
            for i in range(n):
                client.send(f"f{i}", np.full((8, 8), i, dtype=np.uint8))
            # One frame waits in the pipeline (or is still on its way there: then it is one more
            # drop, as seen on a loaded machine), four in the backlog: the rest were dropped.
            assert wait_until(lambda: dropped() >= n - 1 - 4), f"{dropped()} dropped"
            time.sleep(0.2)  # let a last drop land before counting
        finally:  # a failed count must fail the test, not leave the source's thread waiting
            release.set()
        drops = int(dropped())
        assert drops in (n - 5, n - 4)
        assert wait_until(lambda: len(received) + dropped() == n)
    ids = [int(f.frame_id[1:]) for f in received]
    assert ids == sorted(ids) and ids[-4:] == list(range(n - 4, n))
    assert metrics.registry.get_sample_value("artifactd_queue_depth", {"stage": "zmq"}) == 0
    drops_logged = [r for r in caplog.records if "dropping the oldest" in r.getMessage()]
    assert len(drops_logged) == 1  # once per burst
    assert any(f"{drops} frames were dropped" in r.getMessage() for r in caplog.records)


def test_stop_hands_over_what_the_socket_already_holds(push):
    release = threading.Event()
    received: list[Frame] = []

    def slow_pipeline(frame: Frame) -> None:
        release.wait()
        received.append(frame)

    source = ZmqSource(ZmqConfig(enabled=True, endpoint=LOOPBACK), slow_pipeline, Metrics())
    source.start()
    sock = push(source.endpoint)
    for i in range(5):
        sock.send_multipart([header(f"f{i}", (2, 2)), bytes(4)])
    time.sleep(0.3)  # let them reach the source's socket queue
    source.stop()
    release.set()
    source.join(5)
    assert [f.frame_id for f in received] == [f"f{i}" for i in range(5)]


def test_frames_the_pipeline_refuses_or_raises_on_are_counted(push, caplog):
    metrics = Metrics()
    outcomes = iter([False, False, RuntimeError("batcher gone"), True])
    accepted: list[str] = []

    def pipeline(frame: Frame) -> bool:
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        if outcome:
            accepted.append(frame.frame_id)
        return outcome

    with ZmqSource(ZmqConfig(enabled=True, endpoint=LOOPBACK), pipeline, metrics) as source:
        sock = push(source.endpoint)
        for i in range(4):
            sock.send_multipart([header(f"f{i}", (2, 2)), bytes(4)])
        assert wait_until(lambda: accepted == ["f3"])
    assert failed(metrics, "refused") == 2
    assert failed(metrics, "internal") == 1
    assert sum("refused streamed frame" in r.getMessage() for r in caplog.records) == 1
    assert any(r.exc_info and "'f2'" in r.getMessage() for r in caplog.records)


def test_sub_mode_connects_to_a_publisher():
    context = zmq.Context()
    pub = context.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(LOOPBACK)
    endpoint = pub.getsockopt_string(zmq.LAST_ENDPOINT)
    received: list[Frame] = []
    config = ZmqConfig(enabled=True, mode="sub", endpoint=endpoint, bind=False)
    try:
        with ZmqSource(config, received.append, Metrics(), context=context):
            # PUB/SUB slow joiner: publish until the subscription has reached the publisher.
            assert wait_until(
                lambda: pub.send_multipart([header("s", (2, 2)), bytes(4)]) or bool(received)
            )
    finally:
        pub.close()
        context.term()
    assert received[0].frame_id == "s"


def test_listeners_on_all_interfaces_are_recognised():
    assert binds_all_interfaces("tcp://*:9752")
    assert binds_all_interfaces("tcp://0.0.0.0:9752")
    assert binds_all_interfaces("tcp://[::]:9752")
    assert not binds_all_interfaces("tcp://127.0.0.1:9752")
    assert not binds_all_interfaces("ipc:///run/artifactd/frames")


def test_an_endpoint_in_use_is_a_config_error():
    with ZmqSource(ZmqConfig(enabled=True, endpoint=LOOPBACK), lambda f: None, Metrics()) as a:
        taken = ZmqSource(ZmqConfig(enabled=True, endpoint=a.endpoint), lambda f: None, Metrics())
        with pytest.raises(ConfigError, match=r"zmq\.endpoint: cannot bind"):
            taken.start()
