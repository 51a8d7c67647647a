"""The plate page's server over real HTTP on a real store: what it serves, how fast it tells a
page about new frames, and what it refuses (wrong tokens, other machines without one, other
sites, path traversal)."""

from __future__ import annotations

import dataclasses
import http.client
import io
import json
import logging
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from daemon.config import ConfigError, WebConfig, parse_config
from daemon.results.store import ResultsStore, open_store_readonly
from daemon.web.images import OUTLINE_RGB
from daemon.web.server import PlatePage
from daemon.web.summary import PlateSummary
from tests.daemon.test_hcs_plate import plate_result
from tests.daemon.web_helpers import get_json, non_loopback_address, raw_get, request

TOKEN = "alice:0123456789abcdef-secret"
STATUS = {"backlog": 3, "failures": {"corrupt": 2}, "store_writable": True,
          "engine": {"backend": "onnxruntime", "device": "cpu", "model": "m", "precision": "fp32",
                     "workers": 2}}


class Served:
    def __init__(self, tmp_path: Path, config: WebConfig) -> None:
        self.store = ResultsStore(tmp_path / "results.zarr")
        results = [plate_result(i, well, field) for i, (well, field) in
                   enumerate([("B03", 1), ("B03", 2), ("C07", 1)])]
        self.store.append(results)
        self.summary = PlateSummary()
        self.summary.load(self.store)
        self.page = PlatePage(config, self.summary, self.store, lambda: dict(STATUS))
        self.page.start()
        self.port = self.page.port
        self.sink = self.summary.sink(self.store)

    def add(self, *results):
        self.store.append(list(results))
        self.sink(list(results), [0.0] * len(results))

    def close(self) -> None:
        self.page.stop()
        self.store.close()


@pytest.fixture
def served(tmp_path: Path):
    served = Served(tmp_path, WebConfig(port=0))
    yield served
    served.close()


def test_the_page_and_its_files(served: Served):
    status, headers, body = request(served.port, "GET", "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b'<script src="/static/app.js"' in body
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css"),
                       ("favicon.svg", "image/svg+xml")):
        status, headers, _ = request(served.port, "GET", f"/static/{name}")
        assert status == 200 and headers["Content-Type"].startswith(kind), name


def test_state_well_and_status(served: Served):
    state = get_json(served.port, "/api/state")
    [plate] = state["plates"]
    assert plate["name"] == "P1" and plate["format"] == 96
    assert plate["wells"] == {"B03": [2, 1, 0], "C07": [1, 0, 0]}
    assert state["status"]["backlog"] == 3 and state["status"]["failures"] == {"corrupt": 2}
    assert state["status"]["engine"]["backend"] == "onnxruntime"
    assert state["access"] == {"local": True, "token_needed": False, "tokens": False}
    well = get_json(served.port, "/api/well?plate=P1&well=B03")
    assert [(f["field"], f["flagged"], f["n_artifacts"]) for f in well["fields"]] == \
        [(1, False, 0), (2, True, 2)]
    status, _, body = request(served.port, "GET", "/api/well?plate=P1&well=A01")
    assert status == 404 and "no such well" in json.loads(body)["error"]


def test_thumbnails_with_and_without_outlines(served: Served):
    thumbnail = served.store.thumbnail(1)  # B03 field 2: two artifacts
    status, headers, body = request(served.port, "GET", "/api/frames/1/thumbnail.png")
    assert status == 200 and headers["Content-Type"] == "image/png"
    shown = np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))
    assert shown.shape[:2] == thumbnail.image.shape
    outline = np.all(shown == OUTLINE_RGB, axis=-1)
    assert outline.any() and not (outline & (thumbnail.labels > 0)).any()  # around, not over
    np.testing.assert_array_equal(shown[..., 0][~outline], thumbnail.image[~outline])
    status, _, plain = request(served.port, "GET", "/api/frames/1/thumbnail.png?outlines=0")
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(plain))), thumbnail.image)
    assert request(served.port, "GET", "/api/frames/3/thumbnail.png")[0] == 404


def read_event(stream: http.client.HTTPResponse, kind: str, deadline: float) -> dict:
    event = None
    while time.monotonic() < deadline:
        line = stream.readline().decode().rstrip("\n")
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: ") and event == kind:
            return json.loads(line[6:])
    raise AssertionError(f"no {kind} event in time")


def test_the_event_stream_tells_a_page_what_changed_at_once(served: Served):
    version = get_json(served.port, "/api/state")["version"]
    connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
    connection.request("GET", f"/api/events?since={version}")
    stream = connection.getresponse()
    assert stream.headers["Content-Type"] == "text/event-stream"
    assert read_event(stream, "status", time.monotonic() + 5)["backlog"] == 3
    added = time.monotonic()
    served.add(plate_result(4, "H12", 1), plate_result(5, "C07", 2))
    changes = read_event(stream, "wells", added + 2)
    elapsed = time.monotonic() - added
    assert elapsed < 1.0, f"the page heard of a durable frame {elapsed:.2f} s later"
    assert changes["wells"] == [["P1", "H12", [1, 0, 0]], ["P1", "C07", [2, 1, 0]]]
    connection.close()


