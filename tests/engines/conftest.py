"""Tiny synthetic datasets and 2-step models shared by the model tests (made once per run)."""

from __future__ import annotations

import pytest

from engines.data.synth import SynthOptions, write_dataset
from engines.training.train import main as train_main
from tests.engines.cli import train_args


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """12 frames of 128 x 128 with masks, labels.csv and objects.csv."""
    out = tmp_path_factory.mktemp("tiny") / "data"
    write_dataset(out, 12, seed=5, options=SynthOptions(height=128, width=128), progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory, tiny_dataset):
    """{"weak": folder, "supervised": folder}: 2 training steps each, exported."""
    root = tmp_path_factory.mktemp("models")
    models = {}
    for mode in ("weak", "supervised"):
        out = root / mode
        assert train_main(train_args(tiny_dataset, out, mode=mode)) == 0
        models[mode] = out
    return models
