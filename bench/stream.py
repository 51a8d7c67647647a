"""ZeroMQ in -> verdict out latency at offered frame rates, through the real service.

    python -m bench.stream [--rates 10,50,100] [--seconds 10] [--size 1080]

Starts `artifactd run` (a subprocess, ZeroMQ + verdicts on loopback), then for each offered
rate sends frames on a fixed schedule for --seconds and measures, per frame, the time from
send to its verdict. With the default overload policy ("block") a sender faster than the
machine is slowed down rather than losing frames: the achieved rate is reported beside the
offered one, and latency then includes the queueing.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from daemon.tools.client import ArtifactClient
from engines.data.synth import SynthOptions, frame_for
from engines.files import write_text_atomically
from tests.daemon.service_helpers import config_file, free_port


def run_rate(client: ArtifactClient, images: list[np.ndarray], rate: float, seconds: float,
             tag: str) -> dict:
    sent_at: dict[str, float] = {}
    latencies: list[float] = []
    count = int(rate * seconds)
    finished = threading.Event()

    def listen() -> None:
        while len(latencies) < count:
            verdict = client.next_verdict(timeout_s=60)
            if verdict is None:
                break
            if verdict["topic"] == "verdict" and verdict["frame_id"] in sent_at:
                latencies.append(time.monotonic() - sent_at[verdict["frame_id"]])
        finished.set()

    listener = threading.Thread(target=listen)
    listener.start()
    started = time.monotonic()
    for i in range(count):
        time.sleep(max(0.0, started + i / rate - time.monotonic()))
        frame_id = f"{tag}-{i}"
        sent_at[frame_id] = time.monotonic()
        client.send(frame_id, images[i % len(images)], plate="Bench", well="A01", field=i)
    sending = time.monotonic() - started
    finished.wait(300)
    listener.join()
    return {
        "offered_fps": rate, "achieved_send_fps": count / sending, "frames": count,
        "verdicts": len(latencies),
        "latency_p50_s": float(np.percentile(latencies, 50)),
        "latency_p99_s": float(np.percentile(latencies, 99)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="10,50,100")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--size", type=int, default=1080)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-stream.json"))
    args = parser.parse_args()
    images = [frame_for(5, i, SynthOptions(height=args.size, width=args.size,
                                           artifact_probability=0.3)).image for i in range(16)]
    work = Path(tempfile.mkdtemp(prefix="artifactd-stream-"))
    frames_port, verdicts_port = free_port(), free_port()
    config = config_file(
        work, input_dir=work, store=work / "results.zarr", input={"folder": ""},
        zmq={"enabled": True, "endpoint": f"tcp://127.0.0.1:{frames_port}"},
        verdicts={"enabled": True, "endpoint": f"tcp://127.0.0.1:{verdicts_port}"},
    )
    log = (work / "service.log").open("wb")
    service = subprocess.Popen([sys.executable, "-m", "daemon.cli", "run", "--config", str(config)],
                               stdout=log, stderr=subprocess.STDOUT)
    results = []
    try:
        frames_at, verdicts_at = f"tcp://127.0.0.1:{frames_port}", f"tcp://127.0.0.1:{verdicts_port}"
        with ArtifactClient(frames_at, verdicts_at) as client:
            time.sleep(3)  # service start-up and the PUB/SUB subscription
            run_rate(client, images, 2, 3, "warmup")
            for rate in (float(r) for r in args.rates.split(",")):
                results.append(run_rate(client, images, rate, args.seconds, f"r{rate:g}"))
                print(json.dumps(results[-1]), flush=True)
    finally:
        service.send_signal(signal.SIGTERM)
        service.wait(120)
        log.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = json.dumps({"size": args.size, "results": results}, indent=2) + "\n"
    write_text_atomically(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
