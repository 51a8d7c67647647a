"""A plate unlike the model's training frames: scored per frame, warned about once, by name."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import tifffile
from prometheus_client.parser import text_string_to_metric_families

from daemon.results.store import ResultsStore
from engines.data.synth import SynthOptions, frame_for
from engines.runtime.familiarity import PLATE_UNFAMILIAR, UNFAMILIAR, Familiarity, appearance
from engines.runtime.modelcard import DEFAULT_MODEL_DIR
from tests.daemon.service_helpers import config_file, operetta_name, run_once

pytestmark = pytest.mark.timeout(240)
SIZE = 192


@pytest.fixture(scope="module")
def halo_model(tmp_path_factory):
    """The shipped networks with a card that says they were trained on halo frames alone."""
    folder = tmp_path_factory.mktemp("model") / "halo-only"
    shutil.copytree(DEFAULT_MODEL_DIR, folder)
    options = SynthOptions(height=SIZE, width=SIZE)
    looks = [appearance(frame_for(41, i, options).image) for i in range(60)]
    stats = Familiarity.fit(np.array(looks))
    card = json.loads((folder / "model.json").read_text())
    card["familiarity"] = stats.to_dict()
    (folder / "model.json").write_text(json.dumps(card))
    return folder


def plate(folder, renderer: str, count: int = 24):
    (folder / "Plate1").mkdir(parents=True)
    options = SynthOptions(height=SIZE, width=SIZE, artifact_probability=0.2)
    for i in range(count):
        frame = frame_for(42, i, options, renderer)
        tifffile.imwrite(folder / "Plate1" / operetta_name(i), frame.image)


@pytest.mark.parametrize(("renderer", "warned"), [("monolayer", True), ("halo", False)])
def test_a_mostly_unfamiliar_plate_is_warned_about_once(tmp_path, halo_model, renderer, warned):
    folder, store, log = tmp_path / "in", tmp_path / "results.zarr", tmp_path / "service.log"
    plate(folder, renderer)
    config = config_file(tmp_path, input_dir=folder, store=store, model={"path": str(halo_model)})
    assert run_once(config, log).returncode == 0, log.read_text()
    reader = ResultsStore(store, read_only=True)
    scores = np.asarray(reader.frame_table()["unfamiliarity"], dtype=float)
    reader.close()
    assert len(scores) == 24 and np.isfinite(scores).all()
    text = log.read_text()
    if warned:
        assert np.median(scores) > PLATE_UNFAMILIAR
        assert text.count("look unlike anything the model was trained on") == 1
        assert "artifactd train --init default" in text
    else:
        assert np.median(scores) < PLATE_UNFAMILIAR and np.mean(scores > UNFAMILIAR) < 0.2
        assert "look unlike anything" not in text


def test_unfamiliarity_is_exported_to_prometheus():
    from prometheus_client import generate_latest

    from daemon.ops.metrics import Metrics

    metrics = Metrics()
    metrics.unfamiliarity.observe(3.0)
    metrics.unfamiliar_plate.labels(plate="P1").set(1)
    exposed = generate_latest(metrics.registry).decode()
    names = {f.name for f in text_string_to_metric_families(exposed)}
    assert {"artifactd_frame_unfamiliarity", "artifactd_plate_unfamiliar"} <= names
