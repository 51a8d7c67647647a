"""The live plate page end to end: the real service (a subprocess with the shipped model, a
real folder watcher, real zarr), its verdicts over ZeroMQ, and a real headless Chromium.

The page must load without console errors, show the plate, turn a well red within 2 s of its
frame becoming durable (the verdict is published at that moment), open a well with thumbnails
whose artifacts are outlined, and record a correction that `artifactd export --labels` then
writes. A screenshot is kept (the test's folder, and /tmp/plate-page.png) for a person to look at.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zmq
from PIL import Image

from daemon.web.images import OUTLINE_RGB
from engines.data.dataset import read_labels
from engines.data.synth import SynthOptions, frame_for
from tests.daemon.service_helpers import REPO, config_file, free_port, start_service, stop, wait_for
from tests.daemon.web_helpers import chromium_paths, console_errors, headless_chromium, request

pytestmark = pytest.mark.timeout(300)

RED_WITHIN_S = 2.0
SCREENSHOT = Path("/tmp/plate-page.png")
DIRTY, CLEAN = 6, 3  # frames with a bubble (the shipped model flags these), frames without


def page_port(log: Path) -> int:
    found: list[int] = []

    def logged() -> bool:
        text = log.read_text(errors="replace")
        match = re.search(r"plate page at http://127\.0\.0\.1:(\d+)/", text)
        if match:
            found.append(int(match.group(1)))
        return bool(found)

    wait_for(logged, 90, "the plate page")
    return found[0]


def write_frame(folder: Path, i: int) -> str:
    """One field in a well of its own, named as the generic preset reads it; renamed into place
    so the watcher takes it at once."""
    well = f"C{i + 1:02d}"
    options = SynthOptions(height=384, width=384, artifact_probability=1.0 if i < DIRTY else 0.0,
                           kinds=("bubble",), pixel_size_um=0.65)
    path = folder / f"Screen7_{well}_f1.tif"
    tmp = folder / f".{path.name}.part"
    tifffile.imwrite(tmp, frame_for(2026, i, options).image)
    tmp.rename(path)
    return well


def wells_on_the_page(chrome) -> dict[str, dict]:
    return chrome.execute_script("""
        const out = {};
        for (const cell of document.querySelectorAll('#plate .cell')) {
          if (cell.classList.contains('empty')) continue;
          out[cell.dataset.well] = {flagged: cell.classList.contains('flagged'),
                                    colour: getComputedStyle(cell).backgroundColor};
        }
        return out;""")


def rgb(colour: str) -> tuple[int, ...]:
    return tuple(int(v) for v in re.findall(r"\d+", colour)[:3])


def is_red(colour: str) -> bool:
    r, g, b = rgb(colour)
    return r > 180 and g < 90 and b < 90


def is_green(colour: str) -> bool:
    r, g, b = rgb(colour)
    return g > r + 40 and g > b + 20


@pytest.fixture
def service(tmp_path: Path):
    chromium_paths()  # skip before starting anything when there is no browser
    folder = tmp_path / "in"
    folder.mkdir()
    store = tmp_path / "results.zarr"
    verdicts = f"tcp://127.0.0.1:{free_port()}"
    config = config_file(tmp_path, input_dir=folder, store=store,
                         metadata={"preset": "generic"}, web={"port": 0},
                         verdicts={"enabled": True, "endpoint": verdicts},
                         alerts={"well_flagged_fields": 1})
    log = tmp_path / "service.log"
    process = start_service(config, log=log)
    try:
        yield folder, store, verdicts, log, process
    finally:
        if process.poll() is None:
            stop(process)


def test_the_plate_fills_in_live_and_a_correction_becomes_a_label(service, tmp_path: Path):
    folder, store, endpoint, log, process = service
    port = page_port(log)
    context = zmq.Context()
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"verdict")
    sub.connect(endpoint)
    try:
        with headless_chromium() as chrome:
            chrome.get(f"http://127.0.0.1:{port}/")
            wait_for(lambda: chrome.execute_script(
                "return document.getElementById('connection').dataset.state") == "live", 20,
                "the page to connect to its event stream")
            assert "Waiting for the first frame" in chrome.find_element("id", "plate-title").text
            time.sleep(0.5)  # the SUB socket joins before the first verdict
            wells = [write_frame(folder, i) for i in range(DIRTY + CLEAN)]
            (folder / "Screen7_H12_f1.tif").write_bytes(b"not a TIFF at all")  # a failure
            verdicts = watch_wells_turn(chrome, sub, len(wells), log, process)
            check_the_side_column(chrome)

            flagged = [w for w, v in verdicts.items() if v["flagged"]]
            assert flagged and len(flagged) < len(verdicts), \
                f"expected flagged and clean fields, got {verdicts}"
            assert chrome.find_element("id", "plate-title").text == "Plate Screen7"
            assert len(chrome.find_elements("css selector", "#plate .cell")) == 96

            well = flagged[0]
            row = open_well_and_check_outlines(chrome, port, well)
            correct_in_the_larger_view(chrome, well)
            chrome.save_screenshot(str(tmp_path / "larger-view.png"))
            chrome.find_element("id", "viewer-close").click()
            chrome.execute_script("window.scrollTo(0, 0)")
            chrome.save_screenshot(str(tmp_path / "plate-page.png"))
            chrome.save_screenshot(str(SCREENSHOT))
            assert not console_errors(chrome), console_errors(chrome)
    finally:
        sub.close(0)
        context.term()
    assert stop(process) == 0, log.read_text()[-3000:]

    labels = tmp_path / "labels.csv"
    done = subprocess.run([sys.executable, "-m", "daemon.cli", "export", str(store), "--labels",
                           str(labels)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert read_labels(labels) == [(f"Screen7_{well}_f1.tif", 0)]  # 0: clean
    assert row >= 0


def watch_wells_turn(chrome, sub, expected: int, log: Path, process) -> dict[str, dict]:
    """Each verdict (sent the moment its frame is durable) must show on the page within
    RED_WITHIN_S: a flagged one-field well red, a clean one green."""
    verdicts: dict[str, dict] = {}
    waiting: dict[str, float] = {}  # well -> when its verdict came
    deadline = time.monotonic() + 120
    while (len(verdicts) < expected or waiting) and time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()[-3000:]
        while sub.poll(0):
            _topic, body = sub.recv_multipart()
            verdict = json.loads(body)
            verdicts[verdict["well"]] = verdict
            waiting[verdict["well"]] = time.monotonic()
        if waiting:
            shown = wells_on_the_page(chrome)
            now = time.monotonic()
            for well, since in list(waiting.items()):
                cell = shown.get(well)
                want = is_red if verdicts[well]["flagged"] else is_green
                if cell is not None and cell["flagged"] == verdicts[well]["flagged"] and \
                        want(cell["colour"]):
                    del waiting[well]
                    continue
                assert now - since < RED_WITHIN_S, (
                    f"well {well} ({'flagged' if verdicts[well]['flagged'] else 'clean'}) "
                    f"not shown {now - since:.2f} s after its frame became durable: {cell}")
        time.sleep(0.05)
    assert len(verdicts) == expected and not waiting, (verdicts, waiting, log.read_text()[-2000:])
    return verdicts


def check_the_side_column(chrome) -> None:
    """Failures by reason, the engine, and the alerts (one flagged field fires a well alert
    with alerts.well_flagged_fields = 1), as the service reports them."""
    wait_for(lambda: "not_tiff" in chrome.find_element("id", "failures").text, 10,
             "the failure to be listed")
    assert chrome.find_element("id", "failures").text.split() == ["not_tiff", "1"]
    assert "onnxruntime" in chrome.find_element("id", "engine").text
    wait_for(lambda: chrome.find_elements("css selector", "#alerts li.alert.firing"), 10,
             "a firing alert")
    assert "flagged fields" in chrome.find_element("css selector", "#alerts li.alert.firing").text
    assert chrome.find_element("id", "backlog").text == "0"


def open_well_and_check_outlines(chrome, port: int, well: str) -> int:
    chrome.find_element("css selector", f'#plate .cell[data-well="{well}"]').click()
    wait_for(lambda: chrome.find_element("id", "well").is_displayed(), 10, "the well's panel")
    assert chrome.find_element("id", "well-title").text.startswith(well)
    [card] = chrome.find_elements("css selector", "#fields .field")
    image = card.find_element("css selector", "img")
    wait_for(lambda: chrome.execute_script(
        "return arguments[0].complete && arguments[0].naturalWidth", image), 10, "the thumbnail")
    assert chrome.execute_script("return arguments[0].naturalWidth", image) == 384 // 4
    assert "FLAGGED" in card.text and "artifacts" in card.text
    # The outline is in the image the browser drew (its pixels on screen) ...
    drawn = np.asarray(Image.open(io.BytesIO(image.screenshot_as_png)).convert("RGB")).astype(int)
    reddish = (drawn[..., 0] > 200) & (drawn[..., 1] < 110) & (drawn[..., 2] > 60)
    assert reddish.sum() > 20, "no artifact outline drawn in the thumbnail"
    # ... and in the PNG served, exactly in the outline colour.
    row = int(card.get_attribute("data-row"))
    status, _, png = request(port, "GET", f"/api/frames/{row}/thumbnail.png")
    assert status == 200
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert np.all(pixels == OUTLINE_RGB, axis=-1).any()
    return row


def correct_in_the_larger_view(chrome, well: str) -> None:
    chrome.find_element("css selector", "#fields .field .shot").click()
    wait_for(lambda: chrome.find_element("id", "viewer").is_displayed(), 10, "the larger view")
    big = chrome.find_element("id", "viewer-img")
    wait_for(lambda: chrome.execute_script(
        "return arguments[0].complete && arguments[0].naturalWidth", big), 10, "the larger image")
    assert big.size["width"] > 300
    chrome.find_element("css selector", '#viewer-actions button[data-label="clean"]').click()
    # Read in one script: the buttons are drawn anew when the correction comes back.
    wait_for(lambda: chrome.execute_script(
        "return document.querySelector('#viewer-actions button[data-label=\"clean\"]')"
        ".getAttribute('aria-pressed')") == "true", 10, "the correction to be recorded")
    cell = f'#plate .cell[data-well="{well}"]'
    wait_for(lambda: is_green(chrome.execute_script(
        f"return getComputedStyle(document.querySelector('{cell}')).backgroundColor")),
        RED_WITHIN_S, "the corrected well to turn green")
    assert "corrected" in chrome.find_element("css selector", cell).get_attribute("class")
    assert "→ clean" in chrome.find_element("id", "viewer-facts").text


def test_serving_other_machines_without_a_token_does_not_start(tmp_path: Path):
    folder = tmp_path / "in"
    folder.mkdir()
    store = tmp_path / "results.zarr"
    config = config_file(tmp_path, input_dir=folder, store=store, web={"host": "0.0.0.0"})
    done = subprocess.run([sys.executable, "-m", "daemon.cli", "run", "--config", str(config)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "web.host: '0.0.0.0' is not a loopback address; expected web.tokens" in done.stderr
    assert "Traceback" not in done.stderr
    assert not store.exists()


def test_the_store_records_token_names_never_tokens(tmp_path: Path):
    import zarr

    folder = tmp_path / "in"
    folder.mkdir()
    store = tmp_path / "results.zarr"
    secret = "s3cret-token-0123456789"
    config = config_file(tmp_path, input_dir=folder, store=store,
                         web={"tokens": [f"alice:{secret}"]})
    done = subprocess.run([sys.executable, "-m", "daemon.cli", "run", "--config", str(config),
                           "--once"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    recorded = zarr.open_group(store, mode="r").attrs["artifactd"]["config"]["web"]
    assert recorded["tokens"] == ["alice:(not recorded)"]
    assert secret not in json.dumps(dict(zarr.open_group(store, mode="r").attrs))
    assert secret not in done.stdout + done.stderr
