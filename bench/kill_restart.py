"""Frames lost or stored twice when the service is SIGKILLed at random while a writer fills the
input folder, then restarted; at the end one `--once` run finishes what is left.

    python -m bench.kill_restart --kills 20 --frames 400

Prints one Markdown table row (kills, frames written, stored, lost, stored twice, wall time).
The writer writes half the frames in place (close-write) and half as write-then-rename, as
instruments do, at a steady rate, while the service is killed at uniformly random moments.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import tifffile

from daemon.results.store import ResultsStore
from engines.data.synth import SynthOptions, frame_for

REPO = Path(__file__).resolve().parents[1]


def write_plate(folder: Path, count: int, interval_s: float, stop: threading.Event) -> list[str]:
    """Writes `count` frames, one every `interval_s`; returns their sources (relative paths)."""
    plate = folder / "Plate1"
    plate.mkdir(parents=True, exist_ok=True)
    options = SynthOptions(height=256, width=256, artifact_probability=0.3)
    written = []
    for i in range(count):
        if stop.is_set():
            break
        name = f"r{i // 48 + 1:02d}c{i // 4 % 12 + 1:02d}f{i % 4 + 1:02d}p01-ch1sk1fk1fl1.tiff"
        final = plate / name
        image = frame_for(3, i, options).image
        if i % 2:
            tifffile.imwrite(final, image)
        else:
            part = final.with_name(final.name + ".part")
            tifffile.imwrite(part, image)
            os.replace(part, final)
        written.append(f"Plate1/{name}")
        time.sleep(interval_s)
    return written


def config(work: Path) -> Path:
    text = f"""[input]
folder = "{work / 'in'}"
settle_s = 0.5
[output]
store = "{work / 'results.zarr'}"
[metrics]
enabled = false
[service]
drain_timeout_s = 30.0
"""
    path = work / "config.toml"
    path.write_text(text)
    return path


def service(config_path: Path, log: Path, *extra: str) -> subprocess.Popen:
    handle = log.open("ab")
    return subprocess.Popen([sys.executable, "-m", "daemon.cli", "run", "--config",
                             str(config_path), *extra], cwd=REPO, stdout=handle,
                            stderr=subprocess.STDOUT)


def stored(store: Path) -> Counter:
    reader = ResultsStore(store, read_only=True)
    try:
        return Counter(str(s) for s in reader.frame_table()["source"])
    finally:
        reader.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs of the running service")
    parser.add_argument("--frames", type=int, default=400, help="frames the writer writes")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between frames")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill times")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="artifactd-kill-") as name:
        work = Path(name)
        config_path, log = config(work), work / "service.log"
        stop = threading.Event()
        written: list[str] = []
        writer = threading.Thread(target=lambda: written.extend(
            write_plate(work / "in", args.frames, args.interval, stop)))
        writer.start()
        for kill in range(args.kills):
            process = service(config_path, log)
            time.sleep(rng.uniform(2.0, 7.0))  # start-up takes ~2 s: some kills land in it
            process.send_signal(signal.SIGKILL)
            process.wait()
            print(f"kill {kill + 1}/{args.kills}", file=sys.stderr, flush=True)
        writer.join()
        done = service(config_path, log, "--once").wait()
        counts = stored(work / "results.zarr")
    lost = set(written) - set(counts)
    twice = sum(1 for n in counts.values() if n > 1)
    print("| SIGKILLs | frames written | stored | lost | stored twice | `--once` exit | wall s |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| {args.kills} | {len(written)} | {len(counts)} | {len(lost)} | {twice} | {done} | "
          f"{time.monotonic() - started:.0f} |")
    return 0 if not lost and not twice and done == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
