"""The unfamiliarity score: ~1 on frames like the training frames, high on another renderer's."""

from __future__ import annotations

import numpy as np
import pytest

from engines.data.synth import SynthOptions, frame_for
from engines.runtime.familiarity import (
    FEATURES,
    PLATE_UNFAMILIAR,
    UNFAMILIAR,
    Familiarity,
    appearance,
)

SIZE = SynthOptions(height=256, width=256)


def vectors(renderer: str, seed: int, count: int) -> np.ndarray:
    return np.array([appearance(frame_for(seed, i, SIZE, renderer).image) for i in range(count)])


@pytest.fixture(scope="module")
def halo_familiarity() -> Familiarity:
    return Familiarity.fit(vectors("halo", 31, 60))


def test_frames_like_the_training_frames_are_familiar(halo_familiarity):
    scores = [halo_familiarity.score_vector(v) for v in vectors("halo", 32, 30)]
    assert np.median(scores) < 1.2
    assert np.mean(np.array(scores) > UNFAMILIAR) <= 0.1


@pytest.mark.parametrize("renderer", ["wave", "monolayer"])
def test_another_renderers_frames_score_well_above_the_training_frames(halo_familiarity, renderer):
    """Single frames overlap (each renderer varies a lot); a plate's median does not."""
    own = np.median([halo_familiarity.score_vector(v) for v in vectors("halo", 32, 20)])
    other = np.median([halo_familiarity.score_vector(v) for v in vectors(renderer, 33, 20)])
    assert other > PLATE_UNFAMILIAR > own, (own, other)


def test_statistics_round_trip_through_the_card(halo_familiarity):
    frame = frame_for(34, 0, SIZE).image
    again = Familiarity.from_dict(halo_familiarity.to_dict())
    assert again.score(frame) == pytest.approx(halo_familiarity.score(frame), rel=1e-4)
    assert Familiarity.from_dict({}) is None  # a card from before: no score, no error
    other = {**halo_familiarity.to_dict(), "features": ["something", "else"]}
    assert Familiarity.from_dict(other) is None


def test_appearance_takes_any_integer_frame_and_channel_stacks():
    frame = frame_for(35, 0, SIZE).image
    assert appearance(frame).shape == (len(FEATURES),)
    assert np.isfinite(appearance(np.zeros((64, 64), np.uint16))).all()  # a black frame
    stacked = np.stack([frame, frame // 2])
    assert np.allclose(appearance(stacked), appearance(frame))  # channel 0 is described


def test_fitting_needs_two_frames():
    with pytest.raises(ValueError, match="at least 2 frames"):
        Familiarity.fit(np.zeros((1, len(FEATURES))))
