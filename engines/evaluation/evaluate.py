"""`artifactd eval`: a model (and the classical baselines) against ground truth.

The model runs exactly as deployed: the engine the service uses, the detector on every frame,
the segmenter on every frame or on the flagged ones (as the model card says, or --segment),
then the service's post-processing and verdict: the same `engines.runtime.analyse` the service
calls. The folder's frames are judged in order as one plate, with the service's plate-relative
verdict (engines.runtime.plate_baseline); the detector's own verdict is reported beside it
("detector alone"). Baselines (global Otsu and local adaptive threshold on the raw frame,
seed 000) see the same frames. Results go to eval.json, eval.md (the table for a model card)
and ap_curve.png.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from engines.data.dataset import Dataset, DatasetError, load_dataset
from engines.evaluation.baselines import adaptive_baseline, otsu_baseline
from engines.evaluation.scoring import (
    AP_THRESHOLDS,
    PixelCounts,
    ap_curve,
    image_scores,
    match_objects,
    pixel_counts,
    pixel_scores,
    pooled_object_f1,
    ranking_auc,
    size_mae,
)
from engines.files import replace_atomically, write_text_atomically
from engines.runtime.analyse import AnalysisOptions, analyse
from engines.runtime.familiarity import UNFAMILIAR, Familiarity
from engines.runtime.modelcard import (
    SEGMENT_MODES,
    ModelBundle,
    ModelError,
    load_model,
)
from engines.runtime.plate_baseline import PlateBaseline, PlateBaselineOptions, plate_verdict
from engines.runtime.postprocess import label

logger = logging.getLogger(__name__)

# "Small" artifacts for the detectability target: ~50 um^2 is ~150 px at 0.6 um/px.
SMALL_PX = (100, 300)


@dataclass(slots=True)
class MethodRun:
    """Predictions of one method over the evaluation frames."""

    name: str
    flags: list[bool] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    unfamiliarity: list[float] = field(default_factory=list)  # the model's own runs only
    scores: list[float] = field(default_factory=list)  # the detector's, on its own row only


def run_model(bundle: ModelBundle, dataset: Dataset, backend: str, threads: int,
              segment: str | None = None, detect_threshold: float | None = None,
              plate: PlateBaselineOptions | None = None) -> list[MethodRun]:
    """The model as deployed (the frames judged as one plate, in order, against each other:
    engines.runtime.plate_baseline), and the detector's own verdict beside it."""
    from engines.select import create_engine

    engine = create_engine(bundle, backend=backend, threads=threads)
    card = bundle.card
    options = AnalysisOptions.from_card(card, segment, detect_threshold)
    name = f"artifactd ({card.mode})"
    alone = MethodRun(f"{name}, detector alone")
    familiarity = Familiarity.from_dict(card.familiarity)
    founds = []
    try:
        for sample in tqdm(dataset.samples, desc="model", unit="frame"):
            started = time.perf_counter()
            (found,) = analyse(engine, sample.image[None], options, familiarity=familiarity)
            alone.seconds.append(time.perf_counter() - started)
            alone.flags.append(found.flagged)
            alone.scores.append(found.score)
            alone.labels.append(found.labels)
            if familiarity is not None:
                alone.unfamiliarity.append(found.unfamiliarity)
            founds.append(found)
    finally:
        engine.close()
    deployed = against_one_plate(name, alone, founds, options, plate or PlateBaselineOptions())
    return [deployed, alone]


def against_one_plate(name: str, alone: MethodRun, founds: list, options: AnalysisOptions,
                      plate: PlateBaselineOptions) -> MethodRun:
    """The service's plate-relative verdict over the frames, in the order given."""
    baseline = PlateBaseline(plate)
    run = MethodRun(name, seconds=alone.seconds, unfamiliarity=alone.unfamiliarity)
    for found in founds:
        stands = baseline.stands_out("", found.score)
        flagged, keep = plate_verdict(found.score, found.n_artifacts, stands,
                                      options.detect_threshold, options.segment_all)
        run.flags.append(flagged)
        run.labels.append(found.labels if keep else np.zeros_like(found.labels))
    return run


