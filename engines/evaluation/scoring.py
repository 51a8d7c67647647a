"""Evaluation metrics: small pure functions over masks, label images and per-frame flags.

Pixel level (seed 000, 003): IoU and Dice of the artifact area. Object level (seed 004,
stardist/cellpose): objects match one-to-one when their IoU reaches a threshold; F1 and
"average precision" TP / (TP + FP + FN) follow from the counts. Image level (ArtSeg, seed 001):
precision, recall, F1 and accuracy of the per-frame flag. Size (seed 003): mean absolute error
of the equivalent diameter over matched objects.

A ratio whose denominator is 0 is 1.0 when both sides are empty (nothing to find, nothing
found) and 0.0 otherwise.

Label images hold integers, 0 = background; a bool mask given where labels are expected is
labelled first with 8-connectivity, as `engines.runtime.postprocess.label` does for the service.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.stats import rankdata

from engines.runtime.postprocess import label

AP_THRESHOLDS = np.arange(0.5, 1.0, 0.05)  # 0.50, 0.55, ..., 0.95 (COCO, stardist)


@dataclass(frozen=True, slots=True)
class PixelCounts:
    tp: int
    fp: int
    fn: int
    tn: int

    def __add__(self, other: PixelCounts) -> PixelCounts:
        """Pool counts over frames (micro-averaging: large frames weigh more).

        >>> PixelCounts(1, 2, 3, 4) + PixelCounts(10, 20, 30, 40)
        PixelCounts(tp=11, fp=22, fn=33, tn=44)
        """
        return PixelCounts(
            self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.tn + other.tn
        )


@dataclass(frozen=True, slots=True)
class ObjectMatch:
    """One-to-one matching of predicted to true objects at an IoU threshold."""

    tp: int  # matched pairs
    fp: int  # predicted objects left unmatched
    fn: int  # true objects left unmatched
    pairs: tuple[tuple[int, int, float], ...]  # (pred_label, true_label, iou), by pred_label
    iou_threshold: float


def pixel_counts(pred: np.ndarray, truth: np.ndarray) -> PixelCounts:
    """Confusion counts of two masks (bool, or label images: non-zero = artifact).

    >>> pred = np.array([[1, 1, 0, 0]] * 2 + [[0, 0, 0, 0]] * 2)
    >>> truth = np.array([[0, 1, 1, 0]] * 2 + [[0, 0, 0, 0]] * 2)
    >>> pixel_counts(pred, truth)
    PixelCounts(tp=2, fp=2, fn=2, tn=10)
    """
    _check_same_shape(pred, truth)
    p, t = pred != 0, truth != 0
    tp = int(np.count_nonzero(p & t))
    fp = int(np.count_nonzero(p)) - tp
    fn = int(np.count_nonzero(t)) - tp
    return PixelCounts(tp=tp, fp=fp, fn=fn, tn=p.size - tp - fp - fn)


def pixel_scores(c: PixelCounts) -> dict[str, float]:
    """IoU, Dice, precision and recall of the artifact pixels.

    >>> pixel_scores(PixelCounts(tp=2, fp=2, fn=2, tn=10))
    {'iou': 0.3333333333333333, 'dice': 0.5, 'precision': 0.5, 'recall': 0.5}
    >>> pixel_scores(PixelCounts(tp=0, fp=0, fn=0, tn=16))
    {'iou': 1.0, 'dice': 1.0, 'precision': 1.0, 'recall': 1.0}
    >>> pixel_scores(PixelCounts(tp=0, fp=3, fn=0, tn=13))['recall']
    0.0
    """
    empty = c.tp + c.fp + c.fn == 0
    return {
        "iou": _ratio(c.tp, c.tp + c.fp + c.fn, empty),
        "dice": _ratio(2 * c.tp, 2 * c.tp + c.fp + c.fn, empty),
        "precision": _ratio(c.tp, c.tp + c.fp, empty),
        "recall": _ratio(c.tp, c.tp + c.fn, empty),
    }


def match_objects(
    pred_labels: np.ndarray, true_labels: np.ndarray, iou_threshold: float = 0.5
) -> ObjectMatch:
    """Match objects one-to-one where their IoU >= `iou_threshold`.

    The matching has the most pairs possible, and among those the highest total IoU
    (Hungarian algorithm, as stardist's matching). At thresholds above 0.5 an object can
    overlap at most one other by that much, so the pairs are unique anyway.

    >>> pred = np.zeros((4, 10), dtype=int); truth = np.zeros((4, 10), dtype=int)
    >>> truth[:, 0:5] = 1; pred[:, 1:5] = 1    # IoU 16 / 20 = 0.8
    >>> truth[:, 6:9] = 2; pred[:, 8:10] = 2   # IoU 4 / 16 = 0.25
    >>> m = match_objects(pred, truth, 0.5)
    >>> (m.tp, m.fp, m.fn, m.pairs)
    (1, 1, 1, ((1, 1, 0.8),))
    """
    return _match(_overlaps(pred_labels, true_labels), iou_threshold)


def object_f1(m: ObjectMatch) -> float:
    """2 TP / (2 TP + FP + FN); 1.0 when there are no objects on either side.

    >>> object_f1(ObjectMatch(tp=1, fp=1, fn=1, pairs=(), iou_threshold=0.5))
    0.5
    """
    return _ratio(2 * m.tp, 2 * m.tp + m.fp + m.fn, m.tp + m.fp + m.fn == 0)


def pooled_object_f1(matches: Sequence[ObjectMatch]) -> float:
    """object_f1 of the matches of many frames taken together."""
    tp, fp, fn = (sum(getattr(m, k) for m in matches) for k in ("tp", "fp", "fn"))
    return object_f1(ObjectMatch(tp, fp, fn, (), matches[0].iou_threshold if matches else 0.5))


def pooled_iou(preds: Sequence[np.ndarray], truths: Sequence[np.ndarray]) -> float:
    """Pixel IoU of many frames taken together (one union over all of them).

    >>> pooled_iou([np.array([1, 1, 0])], [np.array([0, 1, 1])])
    0.3333333333333333
    """
    total = PixelCounts(0, 0, 0, 0)
    for pred, truth in zip(preds, truths, strict=True):
        total = total + pixel_counts(pred, truth)
    return pixel_scores(total)["iou"]


def ap_curve(
    pred_labels_list: Sequence[np.ndarray],
    true_labels_list: Sequence[np.ndarray],
    thresholds: Sequence[float] | np.ndarray = AP_THRESHOLDS,
) -> dict[float, float]:
    """Average precision, TP / (TP + FP + FN), at each IoU threshold, pooled over frames.

    This is the stardist / cellpose definition (also the Data Science Bowl 2018 metric), not
    the area under a precision-recall curve: at each threshold the objects are matched as in
    `match_objects`, TP, FP and FN are summed over all frames, and AP = TP / (TP + FP + FN).
    It cannot rise with the threshold: pairs valid at a higher threshold are valid at a lower
    one. Keys are the thresholds rounded to 6 decimals.

    >>> truth = np.zeros((4, 10), dtype=int); truth[:, 0:5] = 1; truth[:, 6:9] = 2
    >>> pred = np.zeros((4, 10), dtype=int); pred[:, 1:5] = 1; pred[:, 6:10] = 2  # 0.8, 0.75
    >>> ap_curve([pred], [truth], thresholds=[0.5, 0.78, 0.9])
    {0.5: 1.0, 0.78: 0.3333333333333333, 0.9: 0.0}
    """
    if len(pred_labels_list) != len(true_labels_list):
        raise ValueError(
            f"ap_curve: expected as many predicted as true label images, got "
            f"{len(pred_labels_list)} and {len(true_labels_list)}"
        )
    overlaps = [_overlaps(p, t) for p, t in zip(pred_labels_list, true_labels_list, strict=True)]
    curve: dict[float, float] = {}
    for threshold in thresholds:
        matches = [_match(o, float(threshold)) for o in overlaps]
        tp = sum(m.tp for m in matches)
        fp = sum(m.fp for m in matches)
        fn = sum(m.fn for m in matches)
        curve[round(float(threshold), 6)] = _ratio(tp, tp + fp + fn, tp + fp + fn == 0)
    return curve


def image_scores(pred_flags: np.ndarray, true_flags: np.ndarray) -> dict[str, float]:
    """Precision, recall, F1 and accuracy of per-frame flags (True = frame has an artifact).

    >>> scores = image_scores(np.array([1, 1, 0, 0, 1]), np.array([1, 0, 0, 1, 1]))
    >>> {name: round(value, 3) for name, value in scores.items()}
    {'precision': 0.667, 'recall': 0.667, 'f1': 0.667, 'accuracy': 0.6, 'false_flag_rate': 0.5}
    """
    pred, truth = np.asarray(pred_flags) != 0, np.asarray(true_flags) != 0
    _check_same_shape(pred, truth)
    if pred.size == 0:
        raise ValueError("image_scores: expected at least one frame, got none")
    c = pixel_counts(pred, truth)
    empty = c.tp + c.fp + c.fn == 0
    return {
        "precision": _ratio(c.tp, c.tp + c.fp, empty),
        "recall": _ratio(c.tp, c.tp + c.fn, empty),
        "f1": _ratio(2 * c.tp, 2 * c.tp + c.fp + c.fn, empty),
        "accuracy": (c.tp + c.tn) / pred.size,
        # Share of clean frames flagged: what decides whether a screen keeps the service on,
        # since ~90 % of real fields are clean. NaN when no frame is clean.
        "false_flag_rate": c.fp / (c.fp + c.tn) if c.fp + c.tn else math.nan,
    }


def ranking_auc(scores: np.ndarray, true_flags: np.ndarray) -> float:
    """ROC AUC of per-frame scores: the chance an artifact frame outscores a clean one (ties
    count half). Threshold-free, so models whose thresholds differ compare fairly. NaN without
    frames of both kinds.

    >>> ranking_auc(np.array([0.9, 0.2, 0.4, 0.4]), np.array([1, 0, 1, 0]))
    0.875
    """
    scores, truth = np.asarray(scores, dtype=np.float64), np.asarray(true_flags) != 0
    _check_same_shape(scores, truth)
    positives, negatives = int(truth.sum()), int((~truth).sum())
    if not positives or not negatives:
        return math.nan
    # Mann-Whitney U from mid-ranks (ties get their average rank): O(n log n), so an archive's
    # tens of thousands of frames need no pairwise table.
    ranks = rankdata(scores)
    u = ranks[truth].sum() - positives * (positives + 1) / 2
    return float(u / (positives * negatives))


def size_mae(pred_labels: np.ndarray, true_labels: np.ndarray, match: ObjectMatch) -> float:
    """Mean |equivalent diameter of pred - of truth| over matched pairs, in px; NaN if none.

    The equivalent diameter is that of the disc with the object's area, sqrt(4 A / pi).

    >>> truth = np.zeros((4, 10), dtype=int); truth[:, 0:5] = 1   # area 20
    >>> pred = np.zeros((4, 10), dtype=int); pred[:, 1:5] = 1     # area 16
    >>> round(size_mae(pred, truth, match_objects(pred, truth)), 4)  # sqrt(80/pi) - sqrt(64/pi)
    0.5327
    """
    _check_same_shape(pred_labels, true_labels)
    if not match.pairs:
        return float("nan")
    pred_ids, pred_areas = _areas(_as_labels(pred_labels))
    true_ids, true_areas = _areas(_as_labels(true_labels))
    pairs = np.array([(p, t) for p, t, _ in match.pairs], dtype=np.int64)
    a_pred = pred_areas[np.searchsorted(pred_ids, pairs[:, 0])]
    a_true = true_areas[np.searchsorted(true_ids, pairs[:, 1])]
    diameters = np.sqrt(4.0 * np.stack([a_pred, a_true]) / np.pi)
    return float(np.mean(np.abs(diameters[0] - diameters[1])))


@dataclass(frozen=True, slots=True)
class _Overlaps:
    """Every predicted/true object of a frame and the IoU of each overlapping pair."""

    n_pred: int
    n_true: int
    pair_pred: np.ndarray  # labels of overlapping pairs
    pair_true: np.ndarray
    pair_iou: np.ndarray


def _overlaps(pred_labels: np.ndarray, true_labels: np.ndarray) -> _Overlaps:
    """IoU of every overlapping pair from one contingency table of the co-occurring labels."""
    _check_same_shape(pred_labels, true_labels)
    pred = _as_labels(pred_labels).ravel()
    true = _as_labels(true_labels).ravel()
    pred_ids, pred_areas = _areas(pred)
    true_ids, true_areas = _areas(true)
    both = (pred != 0) & (true != 0)
    stride = np.int64(true_ids[-1]) + 1 if true_ids.size else np.int64(1)
    keys, intersections = np.unique(
        pred[both].astype(np.int64) * stride + true[both].astype(np.int64), return_counts=True
    )
    pair_pred, pair_true = keys // stride, keys % stride
    unions = (
        pred_areas[np.searchsorted(pred_ids, pair_pred)]
        + true_areas[np.searchsorted(true_ids, pair_true)]
        - intersections
    )
    return _Overlaps(
        n_pred=pred_ids.size,
        n_true=true_ids.size,
        pair_pred=pair_pred,
        pair_true=pair_true,
        pair_iou=intersections / unions,
    )


def _match(o: _Overlaps, iou_threshold: float) -> ObjectMatch:
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold: expected a value in (0, 1], got {iou_threshold}")
    ok = o.pair_iou >= iou_threshold
    pred, true, iou = o.pair_pred[ok], o.pair_true[ok], o.pair_iou[ok]
    rows, row_of = np.unique(pred, return_inverse=True)
    cols, col_of = np.unique(true, return_inverse=True)
    if rows.size < pred.size or cols.size < true.size:
        # Some object has several candidates (only possible at thresholds <= 0.5): take the
        # most pairs, then the highest total IoU (the IoU term sums to less than one pair).
        scores = np.zeros((rows.size, cols.size))
        scores[row_of, col_of] = iou
        valid = np.zeros_like(scores)
        valid[row_of, col_of] = 1.0
        r, c = linear_sum_assignment(-valid - scores / (2.0 * min(rows.size, cols.size)))
        chosen = valid[r, c] > 0
        pred, true, iou = rows[r[chosen]], cols[c[chosen]], scores[r[chosen], c[chosen]]
    tp = int(pred.size)
    pairs = tuple(
        (int(p), int(t), float(v)) for p, t, v in sorted(zip(pred, true, iou, strict=True))
    )
    return ObjectMatch(
        tp=tp, fp=o.n_pred - tp, fn=o.n_true - tp, pairs=pairs, iou_threshold=iou_threshold
    )


def _as_labels(labels: np.ndarray) -> np.ndarray:
    if labels.dtype == bool:
        return label(labels)
    if labels.dtype.kind not in "ui":
        raise ValueError(f"expected a label image of integers or a bool mask, got {labels.dtype}")
    return labels


def _areas(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted non-zero labels and their pixel counts (labels need not be consecutive)."""
    values = labels[labels != 0]
    if values.size and values.min() < 0:
        raise ValueError("expected labels >= 0, 0 = background")
    ids, counts = np.unique(values, return_counts=True)
    return ids.astype(np.int64), counts


def _ratio(numerator: float, denominator: float, both_empty: bool) -> float:
    if denominator == 0:
        return 1.0 if both_empty else 0.0
    return numerator / denominator


def _check_same_shape(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"prediction and truth differ in shape: {a.shape} vs {b.shape}")
