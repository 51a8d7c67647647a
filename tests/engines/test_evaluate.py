"""`artifactd eval` on a tiny held-out set: every metric, the baselines, the report files."""

from __future__ import annotations

import argparse
import json

from engines.evaluate import add_arguments, main
from engines.synth import SynthOptions, write_dataset


def test_eval_writes_json_markdown_and_plot_with_baselines(tiny_models, tmp_path):
    data = write_dataset(tmp_path / "heldout", 6, seed=99, options=SynthOptions(height=128, width=128),
                         progress=False)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    out = tmp_path / "eval"
    args = parser.parse_args(["--model", str(tiny_models["supervised"]), "--frames", str(data / "frames"),
                              "--labels", str(data / "labels.csv"), "--masks", str(data / "masks"),
                              "--out", str(out), "--threads", "1"])
    assert main(args) == 0
    report = json.loads((out / "eval.json").read_text())
    methods = [r["method"] for r in report["results"]]
    assert methods == ["artifactd (supervised)", "global Otsu", "local adaptive threshold"]
    for result in report["results"]:
        assert set(result["image"]) == {"precision", "recall", "f1", "accuracy"}
        assert set(result["pixel"]) == {"iou", "dice", "precision", "recall"}
        assert 0.0 <= result["object_f1_iou50"] <= 1.0
        curve = list(result["ap_curve"].values())
        assert len(curve) == 10 and curve == sorted(curve, reverse=True)
        assert result["seconds_per_frame"] > 0
        assert "small_artifact_recall" in result
    table = (out / "eval.md").read_text()
    assert table.count("\n") == 2 + len(methods)
    assert (out / "ap_curve.png").read_bytes()[:4] == b"\x89PNG"


def test_eval_refuses_a_missing_model(tmp_path, caplog):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--model", str(tmp_path / "nothing"), "--frames", str(tmp_path),
                              "--labels", str(tmp_path / "l.csv"), "--out", str(tmp_path / "o")])
    assert main(args) == 2
    assert "model.json" in caplog.text