def run_baseline(name: str, method, dataset: Dataset, min_area_px: int) -> MethodRun:
    run = MethodRun(name)
    for sample in tqdm(dataset.samples, desc=name, unit="frame"):
        started = time.perf_counter()
        mask = method(sample.image[0], min_area_px=min_area_px)
        run.seconds.append(time.perf_counter() - started)
        run.flags.append(bool(mask.any()))
        run.labels.append(label(mask))
    return run


def score_run(run: MethodRun, dataset: Dataset) -> dict:
    truth_flags = dataset.labels.astype(bool)
    result: dict = {"method": run.name, "frames": len(run.flags)}
    result["image"] = image_scores(np.array(run.flags), truth_flags)
    if run.scores:  # how well the detector's scores rank artifact frames above clean ones
        result["detector_roc_auc"] = ranking_auc(np.array(run.scores), truth_flags)
    masked = dataset.with_masks
    if masked:
        counts = PixelCounts(0, 0, 0, 0)
        for i in masked:
            counts = counts + pixel_counts(run.labels[i] > 0, dataset.samples[i].mask > 0)
        result["pixel"] = pixel_scores(counts)
        truths = [dataset.samples[i].mask for i in masked]  # instance labels as drawn
        preds = [run.labels[i] for i in masked]
        matches = [match_objects(p, t, 0.5) for p, t in zip(preds, truths, strict=True)]
        pooled = pooled_object_f1(matches)
        result["object_f1_iou50"] = pooled
        errors = [size_mae(p, t, m)
                  for p, t, m in zip(preds, truths, matches, strict=True) if m.pairs]
        weights = [len(m.pairs) for m in matches if m.pairs]
        result["size_mae_px"] = float(np.average(errors, weights=weights)) if errors else math.nan
        curve = ap_curve(preds, truths, AP_THRESHOLDS)
        result["ap_curve"] = {f"{k:.2f}": v for k, v in curve.items()}
        result.update(small_artifacts(preds, truths, matches))
    result["seconds_per_frame"] = float(np.mean(run.seconds))
    if run.unfamiliarity:  # how unlike the training frames these are (engines.runtime.familiarity)
        result["unfamiliarity_median"] = float(np.median(run.unfamiliarity))
        result["unfamiliar_share"] = float(np.mean(np.array(run.unfamiliarity) > UNFAMILIAR))
    return result


def small_artifacts(preds: list[np.ndarray], truths: list[np.ndarray], matches) -> dict:
    """Of the true artifacts of SMALL_PX pixels: the share any predicted artifact overlaps
    (found) and the share matched one-to-one at IoU >= 0.5 (recall)."""
    total = found = matched = 0
    for pred, truth, match in zip(preds, truths, matches, strict=True):
        ids, areas = np.unique(truth[truth > 0], return_counts=True)
        small = set(ids[(areas >= SMALL_PX[0]) & (areas <= SMALL_PX[1])].tolist())
        if not small:
            continue
        hit = set(np.unique(truth[(truth > 0) & (pred > 0)]).tolist())
        paired = {t for _, t, _ in match.pairs}
        total += len(small)
        found += len(small & hit)
        matched += len(small & paired)
    return {
        "small_artifacts": total,
        "small_artifact_found": found / total if total else math.nan,
        "small_artifact_recall": matched / total if total else math.nan,
    }


