"""The systemd unit: the settings the service relies on, `systemd-analyze verify` and `security`."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.config import ServiceConfig

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "artifactd.service"
EXEC = "/opt/artifactd/.venv/bin/artifactd"


def settings() -> dict[str, list[str]]:
    """Key -> every value it is given (DeviceAllow= and others repeat)."""
    values: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            values.setdefault(key, []).append(value)
    return values


def systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze not found (apt-get install systemd; `make test` does)")
    version = subprocess.run([tool, "--version"], capture_output=True, text=True).stdout
    match = re.match(r"systemd (\d+)", version)
    if not match or int(match.group(1)) < 250:
        pytest.skip(f"systemd-analyze security --offline needs systemd >= 250, got {version[:20]}")
    return tool


def runnable_copy(tmp_path: Path) -> Path:
    """verify checks that ExecStart exists: point it at an executable that does."""
    text = UNIT.read_text()
    assert f"ExecStart={EXEC} run --config /etc/artifactd/config.toml" in text
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace(f"ExecStart={EXEC}", f"ExecStart={sys.executable}"))
    return copy


def test_the_unit_asks_for_what_the_service_relies_on():
    s = settings()
    single = {key: values[-1] for key, values in s.items()}
    assert single["Type"] == "notify" and single["NotifyAccess"] == "main"
    assert single["WatchdogSec"] == "30"
    assert single["Restart"] == "on-failure"
    assert single["User"] == single["Group"] == "artifactd"
    assert "DynamicUser" not in s
    # Stop must outlast the drain the service does on SIGTERM.
    assert float(single["TimeoutStopSec"]) > ServiceConfig().drain_timeout_s
    assert single["ProtectSystem"] == "strict"
    assert single["ReadWritePaths"] and single["ReadOnlyPaths"] and single["StateDirectory"]
    for key in ("NoNewPrivileges", "PrivateTmp", "ProtectHome"):
        assert single[key] == "yes", key
    assert single["CapabilityBoundingSet"] == ""
    assert single["RestrictAddressFamilies"] == "AF_UNIX AF_INET AF_INET6"
    assert "@system-service" in s["SystemCallFilter"]
    assert single["DevicePolicy"] == "closed"
    assert {"/dev/nvidiactl rw", "/dev/nvidia-uvm rw", "char-nvidia-frontend rw"} <= set(
        s["DeviceAllow"]
    )


def test_systemd_analyze_verify_passes(tmp_path):
    tool = systemd_analyze()
    run = subprocess.run(
        [tool, "verify", "--man=no", str(runnable_copy(tmp_path))],
        capture_output=True, text=True, timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert "artifactd.service" not in run.stdout + run.stderr  # no warnings either


def test_systemd_analyze_security_rates_it_ok(tmp_path):
    tool = systemd_analyze()
    run = subprocess.run(
        [tool, "security", "--offline=yes", "--threshold=25", "--no-pager",
         str(runnable_copy(tmp_path))],
        capture_output=True, text=True, timeout=60,
    )
    match = re.search(r"Overall exposure level for artifactd\.service: ([\d.]+) (\w+)", run.stdout)
    assert match, run.stdout + run.stderr
    assert float(match.group(1)) <= 2.5 and match.group(2) == "OK", match.group(0)
    assert run.returncode == 0, run.stderr
