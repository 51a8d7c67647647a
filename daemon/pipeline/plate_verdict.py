"""The plate-relative verdict on the writer thread: a field flagged only when it stands out.

The rule and its reasons are engines.runtime.plate_baseline's. Here it is applied to results in
the order they reach the writer (the order frames were judged), before the store, the journal
and the sinks see them: the stored verdict, the published one and the alerts agree. A field
showing dirt on the optics (marked stationary just before) keeps its flag. A field
whose detector vote is withdrawn, where the segmenter runs only on flagged frames, is stored as
a clean field (no mask, no artifact rows), as if the detector had not flagged it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from daemon.config import ModelConfig
from daemon.frames import STATIONARY, FrameResult
from daemon.ops.metrics import Metrics
from daemon.pipeline.analysis import Analysis
from engines.runtime.plate_baseline import PlateBaseline, PlateBaselineOptions, plate_verdict

logger = logging.getLogger(__name__)


class PlateVerdict:
    def __init__(self, options: PlateBaselineOptions, detect_threshold: float,
                 segment_all: bool, metrics: Metrics | None = None) -> None:
        self.baseline = PlateBaseline(options)
        self.detect_threshold = detect_threshold
        self.segment_all = segment_all
        self.metrics = metrics
        self._told: set[str] = set()  # plates whose operator has been told once
        self._judged = 0  # fields judged, and the count when each plate's last one was
        self._last_seen: dict[str, int] = {}

    def __call__(self, results: Sequence[FrameResult]) -> list[FrameResult]:
        return [self.judge(r) for r in results]

    @classmethod
    def for_store(cls, config: ModelConfig, analysis: Analysis, store: Any,
                  metrics: Metrics | None = None) -> PlateVerdict | None:
        """As configured, with the scores of the fields the store already holds (a plate
        resumed after a restart is judged against its own fields at once); None when off."""
        if not config.plate_relative:
            return None
        verdict = cls(config.plate_baseline, analysis.detect_threshold, analysis.segment_all,
                      metrics)
        table = store.frame_table(("plate", "score"))  # not the identities: start-up stays quick
        plates, scores = np.asarray(table["plate"]), np.asarray(table["score"])
        window = verdict.baseline.options.window
        for plate in np.unique(plates) if len(plates) else ():
            verdict.baseline.seed(str(plate), scores[plates == plate][-window:])
        return verdict

    def judge(self, result: FrameResult) -> FrameResult:
        plate = result.frame.meta.plate
        stands = self.baseline.stands_out(plate, result.score)
        self._report(plate)
        self._end_plates(plate)
        flagged, keep = plate_verdict(result.score, result.n_artifacts, stands,
                                      self.detect_threshold, self.segment_all)
        if flagged or not result.flagged or on_the_optics(result):  # nothing withdrawn
            return result
        if self.metrics is not None:
            self.metrics.typical_for_plate.inc()
        self._tell(plate)
        return replace(result, flagged=flagged) if keep else as_clean(result)

    def _report(self, plate: str) -> None:
        baseline = self.baseline.baseline(plate)
        if baseline is not None and self.metrics is not None:
            self.metrics.plate_baseline.labels(plate=plate or "-").set(baseline)

    def _end_plates(self, plate: str) -> None:
        """A plate none of whose fields was among the last `window` has ended: its baseline
        and its series go, or a service running for months would keep one per plate."""
        self._judged += 1
        self._last_seen[plate] = self._judged
        window = self.baseline.options.window
        if self._judged % window:
            return
        for name, last in list(self._last_seen.items()):
            if self._judged - last >= window:
                del self._last_seen[name]
                self.baseline.forget(name)
                if self.metrics is not None:
                    with contextlib.suppress(KeyError):
                        self.metrics.plate_baseline.remove(name or "-")

    def _tell(self, plate: str) -> None:
        if plate in self._told:
            return
        self._told.add(plate)
        logger.warning(
            "plate %s: its fields score high on the detector (baseline %.2f), so a field is "
            "flagged only when it stands out from them ([model] plate_relative); a plate whose "
            "cells the model has not seen is better served by a model fine-tuned on them "
            "(artifactd train --init default)", plate or "(unnamed)",
            self.baseline.baseline(plate) or float("nan"))


def on_the_optics(result: FrameResult) -> bool:
    """Dirt on the light path is at the same place in every field, so every field scores alike
    and its plate's baseline is high; the optics tracker (daemon.sinks.optics), which marks it
    before this verdict, says it is real."""
    stationary = result.artifacts.get(STATIONARY)
    return stationary is not None and bool(np.any(stationary))


def as_clean(result: FrameResult) -> FrameResult:
    """The result as if the detector had not flagged it: no verdict, no mask, no rows."""
    thumbnail = result.thumbnail
    if thumbnail is not None:
        thumbnail = replace(thumbnail, labels=np.zeros_like(thumbnail.labels))
    return replace(result, flagged=False, labels=np.zeros_like(result.labels), artifacts={},
                   area_fraction=0.0, n_artifacts=0, thumbnail=thumbnail)
