"""The plate-relative verdict in the real service: a plate whose clean fields the detector scores
above its threshold is not flagged across the board, its artifact fields still are, and a
restart judges a resumed plate against the fields it stored before.

The shipped model scores its own renderer's clean fields ~0.1. With `[model] detect_threshold
= 0.05` it flags every one of them: a model that finds a plate's cells unusual, as on the
independently written renderer where every clean field scored 0.74-1.0.
"""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from daemon.frames import Frame, FrameMeta, FrameResult
from daemon.ops.metrics import Metrics
from daemon.pipeline.plate_verdict import PlateVerdict
from daemon.results.store import ResultsStore
from daemon.results.thumbnails import make_thumbnail
from engines.data.synth import SynthOptions, frame_for
from engines.runtime.plate_baseline import PlateBaselineOptions
from tests.daemon.service_helpers import config_file, operetta_name, run_once

pytestmark = pytest.mark.timeout(300)
SIZE = 256
DIRTY = (16, 19, 22)  # field indices with an obvious dark speck; judged after 8 clean fields


def write_plate(folder, count: int, start: int = 0) -> None:
    """Clean halo fields, and a dark disc (an artifact the detector scores 0.78-0.95) on the
    fields in DIRTY."""
    plate = folder / "Plate1"
    plate.mkdir(parents=True, exist_ok=True)
    options = SynthOptions(height=SIZE, width=SIZE, artifact_probability=0.0)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    speck = (yy - 128) ** 2 + (xx - 100) ** 2 <= 18**2
    for i in range(start, start + count):
        image = frame_for(7, i, options).image
        if i in DIRTY:
            dirty = image.astype(np.float64)
            dirty[speck] *= 0.35
            image = dirty.astype(np.uint16)
        tifffile.imwrite(plate / operetta_name(i), image)


def stored(store) -> dict[str, tuple[bool, float]]:
    reader = ResultsStore(store, read_only=True)
    table = reader.frame_table()
    reader.close()
    return {str(s).split("/")[-1]: (bool(f), float(p))
            for s, f, p in zip(table["source"], table["flagged"], table["score"], strict=True)}


def run(tmp_path, name: str, plate_relative: bool, count: int = 24):
    folder, store, log = tmp_path / name, tmp_path / f"{name}.zarr", tmp_path / f"{name}.log"
    write_plate(folder, count)
    config = config_file(tmp_path / name, input_dir=folder, store=store,
                         model={"detect_threshold": 0.05, "plate_relative": plate_relative})
    assert run_once(config, log).returncode == 0, log.read_text()
    return stored(store), log.read_text()


def split(verdicts) -> tuple[list[bool], list[bool]]:
    dirty = {operetta_name(i) for i in DIRTY}
    clean = [f for name, (f, _) in verdicts.items() if name not in dirty]
    found = [f for name, (f, _) in verdicts.items() if name in dirty]
    return clean, found


def test_a_plate_scored_high_throughout_is_flagged_only_where_a_field_stands_out(tmp_path):
    (tmp_path / "alone").mkdir()
    (tmp_path / "plate").mkdir()
    alone, _ = run(tmp_path, "alone", plate_relative=False)
    clean, found = split(alone)
    assert len(clean) == 21 and all(clean) and all(found)  # the detector alone: every field

    relative, log = run(tmp_path, "plate", plate_relative=True)
    clean, found = split(relative)
    assert all(found)  # the artifact fields stand out from the plate
    # Only the first fields, before the plate has 8 to compare with, keep the detector's say.
    assert sum(clean) <= PlateBaselineOptions().min_fields
    assert log.count("flagged only when it stands out") == 1
    assert "artifactd train --init default" in log


def test_a_restart_judges_a_resumed_plate_against_its_stored_fields(tmp_path):
    folder, store, log = tmp_path / "in", tmp_path / "results.zarr", tmp_path / "service.log"
    config = config_file(tmp_path, input_dir=folder, store=store,
                         model={"detect_threshold": 0.05})
    write_plate(folder, 12)
    assert run_once(config, log).returncode == 0, log.read_text()
    write_plate(folder, 4, start=12)  # the screen goes on after a restart
    assert run_once(config, log).returncode == 0, log.read_text()
    verdicts = stored(store)
    assert len(verdicts) == 16
    resumed = [verdicts[operetta_name(i)][0] for i in range(12, 16)]
    assert not any(resumed)  # a fresh baseline would have flagged all four


