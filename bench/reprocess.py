"""`artifactd reprocess` on Dask against `artifactd run --once`, on one archive, side by side.

    python -m bench.reprocess [--plates 2] [--wells 24] [--fields 4] [--size 1080] [--distinct 24]

1. An archive of --plates plates x --wells wells x --fields fields, named as an Operetta names
   them: --distinct frames drawn by `daemon.tools.simulate`, hard-linked over the archive (each link
   is its own file name, hence its own frame; disk use stays small).
2. One after the other, each a subprocess with a store of its own: `artifactd run --once`,
   `artifactd reprocess --scheduler local:1` and `local:2` (whole wells per task). Wall time is
   measured from outside (start-up included); the reprocess rows also give the rate once the
   cluster is up, and the command's own coordination figure (the idle time of a worker thread
   between two of its tasks).
3. Per-task overhead with nothing to do: --noop-tasks tasks that return at once, through the
   driver's own loop (daemon.tools.reprocess.driver.Driver: a few tasks per worker thread ahead,
   results fetched and committed in batches), on a `dask scheduler` and two `dask worker`
   processes: wall time per task, the scheduler process's CPU time per task (less what it
   spends idle as long), and the idle time of a worker thread between two tasks.
4. The single committer's write rate: real results of the archive's distinct frames (the
   shipped model on ONNX Runtime, in this process), sent through `FrameRow` (what a task ships:
   rows and a zstd mask) and committed by `daemon.tools.reprocess.committer.Committer` into a real
   store and journal, fsync on, in batches of one 9-field well, 4 wells and 16 wells; plus the
   bytes a task sends back per frame.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pickle
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

from daemon.config import Config
from daemon.decode.tiff import DecodeOptions, read_frame
from daemon.frames import FrameKey, ReadyFile
from daemon.pipeline.analysis import Analysis
from daemon.results.journal import Journal
from daemon.results.store import ResultsStore
from daemon.tools.reprocess.committer import Committer
from daemon.tools.reprocess.plan import Task
from daemon.tools.reprocess.worker import FrameRow, TaskOutcome
from daemon.tools.simulate import SimulateOptions, simulate_plate
from engines.runtime.modelcard import load_model
from engines.select import create_engine

REPO = Path(__file__).resolve().parents[1]
logger = logging.getLogger("bench.reprocess")


def make_archive(root: Path, plates: int, wells: int, fields: int, size: int,
                 distinct: int) -> list[Path]:
    """Operetta-named hard links of `distinct` simulated frames: plates x wells x fields."""
    drawn = root / ".drawn"
    originals = simulate_plate(drawn, SimulateOptions(rate=0, fields=4, size=size,
                                                      limit=distinct, seed=3,
                                                      artifact_probability=0.3))
    files = []
    for p in range(plates):
        for w in range(wells):
            row, column = divmod(w, 12)
            for f in range(fields):
                link = root / f"Plate{p + 1}" / (f"r{row + 1:02d}c{column + 1:02d}f{f + 1:02d}"
                                                 "p01-ch1sk1fk1fl1.tiff")
                link.parent.mkdir(parents=True, exist_ok=True)
                os.link(originals[len(files) % len(originals)], link)
                files.append(link)
    return files


def command(argv: list[str], log: Path) -> tuple[float, str]:
    """Run an artifactd command; its wall time from outside and its stdout."""
    started = time.perf_counter()
    with log.open("ab") as handle:
        done = subprocess.run([sys.executable, "-m", "daemon.cli", *argv], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=handle, text=True, timeout=3600,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}; see {log}")
    return wall, done.stdout


def side_by_side(archive: Path, work: Path, frames: int) -> list[dict]:
    log = work / "commands.log"
    config = work / "config.toml"
    config.write_text("[metrics]\nport = 0\n[input]\nsettle_s = 0.5\n")
    rows = []
    wall, out = command(["run", "--once", "--input", str(archive), "--output",
                         str(work / "once.zarr"), "--config", str(config)], log)
    rows.append({"what": "artifactd run --once (the service's pipeline, 2 engines)",
                 "wall": wall, "rate": frames / wall, "inside": None, "coordination": ""})
    for workers in (1, 2):
        wall, out = command(["reprocess", str(archive), "--output", str(work / f"r{workers}.zarr"),
                             "--scheduler", f"local:{workers}", "--config", str(config)], log)
        inside = float(re.search(r"\(([\d.]+) frames/s\): ", out).group(1))
        coordination = re.search(r"coordination: (.*?); committer", out).group(1)
        committer = re.search(r"committer: (.*)$", out, re.M).group(1)
        rows.append({"what": f"artifactd reprocess --scheduler local:{workers}", "wall": wall,
                     "rate": frames / wall, "inside": inside,
                     "coordination": f"{coordination}; committer {committer}"})
    return rows


def empty_task(task: Task, run: str) -> TaskOutcome:
    """A task with nothing to do: what is left of its time is coordination."""
    from distributed import get_worker

    now = time.time()
    return TaskOutcome(task.id, [], [], get_worker().address, threading.get_ident(), now,
                       time.time(), 0)


def per_task_overhead(tasks: int, work: Path) -> dict:
    """Empty tasks through the driver's own hand-out and commit loop, on a `dask scheduler`
    and two `dask worker` processes (one thread each): wall time per task, the scheduler
    process's CPU time per task, and the driver's idle-gap figure."""
    from distributed import Client

    from daemon.tools.reprocess.driver import Driver, RunOptions

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    address_file = work / "scheduler.json"
    dask = Path(sys.executable).with_name("dask")
    log = (work / "cluster.log").open("ab")
    processes = [subprocess.Popen([str(dask), "scheduler", "--host", "127.0.0.1", "--port", "0",
                                   "--dashboard-address", ":0", "--scheduler-file",
                                   str(address_file)], stdout=log, stderr=log, env=env)]
    try:
        while not address_file.exists():
            time.sleep(0.1)
        address = json.loads(address_file.read_text())["address"]
        processes += [subprocess.Popen([str(dask), "worker", address, "--nthreads", "1",
                                        "--dashboard-address", ":0"], stdout=log, stderr=log,
                                       env=env) for _ in range(2)]
        with Client(address) as client:
            client.wait_for_workers(2, timeout=120)
            store_path = work / "empty.zarr"
            store, journal = ResultsStore(store_path), Journal(str(store_path) + ".journal.sqlite")
            driver = Driver(client, Committer(store, journal), RunOptions(address, 0, 4),
                            function=empty_task)
            cpu_before = client.run_on_scheduler(time.process_time)
            driver.process([Task(i, "", "", ()) for i in range(tasks)], Config(), "default")
            cpu = client.run_on_scheduler(time.process_time) - cpu_before
            # What the scheduler spends as long again with nothing to do (heartbeats, ticks).
            idle_before = client.run_on_scheduler(time.process_time)
            time.sleep(driver.took)
            cpu -= client.run_on_scheduler(time.process_time) - idle_before
            store.close()
            journal.close()
    finally:
        for process in reversed(processes):
            process.terminate()
            process.wait(30)
        log.close()
    return {"tasks": tasks, "wall_ms": driver.took / tasks * 1000,
            "scheduler_cpu_ms": cpu / tasks * 1000, "tasks_per_s": tasks / driver.took,
            "gaps": driver.timings.overhead()}


def committer_rate(files: list[Path], distinct: int, work: Path) -> list[dict]:
    """Frames per second the single committer makes durable, from real results."""
    config = Config()
    bundle = load_model("default")
    analysis = Analysis.for_model(config, bundle)
    options = DecodeOptions.from_config(config.input, config.metadata)
    engine = create_engine(bundle, backend="onnxruntime", threads=2)
    rows = []
    for path in files[:distinct]:
        st = path.stat()
        key = FrameKey(path.name, st.st_size, st.st_mtime_ns)
        frame = read_frame(ReadyFile(path, key, time.monotonic()), options)
        rows.append(FrameRow.of(analysis.measure(analysis.infer(engine, [frame])[0])))
    engine.close()
    encode = []
    for row in rows:  # what a worker spends making a row (mask compression included)
        started = time.perf_counter()
        FrameRow.of(row.result())
        encode.append(time.perf_counter() - started)
    sizes = len(pickle.dumps(TaskOutcome(0, rows, [], "w", 0, 0.0, 0.0, 1))) / len(rows)
    results = []
    for batch in (9, 36, 144):
        store_path = work / f"committer-{batch}.zarr"
        store, journal = ResultsStore(store_path), Journal(str(store_path) + ".journal.sqlite")
        committer = Committer(store, journal)
        total = max(batch * 6, 288)
        made = [replace(rows[i % len(rows)], key=FrameKey(f"P/f{i}.tiff", 1, i))
                for i in range(total)]
        started = time.perf_counter()
        for i in range(0, total, batch):
            committer.commit([TaskOutcome(i, made[i:i + batch], [], "w", 0, 0.0, 0.0, 1)])
        took = time.perf_counter() - started
        store.close()
        journal.close()
        results.append({"batch": batch, "frames": total, "rate": total / took,
                        "ms_per_append": took / (total / batch) * 1000})
    flagged = sum(r.n_artifacts > 0 for r in rows)
    return [*results, {"bytes_per_frame": sizes, "encode_ms": statistics.median(encode) * 1000,
                       "with_artifacts": f"{flagged}/{len(rows)}"}]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plates", type=int, default=2)
    parser.add_argument("--wells", type=int, default=24)
    parser.add_argument("--fields", type=int, default=4)
    parser.add_argument("--size", type=int, default=1080)
    parser.add_argument("--distinct", type=int, default=24, help="frames drawn, then linked")
    parser.add_argument("--noop-tasks", type=int, default=2000)
    parser.add_argument("--work", type=Path, default=None, help="default: a temporary folder")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = Path(tmp)
        files = make_archive(work / "archive", args.plates, args.wells, args.fields, args.size,
                             args.distinct)
        frames = len(files)
        print(f"archive: {args.plates} plates x {args.wells} wells x {args.fields} fields = "
              f"{frames} frames of {args.size}x{args.size} uint16 ({args.distinct} distinct)\n")
        print("| | wall s | frames/s (wall) | frames/s (cluster up) | coordination |")
        print("|---|---:|---:|---:|---|")
        for row in side_by_side(work / "archive", work, frames):
            inside = f"{row['inside']:.1f}" if row["inside"] is not None else "–"
            print(f"| {row['what']} | {row['wall']:.1f} | {row['rate']:.1f} | {inside} | "
                  f"{row['coordination']} |")
        overhead = per_task_overhead(args.noop_tasks, work)
        print(f"\nempty tasks: {overhead['tasks']}, {overhead['wall_ms']:.2f} ms wall per task "
              f"({overhead['tasks_per_s']:.0f} tasks/s), scheduler CPU "
              f"{overhead['scheduler_cpu_ms']:.2f} ms per task; coordination: "
              f"{overhead['gaps']}\n")
        *rates, sizes = committer_rate(files, args.distinct, work)
        print("| committer batch (frames) | frames committed | frames/s | ms per append |")
        print("|---:|---:|---:|---:|")
        for r in rates:
            print(f"| {r['batch']} | {r['frames']} | {r['rate']:.0f} | {r['ms_per_append']:.1f} |")
        print(f"\nper frame sent back by a task: {sizes['bytes_per_frame']:.0f} bytes (rows + zstd "
              f"mask; {sizes['with_artifacts']} frames with artifacts); making it on the worker "
              f"{sizes['encode_ms']:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
