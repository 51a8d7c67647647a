"""Metrics against cases small enough to count by hand."""

from __future__ import annotations

import doctest
import itertools
import math

import numpy as np
import pytest

import engines.evaluation.scoring
from engines.evaluation.scoring import (
    ObjectMatch,
    PixelCounts,
    ap_curve,
    image_scores,
    match_objects,
    object_f1,
    pixel_counts,
    pixel_scores,
    size_mae,
)


def strips(*spans, width=20, rows=2):
    """Label image of horizontal strips: spans are (label, start, stop) columns."""
    labels = np.zeros((rows, width), dtype=np.int32)
    for value, start, stop in spans:
        labels[:, start:stop] = value
    return labels


def test_doctests():
    result = doctest.testmod(engines.evaluation.scoring)
    assert result.attempted > 0 and result.failed == 0


def test_pixel_counts_by_hand():
    pred = np.array(
        [[1, 1, 0, 0],
         [1, 1, 0, 0],
         [0, 0, 0, 1],
         [0, 0, 0, 0]], dtype=bool,
    )  # fmt: skip
    truth = np.array(
        [[0, 1, 1, 0],
         [0, 1, 1, 0],
         [0, 0, 0, 0],
         [0, 0, 0, 0]], dtype=np.uint16,
    )  # fmt: skip
    c = pixel_counts(pred, truth)
    assert c == PixelCounts(tp=2, fp=3, fn=2, tn=9)
    scores = pixel_scores(c)
    assert scores["iou"] == pytest.approx(2 / 7)
    assert scores["dice"] == pytest.approx(4 / 9)
    assert scores["precision"] == pytest.approx(2 / 5)
    assert scores["recall"] == pytest.approx(2 / 4)


def test_pixel_counts_accumulate_over_frames():
    total = sum((PixelCounts(1, 2, 3, 4) for _ in range(3)), PixelCounts(0, 0, 0, 0))
    assert total == PixelCounts(3, 6, 9, 12)


def test_pixel_scores_when_a_side_is_empty():
    assert pixel_scores(PixelCounts(0, 0, 0, 16)) == {
        "iou": 1.0, "dice": 1.0, "precision": 1.0, "recall": 1.0,
    }  # fmt: skip
    only_pred = pixel_scores(PixelCounts(0, 4, 0, 12))
    assert only_pred == {"iou": 0.0, "dice": 0.0, "precision": 0.0, "recall": 0.0}
    only_truth = pixel_scores(PixelCounts(0, 0, 4, 12))
    assert only_truth["iou"] == 0.0 and only_truth["precision"] == 0.0


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(4, 4\).*\(4, 5\)"):
        pixel_counts(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 2\)"):
        match_objects(np.zeros((2, 3), int), np.zeros((3, 2), int))


def test_one_pair_at_iou_0_6_and_one_at_0_3():
    truth = strips((1, 0, 10), (2, 12, 20), width=22)
    # Pred 1 covers 6 of truth 1's 10 columns: IoU 6 / 10. Pred 2 (17..22) shares 3 columns
    # with truth 2 (12..20): IoU 3 / (8 + 5 - 3).
    pred = strips((1, 0, 6), (2, 17, 22), width=22)
    m = match_objects(pred, truth, iou_threshold=0.5)
    assert (m.tp, m.fp, m.fn) == (1, 1, 1)
    assert m.pairs == ((1, 1, pytest.approx(0.6)),)
    assert object_f1(m) == pytest.approx(0.5)
    low = match_objects(pred, truth, iou_threshold=0.25)
    assert (low.tp, low.fp, low.fn) == (2, 0, 0)
    assert [round(iou, 6) for _, _, iou in low.pairs] == [0.6, 0.3]


def test_matching_is_one_to_one_and_maximal():
    truth = strips((1, 0, 10), (2, 10, 20))
    # Pred 5 overlaps truth 1 at 7/15 and truth 2 at 5/17; pred 9 overlaps truth 1 at 3/10.
    # Greedy by IoU would pair 5-1 and leave 9 and 2 alone; the maximal matching pairs both.
    pred = strips((9, 0, 3), (5, 3, 15))
    m = match_objects(pred, truth, iou_threshold=0.25)
    assert (m.tp, m.fp, m.fn) == (2, 0, 0)
    assert [(p, t) for p, t, _ in m.pairs] == [(5, 2), (9, 1)]
    # One big prediction over two objects matches at most one of them.
    big = strips((1, 0, 20))
    m = match_objects(big, truth, iou_threshold=0.3)
    assert (m.tp, m.fp, m.fn) == (1, 0, 1)


def test_iou_from_the_contingency_table_equals_brute_force():
    rng = np.random.default_rng(5)
    truth = np.zeros((64, 64), dtype=np.int32)
    pred = np.zeros((64, 64), dtype=np.int32)
    for value in range(1, 12):
        y, x = rng.integers(0, 56, 2)
        truth[y : y + 8, x : x + 8] = value
        dy, dx = rng.integers(-3, 4, 2)
        pred[max(y + dy, 0) : y + dy + 8, max(x + dx, 0) : x + dx + 8] = value * 7
    m = match_objects(pred, truth, iou_threshold=0.1)
    for p, t, iou in m.pairs:
        a, b = pred == p, truth == t
        assert iou == pytest.approx((a & b).sum() / (a | b).sum())


