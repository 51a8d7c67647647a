"""The plate-relative verdict's rule: a field flagged only when it stands out from its plate."""

from __future__ import annotations

import numpy as np
import pytest

from engines.runtime.plate_baseline import (
    PlateBaseline,
    PlateBaselineOptions,
    logit,
    plate_verdict,
)


def _judge(scores, options=None, plate="P1") -> list[bool]:
    baseline = PlateBaseline(options)
    return [baseline.stands_out(plate, s) for s in scores]


def test_a_plate_the_model_finds_unusual_is_quiet_but_an_outstanding_field_still_stands():
    # Every clean field of an unfamiliar plate scoring 0.74-0.98, as the issue measured.
    rng = np.random.default_rng(0)
    clean = list(rng.uniform(0.74, 0.98, 40))
    stands = _judge([*clean, 0.9995, *clean[:5]])
    first = PlateBaselineOptions().min_fields
    assert all(stands[:first])  # too few fields to tell: the detector's own verdict
    # Without the rule all 40 are flagged at the detector threshold of 0.8 or below; with it,
    # only the top of the plate's own spread (2 logits above its lower quartile) is left.
    assert sum(stands[first:40]) <= 0.1 * (40 - first)
    assert stands[40]  # an artifact field the detector is sure of
    assert not any(stands[41:])


def test_on_a_familiar_plate_every_field_above_the_detector_threshold_stands():
    # Clean fields far below the detector threshold: the bar stays below it.
    rng = np.random.default_rng(1)
    scores = rng.uniform(0.001, 0.1, 60).tolist()
    scores[20::7] = [0.81, 0.9, 0.95, 0.99, 0.85, 0.999]
    stands = _judge(scores)
    assert all(s for s, p in zip(stands, scores, strict=True) if p >= 0.8)


def test_a_plate_whose_every_field_is_dirty_stays_flagged_where_the_detector_is_sure():
    stands = _judge([0.99999] * 30 + [0.9999] * 10)
    assert all(stands)


def test_half_the_fields_with_artifacts_keeps_them_flagged():
    # At 50 % prevalence the lower quartile is still a clean field's score.
    rng = np.random.default_rng(2)
    clean = rng.uniform(0.5, 0.8, 50)
    dirty = rng.uniform(0.995, 0.99999, 50)
    order = rng.permutation(100)
    scores = np.concatenate([clean, dirty])[order]
    stands = np.array(_judge(scores.tolist()))
    is_dirty = order >= 50
    assert stands[is_dirty].all()
    assert not stands[~is_dirty][PlateBaselineOptions().min_fields:].any()


def test_plates_are_judged_apart_and_a_seed_counts_as_fields_before():
    baseline = PlateBaseline()
    baseline.seed("P1", [0.95] * 20)  # a restart: the plate's stored fields
    assert not baseline.stands_out("P1", 0.96)
    assert baseline.stands_out("P2", 0.96)  # another plate, no fields yet
    assert baseline.baseline("P1") == pytest.approx(0.95, abs=0.01)
    assert baseline.baseline("P2") is None


def test_turned_off_every_field_stands():
    off = PlateBaselineOptions(enabled=False)
    assert all(_judge([0.9] * 50, off))


def test_the_margin_is_in_logits():
    options = PlateBaselineOptions(min_fields=4, quantile=0.5, margin=1.0)
    baseline = PlateBaseline(options)
    baseline.seed("P", [0.5] * 10)  # logit 0
    just_below = 1 / (1 + np.exp(-0.99))
    assert not baseline.stands_out("P", just_below)
    assert baseline.stands_out("P", 1 / (1 + np.exp(-1.01)))
    assert logit(0.0) < -15 and logit(1.0) > 15  # finite at float32's ends


@pytest.mark.parametrize(("segment_all", "n_artifacts", "stands", "expected"), [
    (False, 3, True, (True, True)),  # flagged as before
    (False, 3, False, (False, False)),  # withdrawn: a clean field, its segmentation goes too
    (True, 3, False, (True, True)),  # the segmenter's findings still flag it
    (True, 0, False, (False, True)),
    (True, 0, True, (True, True)),
])
def test_plate_verdict_withdraws_only_the_detector_vote(segment_all, n_artifacts, stands,
                                                         expected):
    assert plate_verdict(0.9, n_artifacts, stands, 0.8, segment_all) == expected


def test_a_low_score_is_never_flagged_by_the_plate():
    assert plate_verdict(0.1, 0, True, 0.8, False) == (False, False)
