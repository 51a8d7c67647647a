"""How the service will flag a frame, chosen on the validation frames: the U-Net's pixel
threshold, the segment mode, the minimum artifact area and the detector threshold, each for the
model as the service runs it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from engines.data.dataset import Dataset
from engines.evaluation.scoring import pooled_iou
from engines.pytorch.models import Detector, UNet, pad_multiple
from engines.runtime.analyse import AnalysisOptions, measure
from engines.runtime.modelcard import frame_flagged
from engines.runtime.postprocess import PostprocessOptions
from engines.training.batches import predict
from engines.training.options import Starting, TrainOptions

# Candidate pixel thresholds chosen among on validation. The high end matters: a U-Net trained
# on artifact-rich crops is over-confident on whole frames.
SEGMENT_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99)


def validate(dataset: Dataset, models: tuple[Detector, UNet], val_idx: np.ndarray,
             options: TrainOptions, device: torch.device,
             starting: Starting | None = None) -> Verdict:
    """Segment mode, thresholds and minimum artifact area chosen on the validation frames, for
    the model as the service runs it.

    The pixel threshold maximises pooled IoU over the frames with masks (every one segmented).
    Then, per segment mode and minimum area, the detector threshold with the best image F1 of
    the service's verdict among those flagging at most `max_false_flag_rate` of the clean
    frames: most real fields are clean, and a service that flags them is switched off.
    `starting` (fine-tuning) keeps what these frames cannot measure (see Starting).
    """
    detector, segmenter = models
    multiple = pad_multiple(options.arch)
    images = [dataset.samples[i].image for i in val_idx]
    scores = np.array([predict(detector, image, multiple, device)[0] for image in images])
    probs = [predict(segmenter, image, multiple, device) for image in images]
    results: dict[str, float] = {}
    masked = [k for k, i in enumerate(val_idx) if dataset.samples[i].mask is not None]
    segment_t = 0.5 if starting is None else starting.segment_threshold
    kept: list[str] = []
    if not masked and starting is not None:
        kept.append(f"U-Net threshold {segment_t} kept from the initial model (no validation "
                    "masks)")
    if masked:
        truths = [dataset.samples[val_idx[k]].mask > 0 for k in masked]
        by_t = {t: pooled_iou([probs[k] >= t for k in masked], truths) for t in SEGMENT_THRESHOLDS}
        segment_t = max(by_t, key=by_t.get)
        results["val_pixel_iou"] = round(by_t[segment_t], 4)
    # Artifact counts per minimum area, as the service would find them (every frame segmented).
    def counts(area: int) -> np.ndarray:
        service = AnalysisOptions(1.0, True, PostprocessOptions(threshold=segment_t,
                                                                min_area_px=area))
        return np.array([measure(s, p, image, service).n_artifacts
                         for s, p, image in zip(scores, probs, images, strict=True)])

    found = {area: counts(area) for area in min_area_candidates(options.min_area_px)}
    truth = dataset.labels[val_idx]
    floor = (0.0 if starting is None else
             starting.detector_floor(int(np.sum(truth == 0)), options.max_false_flag_rate))
    segment = options.segment
    if floor:
        segment = starting.segment if options.segment == "auto" else options.segment
        kept.append(f"segment {segment}, minimum area {starting.min_area_px} px and a "
                    f"detector threshold of at least {floor}, the initial model's: "
                    f"{int(np.sum(truth == 0))} clean validation frames cannot measure a "
                    f"{options.max_false_flag_rate:.0%} false-flag rate")
        area = starting.min_area_px
        found = {area: found[area] if area in found else counts(area)}
    verdict = choose_verdict(scores, truth, found, segment, options.max_false_flag_rate, floor)
    results["val_image_f1"] = round(verdict.f1, 4)
    results["val_false_flag_rate"] = round(verdict.false_flag_rate, 4)
    return replace(verdict, segment_threshold=segment_t, validation=results, kept=tuple(kept))


def min_area_candidates(least: int) -> tuple[int, ...]:
    """Minimum artifact areas validation chooses among: a U-Net that finds specks in clean
    fields of an unfamiliar plate is quieted by a larger one."""
    return (least, 2 * least, 4 * least, 8 * least)


@dataclass(frozen=True, slots=True)
class Verdict:
    """How the service turns the networks' outputs into a flag, as validation chose it."""

    segment: str
    detect_threshold: float
    min_area_px: int
    f1: float
    false_flag_rate: float
    segment_threshold: float = 0.5
    validation: dict[str, float] = field(default_factory=dict)
    kept: tuple[str, ...] = ()  # what was kept from the initial model, and why