def test_a_page_with_an_unknown_version_is_told_to_reload(served: Served):
    connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
    connection.request("GET", "/api/events?since=nonsense")
    assert "version" in read_event(connection.getresponse(), "reset", time.monotonic() + 5)
    connection.close()


def test_a_correction_from_this_machine_is_durable_and_shown(served: Served, tmp_path: Path):
    status, _, body = request(served.port, "POST", "/api/corrections", {"row": 1, "label": "clean"})
    assert status == 200, body
    shown = json.loads(body)
    assert (shown["correction"], shown["corrected_by"], shown["shown_flagged"]) == \
        ("clean", "loopback", False)
    with open_store_readonly(tmp_path / "results.zarr") as reader:  # on disk, committed
        table = reader.correction_table()
    assert list(table["label"]) == ["clean"] and list(table["by"]) == ["loopback"]
    assert list(table["source"]) == ["P1/B03_f2.tif"]
    assert get_json(served.port, "/api/state")["plates"][0]["wells"]["B03"] == [2, 0, 1]


@pytest.mark.parametrize(("body", "status", "says"), [
    ({"row": 1, "label": "dirty"}, 400, "label 'dirty' is not clean or artifact"),
    ({"row": "1", "label": "clean"}, 400, "row '1' is not a frame row"),
    ([1, "clean"], 400, "not a JSON object"),
    (b"{not json", 400, "not JSON"),
    ({"row": 99, "label": "clean"}, 404, "frame row 99 is not a field the page shows"),
])
def test_a_malformed_correction_is_one_sentence(served: Served, body, status, says):
    got, _, answer = request(served.port, "POST", "/api/corrections", body)
    assert got == status and says in json.loads(answer)["error"]
    assert served.store.counts["corrections"] == 0


def test_writes_from_other_sites_are_refused(served: Served):
    body = {"row": 1, "label": "clean"}
    status, _, answer = request(served.port, "POST", "/api/corrections", json.dumps(body).encode(),
                                headers={"Content-Type": "text/plain"})  # what a form can send
    assert status == 415 and "expected a JSON body" in json.loads(answer)["error"]
    status, _, answer = request(served.port, "POST", "/api/corrections", body,
                                headers={"Origin": "http://evil.example"})
    assert status == 403 and "Origin" in json.loads(answer)["error"]
    # A DNS-rebound name pointing at 127.0.0.1: not this machine's name, so refused, reads too.
    for method, path, sent in (("POST", "/api/corrections", body), ("GET", "/api/state", None)):
        status, _, answer = request(served.port, method, path, sent,
                                    headers={"Host": f"evil.example:{served.port}"})
        assert status == 403 and "is not this machine" in json.loads(answer)["error"]
    assert served.store.counts["corrections"] == 0


TRAVERSALS = [
    "/static/../server.py", "/static/..%2fserver.py", "/static/%2e%2e/%2e%2e/config.toml",
    "/static/%2e%2e%2fsummary.py", "/static/....//server.py", "/static//etc/passwd",
    "/static/..\\server.py", "/static/%2E%2E%5Cserver.py", "/static/", "/static/index.html%00.js",
    "/api/frames/../../zarr.json", "/api/frames/0%2f..%2f..%2fzarr.json/thumbnail.png",
    "/api/frames/-1/thumbnail.png", "/api/frames/1e3/thumbnail.png", "/../../etc/passwd",
    "/%2e%2e/%2e%2e/etc/passwd", "/api/frames/0/../../../daemon/config.toml",
]


@pytest.mark.parametrize("target", TRAVERSALS)
def test_path_traversal_on_file_routes_is_404(served: Served, target: str):
    status, body = raw_get(served.port, target)
    assert status == 404, (target, status, body[:200])
    assert b"import" not in body and b"root:" not in body and b"[web]" not in body


def test_a_wrong_token_is_refused_even_from_this_machine(tmp_path: Path, caplog):
    served = Served(tmp_path, WebConfig(port=0, tokens=(TOKEN,)))
    try:
        body = {"row": 1, "label": "artifact"}
        with caplog.at_level(logging.WARNING):
            status, _, answer = request(served.port, "POST", "/api/corrections", body,
                                        headers={"Authorization": "Bearer 0123456789abcdef-wrong"})
        assert status == 403 and "token was refused" in json.loads(answer)["error"]
        assert "wrong token was refused" in caplog.text
        status, _, _ = request(served.port, "POST", "/api/corrections", body,
                               headers={"Authorization": "Basic " + TOKEN.partition(":")[2]})
        assert status == 403
        assert served.store.counts["corrections"] == 0
        status, _, answer = request(served.port, "POST", "/api/corrections", body,
                                    headers={"Authorization": "Bearer " + TOKEN.partition(":")[2]})
        assert status == 200 and json.loads(answer)["corrected_by"] == "alice"
    finally:
        served.close()


