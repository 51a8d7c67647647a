"""What a training run is asked to do: its options, its result, and the checks that the options
fit the data (device, mode, detector crops) before any network trains."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from engines.data.dataset import Dataset, DatasetError
from engines.pytorch.models import Architecture, Detector, UNet
from engines.runtime.modelcard import load_model


@dataclass(frozen=True, slots=True)
class TrainOptions:
    # "weak" | "supervised" | "auto" (supervised when every artifact frame has a mask)
    mode: str = "auto"
    detector_steps: int = 600
    segmenter_steps: int = 1200
    batch_size: int = 8
    crop: int = 256  # segmenter training crop, full-resolution px (multiple of the pad multiple)
    # Fraction of segmenter crops centred on an artifact. Artifacts are small, so some focus is
    # needed; too much teaches a prior far above a whole frame's and the U-Net over-segments.
    focus: float = 0.5
    learning_rate: float = 2e-3
    val_fraction: float = 0.2
    seed: int = 0
    device: str = "auto"
    checkpoint_every: int = 100
    cam_top_k: int = 32
    # Folder of ScoreCAM maps kept between runs: the maps are the slow part of weak mode, and
    # a later stage with the same detector and frames needs the same ones.
    cam_cache: Path | None = None
    min_area_px: int = 40  # the smallest minimum area validation considers
    # Share of clean validation frames the chosen verdict may flag: a screen is ~90 % clean.
    max_false_flag_rate: float = 0.03
    # Frames the segmenter runs on in service: "all", "flagged", or "auto" (the one whose
    # verdict has the better image F1 on validation); validation chooses the detector
    # threshold for it (engines.runtime.modelcard.frame_flagged).
    segment: str = "auto"
    name: str = "artifactd"
    init: Path | None = None  # start both networks from this model folder (fine-tuning)
    detector_from: Path | None = None  # take this model's detector as is; train only the U-Net
    arch: Architecture = field(default_factory=Architecture)
    # Wall-clock minutes for the training steps of both networks; None: no limit. The steps
    # are cut to what fits at the measured pace; the learning rate still decays to zero.
    minutes: float | None = None
    # The detector's first N layers (its stem, then its stages) kept as they are
    # (engines.training.fixed_layers): their output is computed once per frame, and each step
    # is several times faster (a quicker, slightly weaker fine-tune). 0: every layer trains.
    fixed_layers: int = 0


DEFAULTS = TrainOptions()
# Fine-tuning (--init) starts from networks that already know artifacts, so it needs far fewer
# steps: on ~100 labelled frames of 1080 x 1080 this took 7.3 minutes on a 2-core CPU (bench/
# RESULTS.md), the detector on full frames (~1.3 s a step) taking most of it; ScoreCAM (~1.3 s
# per artifact frame) and the U-Net steps come on top only where they run.
FINE_TUNE_STEPS = {"detector": 300, "segmenter": 600}
# ...and keeps its steps within this many minutes, so that with loading, validation and export
# it ends within 10 minutes however fast the machine is that day (the same steps took 1.3 s on
# one day and 1.7 s on another on the same kind of 2-core CPU).
FINE_TUNE_MINUTES = 8.0
# With --fixed-layers 2 a detector step costs about a twentieth (0.07 s against 1.25 s on a
# 2-core CPU), so a fine-tune takes four times the steps: on 100 caustic frames 1.8 minutes
# instead of 6.7, for a little less (image F1 0.84 against 0.87; bench/RESULTS.md, adaptation).
FIXED_LAYERS_FINE_TUNE_DETECTOR_STEPS = 1200
# From labels alone the fine-tune keeps the U-Net as it is: on frames of a renderer it had never
# seen, 600 steps on ScoreCAM pseudo-masks (image evidence or its own outlines) lowered pixel
# IoU (bench/RESULTS.md, adaptation). --segmenter-steps N still trains it.
LABELS_ONLY_FINE_TUNE_SEGMENTER_STEPS = 0


@dataclass(slots=True)
class TrainedModels:
    detector: Detector
    segmenter: UNet
    detect_threshold: float
    segment_threshold: float
    mode: str
    segment: str  # frames the segmenter runs on: "all" | "flagged"
    validation: dict[str, float]
    notes: list[str]
    familiarity: dict = field(default_factory=dict)  # engines.runtime.familiarity statistics
    min_area_px: int = 40  # chosen on validation with the thresholds


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DatasetError("--device cuda: no CUDA device is available; expected --device cpu")
    return torch.device(name)


def resolve_mode(dataset: Dataset, mode: str) -> str:
    artifact_frames = [s for s in dataset.samples if s.label == 1]
    all_masked = all(s.mask is not None for s in artifact_frames)
    if mode == "auto":
        return "supervised" if all_masked else "weak"
    if mode == "supervised" and not all_masked:
        missing = next(s.source for s in artifact_frames if s.mask is None)
        raise DatasetError(
            f"supervised mode needs a mask for every artifact frame; none for {missing} "
            "(give --masks, or use --mode weak)"
        )
    return mode


@dataclass(frozen=True, slots=True)
class Starting:
    """The thresholds on the card of the model being fine-tuned (--init). Validation keeps
    them where its frames cannot measure a better choice: the U-Net's pixel threshold without
    validation masks; and, where there are too few clean frames to measure the false-flag cap
    (at 3 %, fewer than 34), the segment mode and minimum area, with the detector threshold as
    a floor. A 20-frame split of ~100 labelled frames otherwise put a fine-tune's threshold at
    0.3 with none of its 9 clean frames flagged, and it flagged 27 % of clean test frames; with
    the floor alone it chose to segment every frame, and flagged 43 %."""

    detect_threshold: float
    segment_threshold: float
    segment: str = "flagged"
    min_area_px: int = 40

    @classmethod
    def of(cls, options: TrainOptions) -> Starting | None:
        """The --init model card's (None when training from scratch)."""
        if options.init is None:
            return None
        card = load_model(options.init).card
        return cls(card.detect_threshold, card.segment_threshold, card.segment, card.min_area_px)

    def detector_floor(self, clean_frames: int, max_false_flag_rate: float) -> float:
        # A cap of 0 is measured as strictly as the default 3 %: 34 clean frames.
        measurable = clean_frames * max(max_false_flag_rate, 0.03) >= 1
        return 0.0 if measurable else self.detect_threshold
