"""Detect -> segment -> post-process -> verdict: how a model judges a frame, written once.

The service, `artifactd eval`, the bench and training's validation all call these, so "the
evaluation runs the model as deployed" holds by construction, not by copy. The service runs the
two halves in separate stages (`infer` on its inference threads, `measure` on its
post-processing threads); everything else calls `analyse`, which is the two in a row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from engines.runtime.base import Engine
from engines.runtime.familiarity import Familiarity
from engines.runtime.modelcard import ModelCard, frame_flagged, segments_every_frame
from engines.runtime.postprocess import PostprocessOptions, postprocess


@dataclass(frozen=True, slots=True)
class AnalysisOptions:
    detect_threshold: float
    segment_all: bool  # segment every frame, not only those the detector flags
    postprocess: PostprocessOptions

    @classmethod
    def from_card(cls, card: ModelCard, segment: str | None = None,
                  detect_threshold: float | None = None) -> AnalysisOptions:
        """As the model card says (`segment` and `detect_threshold` override it)."""
        threshold = card.detect_threshold if detect_threshold is None else detect_threshold
        return cls(threshold, segments_every_frame(card, segment),
                   PostprocessOptions(threshold=card.segment_threshold,
                                      min_area_px=card.min_area_px))


@dataclass(frozen=True, slots=True)
class Analysis:
    """One frame's verdict and what the segmenter found in it."""

    score: float  # detector probability that the frame holds an artifact
    flagged: bool
    labels: np.ndarray  # (H, W) uint16/uint32, 0 = background
    artifacts: dict[str, np.ndarray]  # ARTIFACT_COLUMNS -> 1-D; empty when none
    area_fraction: float
    n_artifacts: int
    unfamiliarity: float  # NaN without the model's familiarity statistics


def infer(engine: Engine, batch: np.ndarray, options: AnalysisOptions
          ) -> tuple[np.ndarray, list[np.ndarray | None]]:
    """Detector scores of a batch, and the segmenter's probability map of each frame it
    segments (None for the others)."""
    scores = np.asarray(engine.detect(batch), dtype=np.float32)
    chosen = (np.arange(len(batch)) if options.segment_all
              else np.flatnonzero(scores >= options.detect_threshold))
    probabilities: list[np.ndarray | None] = [None] * len(batch)
    if len(chosen):
        for i, p in zip(chosen, engine.segment(batch[chosen]), strict=True):
            probabilities[i] = p
    return scores, probabilities


def measure(score: float, probability: np.ndarray | None, pixels: np.ndarray,
            options: AnalysisOptions, pixel_size_um: float | None = None,
            familiarity: Familiarity | None = None) -> Analysis:
    """Post-processing and the verdict of one frame (pixels (H, W) or (C, H, W))."""
    intensity = pixels if pixels.ndim == 2 else pixels[0]
    unfamiliarity = familiarity.score(intensity) if familiarity is not None else math.nan
    if probability is None:
        empty = np.zeros(intensity.shape, dtype=np.uint16)
        flagged = frame_flagged(score, 0, options.detect_threshold)
        return Analysis(float(score), flagged, empty, {}, 0.0, 0, unfamiliarity)
    found = postprocess(probability, intensity, options.postprocess, pixel_size_um)
    flagged = frame_flagged(score, found.n_artifacts, options.detect_threshold)
    return Analysis(float(score), flagged, found.labels, found.artifacts, found.area_fraction,
                    found.n_artifacts, unfamiliarity)


def analyse(engine: Engine, batch: np.ndarray, options: AnalysisOptions,
            pixel_sizes: list[float | None] | None = None,
            familiarity: Familiarity | None = None) -> list[Analysis]:
    """Both halves for a batch of frames of one shape."""
    scores, probabilities = infer(engine, batch, options)
    sizes = pixel_sizes or [None] * len(batch)
    return [measure(float(s), p, frame, options, size, familiarity)
            for s, p, frame, size in zip(scores, probabilities, batch, sizes, strict=True)]