def test_bool_masks_are_labelled_first():
    truth = np.zeros((10, 10), dtype=bool)
    truth[1:4, 1:4] = truth[6:9, 6:9] = True
    m = match_objects(truth.copy(), truth)
    assert (m.tp, m.fp, m.fn) == (2, 0, 0)
    assert all(iou == 1.0 for _, _, iou in m.pairs)


def test_no_objects_anywhere():
    empty = np.zeros((5, 5), dtype=np.uint16)
    m = match_objects(empty, empty)
    assert (m.tp, m.fp, m.fn, m.pairs) == (0, 0, 0, ())
    assert object_f1(m) == 1.0
    assert ap_curve([empty], [empty]) == {round(t, 6): 1.0 for t in np.arange(0.5, 1.0, 0.05)}
    assert math.isnan(size_mae(empty, empty, m))


def test_ap_curve_pools_frames():
    truth = strips((1, 0, 10), (2, 12, 20))
    pred = strips((1, 0, 8), (2, 12, 20))  # IoU 0.8 and 1.0
    missed = strips((1, 0, 10))  # a second frame whose object the model missed
    curve = ap_curve([pred, np.zeros_like(missed)], [truth, missed], thresholds=[0.5, 0.85])
    assert curve == {0.5: pytest.approx(2 / 3), 0.85: pytest.approx(1 / 4)}


def test_ap_curve_is_monotone_non_increasing():
    rng = np.random.default_rng(1)
    preds, truths = [], []
    for _ in range(4):
        truth = np.zeros((96, 96), dtype=np.int32)
        pred = np.zeros_like(truth)
        for value in range(1, 9):
            y, x = rng.integers(0, 80, 2)
            size = int(rng.integers(6, 14))
            truth[y : y + size, x : x + size] = value
            grow = int(rng.integers(-2, 3))
            pred[y : y + size + grow, x : x + size] = value
        preds.append(pred)
        truths.append(truth)
    curve = ap_curve(preds, truths)
    assert list(curve) == [round(t, 6) for t in np.arange(0.5, 1.0, 0.05)]
    values = list(curve.values())
    assert all(a >= b for a, b in itertools.pairwise(values))
    assert values[0] > values[-1]


def test_ap_curve_needs_paired_lists():
    with pytest.raises(ValueError, match="as many"):
        ap_curve([np.zeros((2, 2), int)], [])


def test_image_scores_by_hand():
    pred = np.array([True, True, False, False, True, False])
    truth = np.array([True, False, False, True, True, False])
    # tp 2 (frames 0, 4), fp 1 (frame 1), fn 1 (frame 3), tn 2.
    scores = image_scores(pred, truth)
    assert scores == {
        "precision": pytest.approx(2 / 3),
        "recall": pytest.approx(2 / 3),
        "f1": pytest.approx(2 / 3),
        "accuracy": pytest.approx(4 / 6),
        "false_flag_rate": pytest.approx(1 / 3),  # 1 of the 3 clean frames flagged
    }
    all_clean = image_scores(np.zeros(3, bool), np.zeros(3, bool))
    assert all_clean == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "accuracy": 1.0,
                         "false_flag_rate": 0.0}
    no_clean = image_scores(np.ones(2, bool), np.ones(2, bool))
    assert math.isnan(no_clean["false_flag_rate"])
    with pytest.raises(ValueError, match="at least one frame"):
        image_scores(np.zeros(0, bool), np.zeros(0, bool))


def test_size_mae_over_matched_pairs():
    truth = strips((1, 0, 10), (2, 12, 20), rows=4)  # areas 40 and 32
    pred = strips((3, 0, 8), (4, 12, 20), rows=4)  # areas 32 and 32
    m = match_objects(pred, truth)
    d40, d32 = math.sqrt(4 * 40 / math.pi), math.sqrt(4 * 32 / math.pi)
    assert size_mae(pred, truth, m) == pytest.approx((d40 - d32) / 2)
    assert math.isnan(size_mae(pred, truth, ObjectMatch(0, 2, 2, (), 0.5)))


def test_invalid_threshold():
    labels = strips((1, 0, 4))
    with pytest.raises(ValueError, match="iou_threshold"):
        match_objects(labels, labels, iou_threshold=0.0)


def test_ranking_auc_is_the_chance_an_artifact_frame_outscores_a_clean_one():
    import math

    from engines.evaluation.scoring import ranking_auc

    truth = np.array([1, 1, 0, 0])
    assert ranking_auc(np.array([0.9, 0.8, 0.1, 0.2]), truth) == 1.0
    assert ranking_auc(np.array([0.1, 0.2, 0.9, 0.8]), truth) == 0.0
    assert ranking_auc(np.full(4, 0.5), truth) == 0.5  # ties count half
    assert math.isnan(ranking_auc(np.array([0.3, 0.4]), np.array([0, 0])))  # one kind only
