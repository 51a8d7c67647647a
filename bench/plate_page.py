"""The plate page at 1536 wells x 10 fields: server work per frame, page load, update cost, and
what a thumbnail costs (time and bytes per frame).

    python -m bench.plate_page [--wells 1536] [--fields 10] [--updates 300] [--no-browser]
                               [--pipeline-frames 200]

1. A store of wells x fields frames (tiny frames: the map's cost does not depend on frame size)
   is written, and one well's fields get real 1080 x 1080 thumbnails.
2. Server work per frame: PlateSummary.observe over every frame, in writer-sized batches, at
   1536 x 10 and at 96 x 1 (the same per frame: O(1)); the start-up read of the store; the
   work of one event-stream push.
3. Over real HTTP: /api/state (bytes, time) and the delay from a frame's sink call to its
   `wells` event arriving at a client.
4. In headless Chromium (skipped without it): page load to the drawn 1536-well map, the
   time each live update takes to apply, and opening the well with 10 thumbnails.
5. Thumbnails of 1080 x 1080 synthetic frames: making one, rendering its PNG, the bytes it adds
   to the store, and a store append with and without them.
6. The service's pipeline end to end (bench.pipeline's run, the shipped model) over the same
   files with thumbnails off and on, side by side.
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import shutil
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

from daemon.config import WebConfig
from daemon.frames import Frame, FrameKey, FrameMeta, FrameResult
from daemon.plates import LAYOUTS, well_label
from daemon.results.store import ResultsStore
from daemon.results.thumbnails import make_thumbnail
from daemon.web.images import thumbnail_png
from daemon.web.server import PlatePage
from daemon.web.summary import PlateSummary
from engines.data.synth import SynthOptions, frame_for

BATCH = 16  # results per writer batch (the writer takes up to 64 waiting)


def result(i: int, plate: str, well: str, field: int, *, size: int = 16, pixels=None,
           labels=None, thumbnail=None) -> FrameResult:
    source = f"{plate}/{well}_f{field}.tif"
    flagged = i % 7 == 0
    meta = FrameMeta(source=source, plate=plate, well=well, field=field, channel=1, plane=1,
                     pixel_size_um=0.65, acquired_at="2026-01-01T00:00:00.000Z")
    pixels = np.zeros((size, size), np.uint16) if pixels is None else pixels
    labels = np.zeros((size, size), np.uint16) if labels is None else labels
    frame = Frame(meta=meta, pixels=pixels, ready_at=0.0, key=FrameKey(source, 1000 + i, i),
                  frame_id=source)
    return FrameResult(frame=frame, score=0.9 if flagged else 0.1, flagged=flagged, labels=labels,
                       area_fraction=0.01 if flagged else 0.0, n_artifacts=int(flagged),
                       processed_at="2026-01-01T00:00:01.000Z", thumbnail=thumbnail)


def plate_results(wells: int, fields: int, plate: str = "Bench1536") -> list[FrameResult]:
    rows, columns = LAYOUTS[wells]
    names = [well_label(r, c) for r in range(rows) for c in range(columns)]
    return [result(i, plate, names[i // fields], i % fields + 1) for i in range(wells * fields)]


def per_frame_observe_us(results: list[FrameResult]) -> float:
    summary = PlateSummary()
    started = time.perf_counter()
    for start in range(0, len(results), BATCH):
        summary.observe(results[start:start + BATCH], first_row=start)
    return (time.perf_counter() - started) / len(results) * 1e6


def real_thumbnails(count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    options = SynthOptions(height=1080, width=1080, artifact_probability=0.5, pixel_size_um=0.65)
    frames = [frame_for(77, i, options) for i in range(count)]
    return [(f.image, f.mask.astype(np.uint16)) for f in frames]


def sse_latency(port: int, store: ResultsStore, summary: PlateSummary, sink, n: int) -> list[float]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", f"/api/events?since={summary.version}")
    stream = connection.getresponse()
    arrived: list[float] = []
    stop = threading.Event()

    def read() -> None:
        event = None
        while not stop.is_set() and len(arrived) < n:
            line = stream.readline().decode()
            if line.startswith("event: "):
                event = line[7:].strip()
            elif line.startswith("data: ") and event == "wells":
                arrived.append(time.perf_counter())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    time.sleep(0.5)
    sent: list[float] = []
    base = len(store)
    for k in range(n):
        extra = result(base + k, "Bench1536", "AF48", 100 + k)
        store.append([extra])
        sent.append(time.perf_counter())
        sink([extra], [0.0])
        while len(arrived) <= k and reader.is_alive():
            time.sleep(0.005)
        time.sleep(0.05)
    stop.set()
    connection.close()
    return [a - s for s, a in zip(sent, arrived, strict=False)]


def browser_figures(port: int, store: ResultsStore, summary: PlateSummary, sink, updates: int,
                    open_well: str) -> dict:
    chromium, driver = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
    if not (chromium.exists() and driver.exists()):
        return {"skipped": "chromium/chromedriver not installed"}
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(chromium)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1600,1100"):
        options.add_argument(argument)
    chrome = webdriver.Chrome(service=Service(str(driver)), options=options)
    try:
        loads = []
        for _ in range(5):
            chrome.get(f"http://127.0.0.1:{port}/")
            deadline = time.monotonic() + 30
            while (chrome.execute_script("return page.drawnAt") is None
                   and time.monotonic() < deadline):
                time.sleep(0.02)
            loads.append(chrome.execute_script("return page.drawnAt"))  # ms since navigation
        cells = chrome.execute_script("return document.querySelectorAll('#plate .cell').length")
        nodes = chrome.execute_script("return document.getElementsByTagName('*').length")
        time.sleep(1.0)
        # Live updates: frames arriving at ~50/s, each batch one push.
        base = len(store)
        rows, columns = LAYOUTS[1536]
        for k in range(updates):
            batch = [result(base + k * 4 + j, "Bench1536",
                            well_label((k * 4 + j) % rows, (k * 7 + j) % columns), 200 + k)
                     for j in range(4)]
            store.append(batch)
            sink(batch, [0.0] * len(batch))
            time.sleep(0.08)
        time.sleep(1.0)
        timings = chrome.execute_script("return page.timings")
        # Opening the well with real thumbnails.
        started = time.perf_counter()
        chrome.execute_script(
            "document.querySelector(`#plate .cell[data-well='${arguments[0]}']`).click()", open_well
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ready = chrome.execute_script(
                "const imgs=[...document.querySelectorAll('#fields img')];"
                "return imgs.length && imgs.every(i => i.complete && i.naturalWidth > 0)"
                " ? imgs.length : 0")
            if ready:
                break
            time.sleep(0.01)
        opened = time.perf_counter() - started
        heap = chrome.execute_script(
            "return performance.memory ? performance.memory.usedJSHeapSize : null"
        )
        chrome.save_screenshot("/tmp/plate-page-1536.png")
        return {"load_ms": loads, "cells": cells, "dom_nodes": nodes, "update_ms": timings,
                "open_well_s": opened, "thumbnails": ready, "js_heap_mb": heap and heap / 2**20}
    finally:
        chrome.quit()


def thumbnail_costs(work: Path, count: int) -> dict:
    frames = real_thumbnails(count)
    made = []
    for pixels, labels in frames:
        started = time.perf_counter()
        make_thumbnail(pixels, labels, 4)
        made.append(time.perf_counter() - started)
    thumbs = [make_thumbnail(p, m, 4) for p, m in frames]
    pngs = []
    for t in thumbs:
        started = time.perf_counter()
        thumbnail_png(t)
        pngs.append(time.perf_counter() - started)
    appends = {}
    sizes = {}
    for with_thumbs in (False, True):
        path = work / f"store-{with_thumbs}.zarr"
        results = [result(i, "T", well_label(0, i % 12), i, pixels=p, labels=m,
                          thumbnail=thumbs[i] if with_thumbs else None)
                   for i, (p, m) in enumerate(frames)]
        with ResultsStore(path) as store:
            started = time.perf_counter()
            for start in range(0, len(results), 4):
                store.append(results[start:start + 4])
            appends[with_thumbs] = (time.perf_counter() - started) / len(results)
        sizes[with_thumbs] = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        if with_thumbs:
            thumb_dir = path / "thumbnails"
            image = sum(f.stat().st_size for f in thumb_dir.glob("*/0/c/**/*") if f.is_file())
            labels = sum(f.stat().st_size for f in thumb_dir.glob("*/labels/artifacts/0/c/**/*")
                         if f.is_file())
            masks = sum(f.stat().st_size for f in (path / "masks").rglob("c/**/*") if f.is_file())
    return {"make_ms": statistics.median(made) * 1e3, "png_ms": statistics.median(pngs) * 1e3,
            "image_bytes": image / count, "label_bytes": labels / count,
            "mask_bytes": masks / count,
            "store_bytes_without": sizes[False] / count, "store_bytes_with": sizes[True] / count,
            "append_ms_without": appends[False] * 1e3, "append_ms_with": appends[True] * 1e3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wells", type=int, default=1536, choices=sorted(LAYOUTS))
    parser.add_argument("--fields", type=int, default=10)
    parser.add_argument("--updates", type=int, default=300)
    parser.add_argument("--thumbnail-frames", type=int, default=20)
    parser.add_argument("--no-browser", action="store_true")
    parser.add_argument("--pipeline-frames", type=int, default=200,
                        help="files for the end-to-end run with and without thumbnails (0: skip)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="artifactd-plate-bench-"))
    try:
        run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: Path) -> None:
    results = plate_results(args.wells, args.fields)
    print(f"plate: {args.wells} wells x {args.fields} fields = {len(results)} frames")
    big = per_frame_observe_us(results)
    small = per_frame_observe_us(plate_results(96, 1, "Bench96"))
    print(f"summary.observe: {big:.1f} us/frame at {args.wells}x{args.fields}, "
          f"{small:.1f} us/frame at 96x1")

    store = ResultsStore(work / "results.zarr", fsync=False)
    # One well's fields get real 1080 x 1080 thumbnails (the well opened in the browser).
    open_well = well_label(5, 9)
    real = iter(real_thumbnails(args.fields))
    for i, r in enumerate(results):
        if r.frame.meta.well == open_well:
            pixels, labels = next(real)
            results[i] = dataclasses.replace(r, thumbnail=make_thumbnail(pixels, labels, 4))
    for start in range(0, len(results), 512):
        store.append(results[start:start + 512])
    started = time.perf_counter()
    summary = PlateSummary()
    summary.load(store)
    load_s = time.perf_counter() - started
    print(f"summary.load (service start): {load_s:.2f} s for {len(store)} stored frames")

    page = PlatePage(WebConfig(port=0), summary, store,
                     lambda: {"backlog": 0, "failures": {}, "engine": {}, "store_writable": True})
    page.start()
    try:
        sink = summary.sink(store)
        times, size = [], 0
        for _ in range(10):
            started = time.perf_counter()
            body = urllib.request.urlopen(f"http://127.0.0.1:{page.port}/api/state").read()
            times.append(time.perf_counter() - started)
            size = len(body)
        print(f"/api/state: {size / 1024:.0f} KiB, median {statistics.median(times) * 1e3:.1f} ms "
              f"(max {max(times) * 1e3:.1f})")
        version = summary.version
        summary.observe(
            [result(10**6 + j, "Bench1536", well_label(j, j), 50) for j in range(BATCH)],
            first_row=len(store),
        )
        started = time.perf_counter()
        for _ in range(1000):
            summary.changes(version)
        per_push_ms = (time.perf_counter() - started) / 1000 * 1e3
        print(f"one push of {BATCH} changed wells: {per_push_ms:.3f} ms of server work "
              "(summary.changes)")
        latency = sse_latency(page.port, store, summary, sink, 30)
        print("sink -> 'wells' event at the client: "
              f"median {statistics.median(latency) * 1e3:.0f} ms, "
              f"max {max(latency) * 1e3:.0f} ms (poll interval 250 ms)")
        if not args.no_browser:
            figures = browser_figures(page.port, store, summary, sink, args.updates, open_well)
            if "skipped" in figures:
                print(f"browser: skipped ({figures['skipped']})")
            else:
                updates = figures["update_ms"]
                loads = figures["load_ms"]
                print(f"browser: {figures['cells']} wells, {figures['dom_nodes']} DOM nodes; "
                      f"map drawn {statistics.median(loads):.0f} ms after navigation "
                      f"(median of 5, max {max(loads):.0f}); "
                      f"JS heap {figures['js_heap_mb'] or 0:.1f} MiB")
                print(f"browser: {len(updates)} live updates applied, median "
                      f"{statistics.median(updates):.2f} ms, max {max(updates):.2f} ms each")
                print(f"browser: well with {figures['thumbnails']} thumbnails shown in "
                      f"{figures['open_well_s'] * 1e3:.0f} ms; screenshot /tmp/plate-page-1536.png")
    finally:
        page.stop()
        store.close()

    costs = thumbnail_costs(work, args.thumbnail_frames)
    print(f"thumbnail of a 1080x1080 frame: {costs['make_ms']:.1f} ms to make "
          f"(in the post-processing threads), PNG {costs['png_ms']:.1f} ms (on request)")
    print(f"stored per frame: thumbnail {costs['image_bytes'] / 1000:.1f} kB + its labels "
          f"{costs['label_bytes']:.0f} B (masks {costs['mask_bytes'] / 1000:.1f} kB); whole store "
          f"{costs['store_bytes_without'] / 1000:.1f} -> "
          f"{costs['store_bytes_with'] / 1000:.1f} kB/frame")
    print(f"store append: {costs['append_ms_without']:.2f} -> "
          f"{costs['append_ms_with']:.2f} ms/frame with thumbnails (batches of 4, fsync on)")
    if args.pipeline_frames:
        off, on = pipeline_with_and_without(work, args.pipeline_frames)
        print(f"pipeline end to end, {args.pipeline_frames} files of 1080x1080: {off:.1f} frames/s "
              f"without thumbnails, {on:.1f} with (same run, alternating: off, on, off, on)")


def pipeline_with_and_without(work: Path, count: int) -> tuple[float, float]:
    import tifffile

    from bench.pipeline import linked_copies, make_frames, through_pipeline, warm_up
    from daemon.config import Config
    from engines.runtime.modelcard import load_model
    from engines.select import create_engines

    bundle = load_model("default")
    config = Config()
    engines = create_engines(bundle, backend="onnxruntime", workers=config.pipeline.engine_workers,
                             threads=config.model.threads)
    try:
        paths = make_frames(Path("runs/bench-frames/1080"), 60, 1080)
        rates: dict[bool, list[float]] = {False: [], True: []}
        warm_up(tuple(engines), tifffile.imread(paths[0]), config.pipeline.max_batch)
        for run_index, thumbnails in enumerate((False, True, False, True)):
            root = work / f"pipeline-{run_index}"
            files = linked_copies(paths, root, count)
            chosen = config.with_section("thumbnails", enabled=thumbnails)
            rate, _ = through_pipeline(engines, bundle, chosen, root, work, f"p{run_index}",
                                       len(files))
            rates[thumbnails].append(rate)
        return statistics.median(rates[False]), statistics.median(rates[True])
    finally:
        for engine in engines:
            engine.close()


if __name__ == "__main__":
    main()
