"""`artifactd eval` on a tiny held-out set: every metric, the baselines, the report files."""

from __future__ import annotations

import argparse
import json

from engines.data.synth import SynthOptions, frame_for, write_dataset
from engines.evaluation.evaluate import add_arguments, main


def test_eval_writes_json_markdown_and_plot_with_baselines(tiny_models, tmp_path):
    data = write_dataset(tmp_path / "heldout", 6, seed=99,
                         options=SynthOptions(height=128, width=128), progress=False)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    out = tmp_path / "eval"
    args = parser.parse_args(["--model", str(tiny_models["supervised"]),
                              "--frames", str(data / "frames"),
                              "--labels", str(data / "labels.csv"), "--masks", str(data / "masks"),
                              "--out", str(out), "--threads", "1"])
    assert main(args) == 0
    report = json.loads((out / "eval.json").read_text())
    methods = [r["method"] for r in report["results"]]
    assert methods == ["artifactd (supervised)", "artifactd (supervised), detector alone",
                       "global Otsu", "local adaptive threshold"]
    # The frames judged as one plate: the plate can only withdraw the detector's flags.
    deployed, alone = report["results"][:2]
    assert deployed["image"]["false_flag_rate"] <= alone["image"]["false_flag_rate"]
    assert deployed["image"]["recall"] <= alone["image"]["recall"]
    assert 0.0 <= alone["detector_roc_auc"] <= 1.0  # the detector's ranking, on its own row
    assert "detector_roc_auc" not in deployed
    for result in report["results"]:
        assert set(result["image"]) == {"precision", "recall", "f1", "accuracy", "false_flag_rate"}
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


def test_eval_runs_the_segmenter_as_the_card_says_and_flags_what_it_finds(tmp_path):
    """A detector that never flags (threshold above 1): with the segmenter on every frame the
    obvious artifact is still found and its frame flagged; on flagged frames only, it is not."""
    import shutil

    import numpy as np
    import tifffile

    from engines.runtime.modelcard import DEFAULT_MODEL_DIR

    model = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL_DIR, model)
    card = json.loads((model / "model.json").read_text())
    card.update(detect_threshold=1.01, segment="all")
    (model / "model.json").write_text(json.dumps(card))
    frame = frame_for(123, 0, SynthOptions(height=512, width=512, artifact_probability=0.0)).image
    yy, xx = np.mgrid[:512, :512]
    speck = (yy - 300) ** 2 + (xx - 200) ** 2 <= 18**2
    dirty = frame.astype(np.float64)
    dirty[speck] *= 0.35
    for kind, image in (("frames", dirty.astype(np.uint16)), ("masks", speck.astype(np.uint8))):
        (tmp_path / kind).mkdir()
        tifffile.imwrite(tmp_path / kind / "dirty.tif", image)
    (tmp_path / "labels.csv").write_text("source,label\ndirty.tif,artifact\n")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    reports = {}
    for segment in ("card", "flagged"):
        out = tmp_path / f"eval-{segment}"
        argv = ["--model", str(model), "--frames", str(tmp_path / "frames"), "--labels",
                str(tmp_path / "labels.csv"), "--masks", str(tmp_path / "masks"), "--out", str(out),
                "--threads", "1", "--no-baselines"]
        if segment != "card":
            argv += ["--segment", segment]
        assert main(parser.parse_args(argv)) == 0
        reports[segment] = json.loads((out / "eval.json").read_text())
    every, gated = reports["card"], reports["flagged"]
    assert every["meta"]["segment"] == "all" and gated["meta"]["segment"] == "flagged"
    assert every["results"][0]["image"]["recall"] == 1.0
    assert every["results"][0]["pixel"]["iou"] > 0.5
    assert gated["results"][0]["image"]["recall"] == 0.0
    assert gated["results"][0]["pixel"]["iou"] == 0.0


def test_eval_flags_at_the_threshold_it_is_given(tiny_models, tmp_path, caplog):
    """--detect-threshold judges the model as the service does with [model] detect_threshold:
    a threshold just above 0 flags every frame; a value outside (0, 1) is refused by name."""
    data = write_dataset(tmp_path / "heldout", 6, seed=99,
                         options=SynthOptions(height=128, width=128), progress=False)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    common = ["--model", str(tiny_models["supervised"]), "--frames", str(data / "frames"),
              "--labels", str(data / "labels.csv"), "--no-baselines", "--threads", "1"]
    out = tmp_path / "eval"
    assert main(parser.parse_args([*common, "--out", str(out), "--detect-threshold",
                                   "1e-9"])) == 0
    report = json.loads((out / "eval.json").read_text())
    assert report["meta"]["detect_threshold"] == 1e-9
    assert report["results"][0]["image"]["recall"] == 1.0
    assert main(parser.parse_args([*common, "--out", str(tmp_path / "no"),
                                   "--detect-threshold", "1.5"])) == 2
    assert "--detect-threshold 1.5: expected a probability between 0 and 1" in caplog.text


def test_the_table_says_nothing_was_measured_rather_than_nan():
    from engines.evaluation.evaluate import markdown_table

    row = {"method": "m", "image": {"f1": 0.5, "precision": 0.5, "recall": 0.5,
                                    "false_flag_rate": 0.25},
           "pixel": {"iou": 0.1, "dice": 0.2, "precision": 0.3, "recall": 0.4},
           "object_f1_iou50": 0.0, "size_mae_px": 1.0, "small_artifact_found": float("nan"),
           "seconds_per_frame": 0.05}
    line = markdown_table([row]).splitlines()[-1]
    assert "nan" not in line
    assert line.split(" | ")[-3] == "–" and "0.250" in line
    assert line.split(" | ")[-2] == "–"  # no detector ranking on this row
