"""How the service judges frames: the model card's thresholds unless the config sets its own."""

from __future__ import annotations

import numpy as np

from daemon.config import parse_config
from daemon.frames import Frame, FrameMeta
from daemon.pipeline.analysis import Analysis
from engines.runtime.modelcard import load_model
from engines.select import create_engine


def _verdict(analysis: Analysis, engine, frame: Frame):
    (scored,) = analysis.infer(engine, [frame])
    return analysis.measure(scored)


def test_the_config_detector_threshold_replaces_the_cards_and_0_keeps_it():
    bundle = load_model("default")
    card_threshold = Analysis.for_model(parse_config({}), bundle).detect_threshold
    assert card_threshold == bundle.card.detect_threshold
    quiet = Analysis.for_model(parse_config({"model": {"detect_threshold": 0.95}}), bundle)
    loud = Analysis.for_model(parse_config({"model": {"detect_threshold": 1e-9}}), bundle)
    assert quiet.detect_threshold == 0.95
    pixels = np.random.default_rng(0).integers(900, 1100, (256, 256)).astype(np.uint16)
    frame = Frame(FrameMeta("noise.tif"), pixels, ready_at=0.0)
    engine = create_engine(bundle, backend="onnxruntime", threads=1)
    try:
        assert _verdict(loud, engine, frame).flagged, "a threshold just above 0 flags any frame"
        judged = _verdict(quiet, engine, frame)
        assert judged.flagged == (judged.score >= 0.95 or judged.n_artifacts > 0)
    finally:
        engine.close()
