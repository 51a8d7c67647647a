"""Cost of the optics tracker per frame, and that it does not grow with the run.

    python -m bench.optics [--frames 10000] [--size 1080] [--artifacts 0,5,20]

Each frame has the smudge (the same place every time) and N artifacts in the sample at random
places, measured as the service measures them (engines.runtime.postprocess.measure). Frames go
through what the writer does for each result: OpticsTracker.mark (before the store append) and
HeldAlerts.observe (the alert sink, with the contamination rules behind it), one frame per batch.
Reported: microseconds per frame over the first and the last 1000 frames (a run without
tracemalloc), and the memory the tracker, the held alerts and the rules hold (a second run, with
tracemalloc) after 1000 frames and at the end.
"""

from __future__ import annotations

import argparse
import logging
import time
import tracemalloc

import numpy as np

from daemon.config import AlertsConfig, OpticsConfig
from daemon.frames import Frame, FrameMeta, FrameResult
from daemon.ops.metrics import Metrics
from daemon.sinks.alert_hold import HeldAlerts
from daemon.sinks.alerts import ContaminationMonitor
from daemon.sinks.optics import OpticsTracker
from engines.runtime.postprocess import measure

DISTINCT = 40  # distinct frames, cycled (measuring them is not what is timed)


def frames(size: int, n_artifacts: int, seed: int) -> list[tuple[np.ndarray, dict]]:
    rng = np.random.default_rng(seed)
    rows, cols = np.ogrid[:size, :size]
    smudge = (rows - 0.3 * size) ** 2 + (cols - 0.65 * size) ** 2 <= (0.07 * size) ** 2
    made = []
    for _ in range(DISTINCT):
        labels = np.zeros((size, size), np.uint16)
        labels[smudge] = 1
        for k in range(n_artifacts):
            y, x = rng.uniform(0, size, 2)
            radius = rng.uniform(0.005, 0.03) * size
            labels[(rows - y) ** 2 + (cols - x) ** 2 <= radius**2] = k + 2
        labels = np.unique(labels, return_inverse=True)[1].reshape(size, size).astype(np.uint16)
        made.append((labels, measure(labels, None, None)))
    return made


def result(i: int, labels: np.ndarray, artifacts: dict, pixels: np.ndarray) -> FrameResult:
    well = f"{'ABCDEFGHIJKLMNOP'[i // 96 % 16]}{i // 4 % 24 + 1:02d}"
    frame = Frame(FrameMeta(source=f"P/{i}.tif", plate=f"P{i // 1536}", well=well,
                            field=i % 4 + 1), pixels, 0.0, frame_id=str(i))
    n = len(artifacts["label"])
    area = float(np.count_nonzero(labels)) / labels.size
    return FrameResult(frame, 0.9, n > 0, labels, artifacts, area, n)


def held_bytes(snapshot: tracemalloc.Snapshot) -> int:
    """Memory still allocated by the tracker, the held alerts and the contamination rules."""
    return sum(stat.size for stat in snapshot.statistics("filename")
               if stat.traceback[0].filename.endswith(("optics.py", "alert_hold.py", "alerts.py")))


def run(n_frames: int, size: int, n_artifacts: int, *, memory: bool) -> dict:
    made = frames(size, n_artifacts, seed=n_artifacts)
    pixels = np.zeros((size, size), np.uint16)
    tracker = OpticsTracker(OpticsConfig())
    monitor = ContaminationMonitor(AlertsConfig(), Metrics(), [], optics_fields=5)
    held = HeldAlerts(monitor, tracker)
    times = np.zeros(n_frames)
    held_at = {}
    if memory:
        tracemalloc.start()
    for i in range(n_frames):
        labels, artifacts = made[i % DISTINCT]
        item = result(i, labels, artifacts, pixels)
        started = time.perf_counter()
        held.observe(tracker.mark([item]))
        times[i] = time.perf_counter() - started
        if memory and i + 1 in (1000, n_frames):
            held_at[i + 1] = held_bytes(tracemalloc.take_snapshot())
    if memory:
        tracemalloc.stop()
    return {"first": times[:1000] * 1e6, "last": times[-1000:] * 1e6, "memory": held_at}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=1080)
    parser.add_argument("--artifacts", default="0,5,20", help="sample artifacts per frame")
    args = parser.parse_args()
    logging.getLogger("daemon").setLevel(logging.ERROR)  # every well alerts: not what is shown
    print(f"{args.frames} frames of {args.size} x {args.size}, the smudge in each")
    print("| sample artifacts per frame | first 1000: mean, p99 (µs) | last 1000: mean, p99 (µs) "
          "| held after 1000 frames | held at the end |")
    print("|---:|---:|---:|---:|---:|")
    for n in (int(v) for v in args.artifacts.split(",")):
        r = run(args.frames, args.size, n, memory=False)
        first, last = r["first"], r["last"]
        held = run(args.frames, args.size, n, memory=True)["memory"]
        kib = {k: v / 1024 for k, v in held.items()}
        print(f"| {n} | {first.mean():.0f}, {np.percentile(first, 99):.0f} "
              f"| {last.mean():.0f}, {np.percentile(last, 99):.0f} "
              f"| {kib[1000]:.0f} KiB | {kib[args.frames]:.0f} KiB |")


if __name__ == "__main__":
    main()
