"""Adaptation to a new lab's images: fine-tune the shipped model on ~100 labelled frames.

    python -m bench.adapt [--work runs/adapt] [--renderer caustic] [--train 100] [--test 200]
                          [--plate-seed N] [--train-args "--fixed-layers 2"]

Renders --train frames of a renderer the shipped model never saw (labels only: no masks are
given to training) and --test held-out frames of it, evaluates the shipped model on the test
frames, runs `artifactd train --init default --mode weak` with the command line's own
defaults (timed, as a user would run it), and evaluates the fine-tuned model on the same test
frames. Prints one JSON line and a markdown row for bench/RESULTS.md.

With --plate-seed, every frame is a field of one plate (`artifactd synth --plate-seed`: one
kind of cells, stain and optics), as a lab's own labelled frames are: train and test frames
are other fields of that plate.

--train-args are added to the fine-tune's command line (the quick fine-tune: "--fixed-layers
2"); its model and evaluation are kept apart from the defaults' (`model-fixed-layers-2`).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

TRAIN_SEED, TEST_SEED = 401, 9401


def artifactd(*args: str) -> None:
    print("$ artifactd", " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "daemon.cli", *args], check=True)


def rendered(folder: Path, renderer: str, seed: int, count: int,
             plate_seed: int | None = None, artifact_probability: float = 0.5) -> Path:
    """1080 x 1080 uint16 frames with masks (made once: kept where they already are)."""
    if not (folder / "labels.csv").is_file():
        plate = [] if plate_seed is None else ["--plate-seed", str(plate_seed)]
        artifactd("synth", "--out", str(folder), "--count", str(count), "--seed", str(seed),
                  "--size", "1080", "--renderer", renderer, *plate,
                  "--artifact-probability", str(artifact_probability))
    return folder


def evaluated(model: str, test: Path, out: Path) -> dict:
    if not (out / "eval.json").is_file():
        artifactd("eval", "--model", model, "--frames", str(test / "frames"), "--labels",
                  str(test / "labels.csv"), "--masks", str(test / "masks"), "--out", str(out),
                  "--no-baselines")
    result, alone = json.loads((out / "eval.json").read_text())["results"][:2]
    return {"image_f1": result["image"]["f1"],
            "false_flag_rate": result["image"]["false_flag_rate"],
            "recall": result["image"]["recall"], "pixel_iou": result["pixel"]["iou"],
            "unfamiliarity_median": result.get("unfamiliarity_median"),
            "detector_roc_auc": alone.get("detector_roc_auc")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("runs/adapt"))
    parser.add_argument("--renderer", default="caustic")
    parser.add_argument("--train", type=int, default=100)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--plate-seed", type=int, help="all frames fields of one plate")
    parser.add_argument("--train-args", default="", help="more `artifactd train` arguments")
    args = parser.parse_args()
    work = args.work
    train = rendered(work / "train", args.renderer, TRAIN_SEED, args.train, args.plate_seed)
    test = rendered(work / "test", args.renderer, TEST_SEED, args.test, args.plate_seed)
    before = evaluated("default", test, work / "eval-default")
    extra = shlex.split(args.train_args)
    variant = "".join(f"-{a.lstrip('-')}" for a in extra)
    model = work / f"model{variant}"
    started = time.perf_counter()
    artifactd("train", "--init", "default", "--mode", "weak", "--frames", str(train / "frames"),
              "--labels", str(train / "labels.csv"), "--out", str(model), "--overwrite", *extra)
    minutes = (time.perf_counter() - started) / 60
    after = evaluated(str(model), test, work / f"eval-tuned{variant}")
    summary = {"renderer": args.renderer, "plate_seed": args.plate_seed, "train_args": extra,
               "train_frames": args.train, "test_frames": args.test,
               "fine_tune_minutes": round(minutes, 2), "before": before, "after": after}
    print(json.dumps(summary))
    print(f"| {args.renderer} | {args.train} | {minutes:.1f} min | "
          f"{before['image_f1']:.3f} → {after['image_f1']:.3f} | "
          f"{before['false_flag_rate']:.3f} → {after['false_flag_rate']:.3f} | "
          f"{before['pixel_iou']:.3f} → {after['pixel_iou']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
