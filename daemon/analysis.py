"""What becomes of a decoded frame: detect, segment, post-process, verdict -> a FrameResult.

One definition for every place that analyses frames: the service's pipeline runs `infer` on its
engine threads and `measure` on its post-processing threads; `artifactd reprocess` runs both in
its cluster tasks. So a frame gets the same verdict and the same artifact rows wherever it is
processed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from daemon.config import Config
from daemon.frames import Frame, FrameResult
from engines.backends.base import Engine
from engines.familiarity import Familiarity
from engines.modelcard import ModelBundle, frame_flagged, segments_every_frame
from engines.postprocess import PostprocessOptions, postprocess
from engines.timestamps import timestamp


@dataclass(slots=True)
class Scored:
    """A frame after the models, before post-processing."""

    frame: Frame
    score: float
    probability: np.ndarray | None  # None: not segmented (not flagged)


@dataclass(frozen=True, slots=True)
class Analysis:
    """How frames are judged: the model card's and the config's thresholds."""

    postprocess: PostprocessOptions
    detect_threshold: float
    segment_all: bool = False
    familiarity: Familiarity | None = None  # the model's training frames' appearance

    @classmethod
    def for_model(cls, config: Config, bundle: ModelBundle) -> Analysis:
        return cls(postprocess_options(config, bundle), bundle.card.detect_threshold,
                   segment_all(config, bundle), Familiarity.from_dict(bundle.card.familiarity))

    def infer(self, engine: Engine, frames: Sequence[Frame]) -> list[Scored]:
        """One batch of frames of one shape through the detector, and the segmenter on the
        frames it runs on (every frame, or the flagged ones, as the card or config says)."""
        batch = np.stack([f.pixels for f in frames])
        scores = engine.detect(batch)
        flagged = scores >= self.detect_threshold
        chosen = np.arange(len(frames)) if self.segment_all else np.flatnonzero(flagged)
        probabilities: list[np.ndarray | None] = [None] * len(frames)
        if len(chosen):
            for i, p in zip(chosen, engine.segment(batch[chosen]), strict=True):
                probabilities[i] = p
        return [Scored(frame, float(score), probability)
                for frame, score, probability in zip(frames, scores, probabilities, strict=True)]

    def measure(self, item: Scored) -> FrameResult:
        """Post-process the probability map, measure each artifact, decide the verdict."""
        frame = item.frame
        intensity = frame.pixels if frame.pixels.ndim == 2 else frame.pixels[0]
        stamp = timestamp()
        familiarity = self.familiarity
        unfamiliarity = familiarity.score(intensity) if familiarity is not None else math.nan
        if item.probability is None:
            empty = np.zeros(intensity.shape, dtype=np.uint16)
            flagged = frame_flagged(item.score, 0, self.detect_threshold)
            return FrameResult(frame, item.score, flagged, empty, {}, 0.0, 0, stamp, unfamiliarity)
        found = postprocess(item.probability, intensity, self.postprocess, frame.meta.pixel_size_um)
        flagged = frame_flagged(item.score, found.n_artifacts, self.detect_threshold)
        return FrameResult(
            frame, item.score, flagged, found.labels, found.artifacts,
            found.area_fraction, found.n_artifacts, stamp, unfamiliarity,
        )


def postprocess_options(config: Config, bundle: ModelBundle) -> PostprocessOptions:
    pp, card = config.postprocess, bundle.card
    method = "adaptive" if pp.method == "adaptive" else "fixed"
    threshold = card.segment_threshold if pp.method == "model" else pp.threshold
    return PostprocessOptions(
        method=method, threshold=threshold, adaptive_block_px=pp.adaptive_block_px,
        min_area_px=pp.min_area_px or card.min_area_px, min_area_um2=pp.min_area_um2,
        fill_holes=pp.fill_holes,
    )


def segment_all(config: Config, bundle: ModelBundle) -> bool:
    """Whether the segmenter runs on every frame: as configured, or as the model card says."""
    override = None if config.model.segment == "model" else config.model.segment
    return segments_every_frame(bundle.card, override)
