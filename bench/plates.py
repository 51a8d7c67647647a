"""The shipped model on whole plates of renderers it never trained on, as a screen runs.

    python -m bench.plates [--work runs/plates] [--plates 8] [--frames 40]
                           [--renderers relief,caustic,particle]

A real plate is one cell line, one stain, one microscope; only the fields differ. Each plate
here is rendered so (`artifactd synth --plate-seed`): relief, caustic and particle plates
(renderers the model never trained on), at 10 % artifact prevalence (real screens) and at
50 %. Every plate is judged as `artifactd eval` judges a folder, frames in order as one plate:
as deployed (the plate-relative verdict) and by the detector alone. Counts are pooled over the
plates; a plate "switched off" is one where more than 10 % of its clean fields are flagged.
Prints a markdown table for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np

from bench.adapt import rendered
from engines.evaluation.scoring import PixelCounts, image_scores, pixel_counts, pixel_scores

SEEDS = {"relief": 9600, "caustic": 9700, "particle": 9800}  # dataset seed = this + plate seed
PREVALENCES = {"10 %": (0.1, 1), "50 %": (0.5, 101)}  # -> probability, first plate seed
METHODS = ("as deployed (plate-relative)", "detector alone")


class Pooled:
    """One method's flags, and its artifact-pixel counts, over several plates."""

    def __init__(self) -> None:
        self.flags: list[bool] = []
        self.truth: list[bool] = []
        self.pixels = PixelCounts(0, 0, 0, 0)
        self.plates = self.plates_off = 0

    def add(self, flags: list[bool], dataset, labels: list[np.ndarray]) -> None:
        truth = dataset.labels.astype(bool)
        self.flags += flags
        self.truth += truth.tolist()
        self.plates += 1
        self.plates_off += bool(image_scores(np.array(flags), truth)["false_flag_rate"] > 0.1)
        for i in dataset.with_masks:
            self.pixels = self.pixels + pixel_counts(labels[i] > 0, dataset.samples[i].mask > 0)

    def row(self) -> dict:
        image = image_scores(np.array(self.flags), np.array(self.truth))
        return {"false_flag_rate": image["false_flag_rate"], "recall": image["recall"],
                "image_f1": image["f1"], "pixel_iou": pixel_scores(self.pixels)["iou"],
                "plates_off": f"{self.plates_off} of {self.plates}"}


def judge_plate(bundle, folder: Path, pooled: dict) -> None:
    from engines.data.dataset import load_dataset
    from engines.evaluation.evaluate import run_model

    dataset = load_dataset(folder / "frames", folder / "labels.csv", folder / "masks",
                           require_both_classes=False)
    for method, run in zip(METHODS, run_model(bundle, dataset, "onnxruntime", 0), strict=True):
        pooled[method].add(run.flags, dataset, run.labels)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("runs/plates"))
    parser.add_argument("--plates", type=int, default=8, help="plates per renderer and prevalence")
    parser.add_argument("--frames", type=int, default=40, help="fields per plate")
    parser.add_argument("--model", default="default")
    parser.add_argument("--renderers", default=",".join(SEEDS),
                        help=f"comma-separated, of {', '.join(SEEDS)}")
    args = parser.parse_args()
    renderers = args.renderers.split(",")
    if unknown := [r for r in renderers if r not in SEEDS]:
        parser.error(f"--renderers: {', '.join(unknown)}: expected some of {', '.join(SEEDS)}")
    from engines.runtime.modelcard import load_model

    bundle = load_model(args.model)
    table = ["| renderer | artifact prevalence | verdict | clean fields flagged | artifact "
             "fields found | image F1 | pixel IoU | plates with > 10 % of clean fields flagged |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for renderer in renderers:
        for prevalence, (probability, first) in PREVALENCES.items():
            pooled = defaultdict(Pooled)
            for plate in range(first, first + args.plates):
                name = f"{renderer}-{int(probability * 100)}-p{plate}"
                folder = rendered(args.work / name, renderer, SEEDS[renderer] + plate,
                                  args.frames, plate, probability)
                judge_plate(bundle, folder, pooled)
            for method in METHODS:
                r = pooled[method].row()
                table.append(f"| {renderer} | {prevalence} | {method} | "
                             f"{r['false_flag_rate']:.3f} | {r['recall']:.3f} | "
                             f"{r['image_f1']:.3f} | {r['pixel_iou']:.3f} | {r['plates_off']} |")
            print("\n".join(table), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
