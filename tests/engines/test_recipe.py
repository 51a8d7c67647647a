"""The recipe's record of how the shipped model was made, when new sets are judged."""

from __future__ import annotations

from engines.runtime.modelcard import DEFAULT_MODEL_DIR
from engines.training.recipe import with_new_sets

MADE = [
    "artifactd synth --out runs/heldout --count 200 --seed 9001 --size 1080 --dtype uint16",
    "artifactd train --frames runs/t/frames --labels runs/t/labels.csv --out runs/model-8",
    "artifactd eval --model runs/model-8 --frames runs/heldout/frames --labels "
    "runs/heldout/labels.csv --masks runs/heldout/masks --out runs/eval-model-8-heldout "
    "--no-baselines",
]


def test_a_new_set_is_listed_beside_the_others_and_judged_as_the_card_names_the_model():
    new = [
        MADE[0],  # already on the card: not listed twice
        "artifactd synth --out runs/p --count 200 --seed 9801 --size 1080 --dtype uint16 "
        "--renderer particle",
        f"artifactd eval --model {DEFAULT_MODEL_DIR} --frames runs/p/frames --labels "
        f"runs/p/labels.csv --masks runs/p/masks --out runs/eval-default-p --no-baselines",
    ]
    listed = with_new_sets(MADE, new)
    assert listed[:3] == [MADE[0], new[1], MADE[1]]
    assert listed[3] == MADE[2]
    assert listed[4] == ("artifactd eval --model runs/model-8 --frames runs/p/frames --labels "
                         "runs/p/labels.csv --masks runs/p/masks --out runs/eval-model-8-p "
                         "--no-baselines")
    assert len(listed) == 5


def test_nothing_new_leaves_the_card_as_it_was():
    assert with_new_sets(MADE, [MADE[0]]) == MADE