def _result(plate: str, score: float, n_artifacts: int = 0) -> FrameResult:
    pixels = np.full((64, 64), 1000, np.uint16)
    labels = np.zeros((64, 64), np.uint32)
    labels[10:20, 10:20] = 1 if n_artifacts else 0
    frame = Frame(FrameMeta(source=f"{plate}/f.tif", plate=plate), pixels, ready_at=0.0)
    return FrameResult(frame, score, score >= 0.5, labels, {"area_px": np.array([100])},
                       0.02, n_artifacts, thumbnail=make_thumbnail(pixels, labels, 4))


def test_a_withdrawn_flag_leaves_a_clean_field_and_is_counted():
    metrics = Metrics()
    verdict = PlateVerdict(PlateBaselineOptions(), detect_threshold=0.5, segment_all=False,
                           metrics=metrics)
    verdict.baseline.seed("P", [0.9] * 20)
    low = _result("P", 0.1)
    typical, outstanding, unflagged = verdict([_result("P", 0.92, 1), _result("P", 0.9999, 1),
                                               low])
    assert unflagged is low  # nothing to withdraw, nothing counted
    assert not typical.flagged and typical.n_artifacts == 0 and not typical.labels.any()
    assert typical.artifacts == {} and not typical.thumbnail.labels.any()
    assert outstanding.flagged and outstanding.labels.any()
    assert metrics.typical_for_plate._value.get() == 1
    assert metrics.plate_baseline.labels(plate="P")._value.get() == pytest.approx(0.9, abs=0.01)


def test_reprocess_on_a_cluster_judges_the_plate_as_the_service_does(tmp_path):
    import subprocess
    import sys

    from tests.daemon.service_helpers import REPO

    folder, store, log = tmp_path / "archive", tmp_path / "again.zarr", tmp_path / "log"
    write_plate(folder, 24)
    config = config_file(tmp_path, input_dir=folder, store=tmp_path / "unused.zarr",
                         model={"detect_threshold": 0.05})
    with log.open("ab") as handle:
        done = subprocess.run([sys.executable, "-m", "daemon.cli", "reprocess", str(folder),
                               "--output", str(store), "--scheduler", "local:2", "--config",
                               str(config)], cwd=REPO, stdout=subprocess.PIPE, stderr=handle,
                              timeout=240)
    assert done.returncode == 0, log.read_text()
    clean, found = split(stored(store))
    assert len(clean) == 21 and all(found)
    # Tasks are committed as they finish, so which fields come first may differ from the
    # service's order; after the plate's first 8, typical fields are not flagged.
    assert sum(clean) <= PlateBaselineOptions().min_fields


def test_a_field_showing_dirt_on_the_optics_keeps_its_flag():
    """A smudge on the light path is in every field, so the plate's baseline is high; the
    optics tracker has marked it, and the field stays flagged (test_optics_service: the optics
    alert fires through the real service)."""
    from dataclasses import replace

    from daemon.frames import STATIONARY

    verdict = PlateVerdict(PlateBaselineOptions(), detect_threshold=0.5, segment_all=False)
    verdict.baseline.seed("P", [0.95] * 20)
    smudged = _result("P", 0.95, 1)
    smudged = replace(smudged, artifacts={**smudged.artifacts, STATIONARY: np.array([True])})
    (kept,) = verdict([smudged])
    assert kept.flagged and kept.labels.any()
    (typical,) = verdict([_result("P", 0.95, 1)])  # the same score, nothing on the optics
    assert not typical.flagged


def test_an_ended_plate_drops_its_baseline_and_its_series():
    metrics = Metrics()
    verdict = PlateVerdict(PlateBaselineOptions(window=20), detect_threshold=0.5,
                           segment_all=False, metrics=metrics)
    verdict([_result("A", 0.9) for _ in range(10)])
    assert verdict.baseline.baseline("A") is not None
    assert metrics.plate_baseline.labels(plate="A")._value.get() > 0
    verdict([_result("B", 0.1) for _ in range(30)])  # plate A ended 20 fields ago
    assert verdict.baseline.baseline("A") is None
    exported = [s.labels.get("plate") for f in metrics.registry.collect()
                if f.name == "artifactd_plate_baseline_score" for s in f.samples]
    assert exported == ["B"]
