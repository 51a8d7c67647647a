"""Helpers for tests that run the real service as a subprocess."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import tifffile

from daemon.frames import FrameKey
from daemon.results.store import ResultsStore
from engines.data.synth import SynthOptions, frame_for

REPO = Path(__file__).resolve().parents[2]


def operetta_name(index: int) -> str:
    row, column = divmod(index // 4, 12)
    return f"r{row + 1:02d}c{column + 1:02d}f{index % 4 + 1:02d}p01-ch1sk1fk1fl1.tiff"


def write_frames(
    folder: Path, count: int, *, size: int = 192, seed: int = 7, start: int = 0
) -> list[Path]:
    """Synthetic frames named as an Operetta writes them, in a plate folder."""
    plate = folder / "Plate1"
    plate.mkdir(parents=True, exist_ok=True)
    paths = []
    options = SynthOptions(height=size, width=size, artifact_probability=0.5)
    for i in range(start, start + count):
        frame = frame_for(seed, i, options)
        path = plate / operetta_name(i)
        tifffile.imwrite(path, frame.image)
        paths.append(path)
    return paths


def config_file(tmp_path: Path, *, input_dir: Path, store: Path, **sections: dict) -> Path:
    """A TOML config; sections given as {"pipeline": {"max_batch": 2}}."""
    base = {
        "input": {"folder": str(input_dir), "settle_s": 0.5},
        "output": {"store": str(store)},
        "metrics": {"port": 0},
        "web": {"port": 0},  # the plate page on any free port: services side by side
        "service": {"drain_timeout_s": 30.0},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    lines = []
    for name, values in base.items():
        lines.append(f"[{name}]")
        for key, value in values.items():
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, str):
                text = '"' + value.replace("\\", "\\\\") + '"'
            else:
                text = repr(value)
            lines.append(f"{key} = {text}")
    path = tmp_path / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def start_service(
    config: Path, *extra: str, log: Path, env: dict | None = None
) -> subprocess.Popen:
    handle = log.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "daemon.cli", "run", "--config", str(config), *extra],
        cwd=REPO, stdout=handle, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )


def run_once(config: Path, log: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    with log.open("ab") as handle:
        return subprocess.run(
            [sys.executable, "-m", "daemon.cli", "run", "--config", str(config), "--once"],
            cwd=REPO, stdout=handle, stderr=subprocess.STDOUT, timeout=timeout,
        )


def stored_sources(store: Path) -> list[str]:
    if not store.exists():
        return []
    try:
        reader = ResultsStore(store, read_only=True)
    except Exception:
        return []  # not created yet
    try:
        return [str(s) for s in reader.frame_table()["source"]]
    finally:
        reader.close()


def wait_for(condition, timeout: float, what: str, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def metrics_port(log: Path, timeout: float = 60) -> int:
    """The port the service logged for /metrics (tests ask for port 0: any free port)."""
    found: list[int] = []

    def logged() -> bool:
        for line in log.read_text(errors="replace").splitlines():
            if "metrics at http://" in line:
                found.append(int(line.rsplit(":", 1)[1].split("/")[0]))
                return True
        return False

    wait_for(logged, timeout, "the metrics listener")
    return found[0]


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()


def tree_digest(folder: Path) -> dict[str, str]:
    """Content hash of every file under folder: the user's data must never change."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*")) if p.is_file() and os.access(p, os.R_OK)
    }


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
    process.send_signal(sig)
    return process.wait(timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def journaled_keys(journal: Path) -> set[FrameKey]:
    """Every file version a journal holds, read with plain sqlite3."""
    with contextlib.closing(sqlite3.connect(journal)) as conn:
        rows = conn.execute("SELECT source, size, mtime_ns FROM done").fetchall()
    return {FrameKey(source, size, mtime_ns) for source, size, mtime_ns in rows}


def installed_wheel(tmp_path: Path) -> Path:
    """The project built as a wheel and unpacked away from the source tree: a folder to put on
    PYTHONPATH, holding exactly what `pip install artifactd` would (package data included)."""
    import shutil
    import zipfile

    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source)
    for name in ("daemon", "engines"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    build = subprocess.run(
        [sys.executable, "-c",
         "from setuptools import build_meta; print(build_meta.build_wheel('dist'))"],
        cwd=source, capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, build.stderr[-3000:]
    installed = tmp_path / "site-packages"
    with zipfile.ZipFile(source / "dist" / build.stdout.split()[-1]) as wheel:
        wheel.extractall(installed)
    return installed
