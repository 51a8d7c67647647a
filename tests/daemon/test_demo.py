"""`make demo` as a newcomer runs it: the real service on a simulated plate, end to end."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.daemon.service_helpers import free_port


def test_the_demo_runs_the_service_on_a_simulated_plate_and_reports_it(tmp_path):
    out = tmp_path / "demo-output"
    run = subprocess.run(
        [sys.executable, "-m", "daemon.tools.demo", "--out", str(out), "--fields", "1",
         "--size", "256", "--port", str(free_port())],
        capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "alerts raised:" in run.stdout
    assert "optics alert" in run.stdout, "the simulated smudge is named as dirt on the optics"
    summary = re.search(r"the simulator drew artifacts in (\d+) fields: (\d+) of them flagged, "
                        r"(\d+) missed; (\d+) clean fields flagged", run.stdout)
    assert summary, run.stdout[-2000:]
    drawn, found, missed, _ = (int(g) for g in summary.groups())
    assert drawn == found + missed and drawn > 0
    assert "96 fields in" in run.stdout
    assert (out / "plate.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "results.zarr").is_dir() and (out / "metrics.txt").stat().st_size > 0
