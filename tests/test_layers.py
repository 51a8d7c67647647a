"""The CPU service stays lean: after a real start-up and run it has imported no torch, onnx,
TensorRT, Dask or matplotlib (what each of those is for lives in its own extra)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import tifffile

HEAVY = ("torch", "onnx", "onnxscript", "tensorrt", "pycuda", "distributed", "dask", "matplotlib")

SCRIPT = """
import json, sys
from daemon.cli import main
heavy = json.loads(sys.argv[3])
try:
    code = main(["run", "--input", sys.argv[1], "--output", sys.argv[2], "--once"])
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "heavy": sorted(m for m in heavy if m in sys.modules)}))
"""


def test_a_service_run_imports_no_torch_onnx_gpu_cluster_or_plot_library(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        tifffile.imwrite(folder / f"P1_B0{i + 2}_f1.tif", rng.integers(900, 1100, (128, 128),
                                                                        dtype=np.uint16))
    run = subprocess.run([sys.executable, "-c", SCRIPT, str(folder), str(tmp_path / "r.zarr"),
                          json.dumps(HEAVY)],
                         capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parents[1])
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report == {"code": 0, "heavy": []}, run.stderr[-2000:]
