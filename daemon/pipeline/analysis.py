"""What becomes of a decoded frame: detect, segment, post-process, verdict -> a FrameResult.

The config's and model card's thresholds, and frames and FrameResults around the one analysis
in engines.runtime.analyse (which `artifactd eval`, the bench and training also call): the
service's pipeline runs `infer` on its engine threads and `measure` on its post-processing
threads; `artifactd reprocess` runs both in its cluster tasks. So a frame gets the same verdict
and the same artifact rows wherever it is processed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from daemon.config import Config
from daemon.frames import Frame, FrameResult
from engines.runtime.analyse import AnalysisOptions, infer, measure
from engines.runtime.base import Engine
from engines.runtime.familiarity import Familiarity
from engines.runtime.modelcard import ModelBundle, segments_every_frame
from engines.runtime.postprocess import PostprocessOptions
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
        return cls(postprocess_options(config, bundle), detect_threshold(config, bundle),
                   segment_all(config, bundle), Familiarity.from_dict(bundle.card.familiarity))

    @property
    def options(self) -> AnalysisOptions:
        return AnalysisOptions(self.detect_threshold, self.segment_all, self.postprocess)

    def infer(self, engine: Engine, frames: Sequence[Frame]) -> list[Scored]:
        """One batch of frames of one shape through the detector, and the segmenter on the
        frames it runs on (every frame, or the flagged ones, as the card or config says)."""
        scores, probabilities = infer(engine, np.stack([f.pixels for f in frames]), self.options)
        return [Scored(frame, float(score), probability)
                for frame, score, probability in zip(frames, scores, probabilities, strict=True)]

    def measure(self, item: Scored) -> FrameResult:
        """Post-process the probability map, measure each artifact, decide the verdict."""
        frame = item.frame
        found = measure(item.score, item.probability, frame.pixels, self.options,
                        frame.meta.pixel_size_um, self.familiarity)
        return FrameResult(
            frame, found.score, found.flagged, found.labels, found.artifacts,
            found.area_fraction, found.n_artifacts, timestamp(), found.unfamiliarity,
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


def detect_threshold(config: Config, bundle: ModelBundle) -> float:
    """The detector threshold: the config's where set, else the model card's."""
    return config.model.detect_threshold or bundle.card.detect_threshold


def segment_all(config: Config, bundle: ModelBundle) -> bool:
    """Whether the segmenter runs on every frame: as configured, or as the model card says."""
    override = None if config.model.segment == "model" else config.model.segment
    return segments_every_frame(bundle.card, override)