def choose_verdict(scores: np.ndarray, truth: np.ndarray, found: np.ndarray | dict[int, np.ndarray],
                   segment: str, max_false_flag_rate: float = 1.0,
                   floor: float = 0.0) -> Verdict:
    """For "auto", "all" only where the U-Net's findings on every frame make the verdict
    better than the detector alone (a U-Net trained on pseudo-masks may find specks in clean
    frames; one trained on masks finds faint dirt). `found` is the segmenter's artifact count
    per frame, or such counts per candidate minimum area. Choices meeting the false-flag cap
    come first, then the better F1; ties go to the first: "flagged" (less work), smaller area."""
    by_area = found if isinstance(found, dict) else {40: found}
    smallest = min(by_area)
    modes = ("flagged", "all") if segment == "auto" else (segment,)
    chosen, best_key = None, None
    for mode in modes:
        for area, counts in sorted(by_area.items()):
            if mode == "flagged" and area != smallest:
                continue  # only the U-Net's findings on every frame change the verdict
            counted = counts if mode == "all" else np.zeros_like(counts)
            t, f1, ffr = verdict_quality(scores, truth, counted, max_false_flag_rate, floor)
            meets = within_cap(ffr, max_false_flag_rate)
            key = (meets, f1 if meets else -ffr, f1)
            if best_key is None or key > best_key:
                chosen, best_key = Verdict(mode, t, area, f1, ffr), key
    return chosen


def within_cap(false_flag_rate: float, cap: float) -> bool:
    """Whether a choice flags at most `cap` of the clean frames (rounding aside)."""
    return false_flag_rate <= cap + 1e-9


def best_f1_threshold(scores: np.ndarray, truth: np.ndarray, found: np.ndarray | None = None,
                      max_false_flag_rate: float = 1.0) -> tuple[float, float]:
    """The detector threshold with the best image F1 of the verdict `frame_flagged` gives,
    among those flagging at most `max_false_flag_rate` of the clean frames (where none does:
    the one flagging fewest); `found` holds the segmenter's artifact count per frame (zeros:
    the detector alone)."""
    return verdict_quality(scores, truth, found, max_false_flag_rate)[:2]


def verdict_quality(scores: np.ndarray, truth: np.ndarray, found: np.ndarray | None,
                    max_false_flag_rate: float, floor: float = 0.0
                    ) -> tuple[float, float, float]:
    """(threshold, image F1, clean-field false-flag rate) of the best detector threshold, none
    below `floor`.

    Where several thresholds are equally good (a small validation set), the middle one of the
    best run is taken: the widest margin on both sides, not the edge that just passes."""
    found = np.zeros(len(scores), dtype=np.int64) if found is None else found
    clean = max(1, int(np.sum(truth == 0)))
    candidates = []
    grid = ([t for t in np.arange(0.05, 0.96, 0.05) if t >= floor - 1e-9]
            or [math.ceil(floor * 100) / 100])  # rounded up: never below the floor
    for t in grid:
        flagged = np.array([frame_flagged(s, n, t) for s, n in zip(scores, found, strict=True)])
        tp = np.sum(flagged & (truth == 1))
        f1 = 2 * tp / max(1, flagged.sum() + (truth == 1).sum())
        ffr = np.sum(flagged & (truth == 0)) / clean
        meets = within_cap(ffr, max_false_flag_rate)
        rank = (meets, f1 if meets else -ffr, f1)
        candidates.append((rank, (float(round(t, 2)), float(f1), float(ffr))))
    best = max(key for key, _ in candidates)
    run = _first_run([key == best for key, _ in candidates])
    return candidates[run[len(run) // 2]][1]


def _first_run(hits: list[bool]) -> list[int]:
    """Indices of the first run of consecutive True values."""
    start = hits.index(True)
    end = start
    while end + 1 < len(hits) and hits[end + 1]:
        end += 1
    return list(range(start, end + 1))