def test_another_interface_needs_a_token_and_says_so(tmp_path: Path, caplog):
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to bind the page to")
    with caplog.at_level(logging.WARNING):
        served = Served(tmp_path, WebConfig(host=address, port=0, tokens=(TOKEN,)))
    try:
        assert f"plate page bound to {address}, not loopback, as configured" in caplog.text
        port = served.port
        state = get_json(port, "/api/state", host=address)  # a peer that is not loopback
        assert state["access"]["token_needed"] is True
        body = {"row": 0, "label": "artifact"}
        status, headers, answer = request(port, "POST", "/api/corrections", body, host=address)
        assert status == 401 and headers["WWW-Authenticate"] == "Bearer"
        assert "a token is needed" in json.loads(answer)["error"]
        status, _, _ = request(port, "POST", "/api/corrections", body, host=address,
                               headers={"Authorization": "Bearer not-the-token-at-all"})
        assert status == 403
        status, _, answer = request(port, "POST", "/api/corrections", body, host=address,
                                    headers={"Authorization": "Bearer " + TOKEN.partition(":")[2]})
        assert status == 200 and json.loads(answer)["corrected_by"] == "alice"
        assert list(served.store.correction_table()["by"]) == ["alice"]
    finally:
        served.close()


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.7", "::", "", "example.org"])
def test_another_interface_without_a_token_does_not_start(host: str):
    with pytest.raises(ConfigError, match=r"web\.host: .* is not a loopback address; expected "
                                          r"web\.tokens"):
        parse_config({"web": {"host": host}})
    assert parse_config({"web": {"host": host, "enabled": False}}).web.host == host
    for loopback in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        assert parse_config({"web": {"host": loopback}}).web.host == loopback


@pytest.mark.parametrize(("tokens", "says"), [
    (["alice"], "entry 1 is not NAME:TOKEN"),
    (["alice:short"], "at least 16 characters"),
    (["a b:0123456789abcdef"], "entry 1 is not NAME:TOKEN"),
    (["al:0123456789abcdef", "al:fedcba9876543210"], "a name is given twice"),
])
def test_malformed_tokens_are_named_without_repeating_them(tokens, says):
    with pytest.raises(ConfigError, match=r"web\.tokens") as info:
        parse_config({"web": {"tokens": tokens}})
    assert says in str(info.value)
    assert "0123456789abcdef" not in str(info.value) and "short" not in str(info.value)


def test_a_taken_port_is_one_sentence(served: Served, tmp_path: Path):
    other = PlatePage(WebConfig(port=served.port), served.summary, served.store)
    with pytest.raises(OSError, match=f"web.port: cannot listen on 127.0.0.1:{served.port}"):
        other.start()


def test_the_server_reads_only_the_summary_for_the_map(served: Served, monkeypatch):
    """The map and well views never read the store's tables (the store is left untouched)."""
    def refuse(*_args, **_kwargs):
        raise AssertionError("a request read a store table")

    monkeypatch.setattr(served.store, "frame_table", refuse)
    monkeypatch.setattr(served.store, "correction_table", refuse)
    served.add(plate_result(6, "D04", 1))
    assert get_json(served.port, "/api/state")["plates"][0]["wells"]["D04"] == [1, 0, 0]
    assert len(get_json(served.port, "/api/well?plate=P1&well=D04")["fields"]) == 1


def test_frames_without_a_plate_or_well_are_listed_apart(served: Served):
    loose = plate_result(7, "", -1, plate="")
    served.add(dataclasses.replace(loose, thumbnail=None))
    plates = get_json(served.port, "/api/state")["plates"]
    assert plates[0]["name"] == "" and plates[0]["unplaced"] == [""]
    fields = get_json(served.port, "/api/well?plate=&well=")["fields"]
    assert fields[0]["thumbnail"] is False


def test_an_installed_package_has_the_page(tmp_path: Path):
    """A wheel built from the project, unpacked away from the source tree, holds every file the
    page serves (package data, not just the source tree)."""
    import subprocess
    import sys

    from tests.daemon.service_helpers import installed_wheel

    installed = installed_wheel(tmp_path)
    check = ("from importlib.resources import files; from daemon.web.server import STATIC; "
             "print(sum(len((files('daemon.web') / 'static' / n).read_bytes()) > 0 "
             "for n in STATIC))")
    done = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60,
                          env={"PYTHONPATH": str(installed), "PATH": "/usr/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    from daemon.web.server import STATIC

    assert done.stdout.split() == [str(len(STATIC))]


def test_stopping_ends_open_event_streams_at_once(tmp_path: Path):
    served = Served(tmp_path, WebConfig(port=0))
    connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
    connection.request("GET", "/api/events?since=0")
    stream = connection.getresponse()
    read_event(stream, "status", time.monotonic() + 5)
    started = time.monotonic()
    served.close()
    assert time.monotonic() - started < 3.0
    assert stream.read() is not None  # the stream ended (no hang)
    connection.close()
