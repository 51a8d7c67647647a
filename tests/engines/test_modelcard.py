"""Model cards: the verdict rule, and how the card says the segmenter is run."""

from __future__ import annotations

import json
import shutil

import pytest

from engines.runtime.modelcard import DEFAULT_MODEL_DIR, ModelError, frame_flagged, load_model


@pytest.mark.parametrize(("score", "n_artifacts", "flagged"), [
    (0.9, 0, True),  # the detector alone
    (0.1, 2, True),  # the segmenter found something the detector scored low
    (0.1, 0, False),
    (0.8, 0, True),  # the threshold itself flags
])
def test_a_frame_is_flagged_by_the_detector_or_by_found_artifacts(score, n_artifacts, flagged):
    assert frame_flagged(score, n_artifacts, 0.8) is flagged


def copy_model(tmp_path, **changes):
    folder = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL_DIR, folder)
    card = json.loads((folder / "model.json").read_text())
    for key, value in changes.items():
        if value is None:
            card.pop(key)
        else:
            card[key] = value
    (folder / "model.json").write_text(json.dumps(card))
    return folder


def test_the_default_model_says_which_frames_it_segments_and_why():
    card = load_model("default").card
    assert card.segment in ("all", "flagged")
    assert any(note.startswith(f"segment {card.segment}") for note in card.notes)


def test_a_card_without_segment_runs_as_cards_did_before(tmp_path):
    assert load_model(copy_model(tmp_path, segment=None)).card.segment == "flagged"


def test_an_unknown_segment_mode_is_refused_by_name(tmp_path):
    with pytest.raises(ModelError, match=r"segment 'some'; expected one of \('flagged', 'all'\)"):
        load_model(copy_model(tmp_path, segment="some"))