def markdown_table(results: list[dict]) -> str:
    head = ("| method | image F1 | image precision | image recall | clean false-flag rate "
            "| pixel IoU | Dice | pixel precision | pixel recall | object F1 @0.5 | size MAE (px) "
            "| small found | detector ROC AUC | s/frame |")
    lines = [head, "|" + "---|" * 14]
    for r in results:
        px = r.get("pixel", {})
        cells = [
            r["method"], r["image"]["f1"], r["image"]["precision"], r["image"]["recall"],
            r["image"].get("false_flag_rate"),
            px.get("iou"), px.get("dice"), px.get("precision"), px.get("recall"),
            r.get("object_f1_iou50"), r.get("size_mae_px"), r.get("small_artifact_found"),
            r.get("detector_roc_auc"), r["seconds_per_frame"],
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(value) -> str:
    """A figure to 3 decimals; "–" where there was nothing to measure (no small artifacts)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def plot_ap(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(5, 3.5))
    for r in results:
        if "ap_curve" in r:
            xs = [float(k) for k in r["ap_curve"]]
            axes.plot(xs, list(r["ap_curve"].values()), marker="o", label=r["method"])
    axes.set_xlabel("IoU threshold")
    axes.set_ylabel("AP = TP / (TP + FP + FN)")
    axes.set_ylim(0, 1)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    # The temporary name has no .png suffix to guess the format from.
    replace_atomically(path, lambda tmp: figure.savefig(tmp, dpi=120, format="png"))
    plt.close(figure)


def evaluate(bundle: ModelBundle, dataset: Dataset, *, backend: str = "onnxruntime",
             threads: int = 0, baselines: bool = True, segment: str | None = None,
             detect_threshold: float | None = None,
             plate: PlateBaselineOptions | None = None) -> list[dict]:
    runs = run_model(bundle, dataset, backend, threads, segment, detect_threshold, plate)
    if baselines:
        min_area = bundle.card.min_area_px
        runs.append(run_baseline("global Otsu", otsu_baseline, dataset, min_area))
        runs.append(run_baseline("local adaptive threshold", adaptive_baseline, dataset, min_area))
    return [score_run(run, dataset) for run in runs]


def write_report(results: list[dict], out: Path, meta: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    report = json.dumps({"meta": meta, "results": results}, indent=2) + "\n"
    write_text_atomically(out / "eval.json", report)
    write_text_atomically(out / "eval.md", markdown_table(results))
    plot_ap(results, out / "ap_curve.png")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="default",
                        help="model folder (default: the shipped model)")
    parser.add_argument("--frames", type=Path, required=True, help="folder of frames")
    parser.add_argument("--labels", type=Path, required=True, help="CSV source,label")
    parser.add_argument("--masks", type=Path,
                        help="folder of ground-truth masks (same relative paths)")
    parser.add_argument("--out", type=Path, required=True,
                        help="folder for eval.json, eval.md, ap_curve.png")
    parser.add_argument("--backend", default="onnxruntime",
                        help="inference backend (as the service)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: all cores)")
    parser.add_argument("--segment", choices=SEGMENT_MODES,
                        help="frames the segmenter runs on (default: as the model card says)")
    parser.add_argument("--detect-threshold", type=float, metavar="P",
                        help="flag frames the detector scores at least P (default: the model "
                             "card's); as [model] detect_threshold in the service")
    parser.add_argument("--no-baselines", action="store_true",
                        help="skip the thresholding baselines")


def main(args: argparse.Namespace) -> int:
    if args.detect_threshold is not None and not 0 < args.detect_threshold < 1:
        logger.error("--detect-threshold %s: expected a probability between 0 and 1",
                     args.detect_threshold)
        return 2
    try:
        bundle = load_model(args.model)
        dataset = load_dataset(args.frames, args.labels, args.masks,
                               in_channels=bundle.card.in_channels, require_both_classes=False)
    except (DatasetError, ModelError) as exc:
        logger.error("%s", exc)
        return 2
    results = evaluate(bundle, dataset, backend=args.backend, threads=args.threads,
                       baselines=not args.no_baselines, segment=args.segment,
                       detect_threshold=args.detect_threshold)
    meta = {"model": bundle.model_id, "frames": str(args.frames), "n_frames": len(dataset.samples),
            "segment": args.segment or bundle.card.segment,
            "detect_threshold": args.detect_threshold or bundle.card.detect_threshold,
            "data_hash": dataset.fingerprint}
    write_report(results, args.out, meta)
    print(markdown_table(results))
    logger.info("evaluation written to %s", args.out)
    return 0
