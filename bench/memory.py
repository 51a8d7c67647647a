"""Resident memory over a long screen: does the service's per-frame bookkeeping stay flat?

    python bench/memory.py --frames 100000 --size 64

Runs the parts of the service that remember frames, for real, in one process: a folder source
(real watchdog on a temporary folder) hands each file on once, the journal commits it, and the
results store appends its result (masks, frame and artifact rows) and looks its identity up.
Only the model is left out (each result is built directly), because it holds no per-frame
state and would make 100,000 frames take an hour. Files are written 1,000 to a folder, a
folder at a time, and the source must have handed on a folder before the next is written.

Prints a Markdown table of RSS (MiB) every 10 % of the frames. Run it with PYTHONPATH pointing
at another checkout to measure that code the same way (the APIs used here are long-standing).
"""

from __future__ import annotations

import argparse
import gc
import queue
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from daemon.config import InputConfig
from daemon.frames import Frame, FrameMeta, FrameResult, ReadyFile
from daemon.results.journal import Journal
from daemon.results.store import ResultsStore
from daemon.sources.fs import FolderSource

PER_FOLDER = 1000
BATCH = 100  # results per store append, as the writer batches them


def rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def result_for(item: ReadyFile, i: int, size: int) -> FrameResult:
    labels = np.zeros((size, size), np.uint16)
    n = i % 2  # every other frame holds one artifact
    if n:
        labels[2:6, 3:9] = 1
    meta = FrameMeta(source=item.key.source, plate="Plate1", well=f"B{i % 12 + 1:02d}",
                     field=i % 9 + 1, channel=0, plane=0, pixel_size_um=0.65, acquired_at="")
    frame = Frame(meta=meta, pixels=np.zeros((size, size), np.uint16), ready_at=item.ready_at,
                  key=item.key, frame_id=str(item.path))
    artifacts = {"label": np.arange(1, n + 1), "area_px": np.full(n, 24)} if n else {}
    return FrameResult(frame=frame, score=0.9 if n else 0.1, flagged=bool(n), labels=labels,
                       artifacts=artifacts, area_fraction=float((labels > 0).mean()),
                       n_artifacts=n, processed_at="2026-01-01T00:00:00.000Z")


def store_and_journal(handed: queue.Queue, store: ResultsStore, journal: Journal, size: int,
                      total: int, done: list[int]) -> None:
    """The writer's part: batch, append (durable), then commit the keys to the journal."""
    batch: list[FrameResult] = []
    while done[0] < total:
        item = handed.get()
        batch.append(result_for(item, done[0] + len(batch), size))
        if len(batch) == BATCH or done[0] + len(batch) == total:
            store.append(batch)
            journal.commit([r.frame.key for r in batch if r.frame.key], "clean")
            done[0] += len(batch)
            batch = []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=64, help="frame side in pixels")
    args = parser.parse_args()
    total = args.frames
    with tempfile.TemporaryDirectory(prefix="artifactd-memory-") as tmp:
        root = Path(tmp)
        (root / "in").mkdir()
        store = ResultsStore(root / "results.zarr", fsync=False)
        journal = Journal(root / "journal.sqlite")
        handed: queue.Queue[ReadyFile] = queue.Queue()
        source = FolderSource(InputConfig(settle_s=0.5), handed.put, is_done=journal.is_done,
                              root=root / "in")
        source.start()
        done = [0]
        writer = threading.Thread(target=store_and_journal,
                                  args=(handed, store, journal, args.size, total, done))
        writer.start()
        rows = [("0", rss_mib())]
        started = time.monotonic()
        for start in range(0, total, PER_FOLDER):
            folder = root / "in" / f"W{start // PER_FOLDER:04d}"
            folder.mkdir()
            for i in range(start, min(start + PER_FOLDER, total)):
                (folder / f"Plate1_f{i:06d}.tif").write_bytes(b"II*\0" + i.to_bytes(8, "little"))
            while done[0] < min(start + PER_FOLDER, total) - BATCH and writer.is_alive():
                time.sleep(0.01)
            if (start + PER_FOLDER) % max(PER_FOLDER, total // 10) == 0:
                gc.collect()
                rows.append((f"{start + PER_FOLDER:,}", rss_mib()))
                print(f"  {rows[-1][0]} frames, RSS {rows[-1][1]:.1f} MiB", file=sys.stderr)
        writer.join()
        source.stop()
        stored = len(store)
        store.close()
        journal.close()
    elapsed = time.monotonic() - started
    print(f"\n{total:,} frames of {args.size}x{args.size}, stored {stored:,}, {elapsed:.0f} s\n")
    print("| frames | RSS (MiB) |\n|---:|---:|")
    for frames, rss in rows:
        print(f"| {frames} | {rss:.1f} |")
    print(f"\ngrowth from 10 % to 100 % of the frames: {rows[-1][1] - rows[1][1]:+.1f} MiB")


if __name__ == "__main__":
    main()
