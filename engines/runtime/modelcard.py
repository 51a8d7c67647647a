"""A shipped model is a folder: detector.onnx, segmenter.onnx and model.json (its card).

model.json holds what every backend needs to run the model the way it was trained and
evaluated: analysis scale, channels, padding, thresholds, and where it came from.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

DEFAULT_MODEL_DIR = Path(__file__).parents[1] / "weights" / "default"


SEGMENT_MODES = ("flagged", "all")


def frame_flagged(score: float, n_artifacts: int, detect_threshold: float) -> bool:
    """A frame is flagged when the detector says so or the segmenter found an artifact in it.

    With the segmenter run on every frame this also catches what the detector scores low (a
    large faint smudge); either way a frame that has artifacts in its mask is a flagged frame.
    """
    return bool(score >= detect_threshold or n_artifacts > 0)


def segments_every_frame(card: ModelCard, override: str | None = None) -> bool:
    """Whether the segmenter runs on every frame: as `override` says, else as the card says."""
    return (override or card.segment) == "all"


class ModelError(ValueError):
    """A model folder is missing a file or its card is invalid."""


@dataclass(frozen=True, slots=True)
class ModelCard:
    name: str
    version: str
    in_channels: int = 1
    analysis_scale: float = 0.5  # frames are downsampled by this factor inside the models
    pad_multiple: int = 32  # frame H and W are padded up to a multiple of this
    normalisation: str = "per-frame mean/std, inside the model"
    segment_threshold: float = 0.5  # probability above which a pixel is artifact
    detect_threshold: float = 0.5  # detector probability above which a frame is flagged
    min_area_px: int = 40  # objects smaller than this (full-resolution px) are dropped
    # Which frames the segmenter runs on: "flagged" (those the detector flags) or "all". The
    # card says how the thresholds were chosen on validation, and so how the model is run.
    segment: str = "flagged"
    training_data_hash: str = ""
    mode: str = "supervised"  # "supervised" | "weak"
    files: dict[str, str] = field(
        default_factory=lambda: {"detector": "detector.onnx", "segmenter": "segmenter.onnx"}
    )
    evaluation: dict[str, float] = field(default_factory=dict)
    architecture: dict = field(default_factory=dict)  # engines.pytorch.models.Architecture fields
    notes: list[str] = field(default_factory=list)  # how training chose what it chose
    # The training frames' appearance statistics (engines.runtime.familiarity); empty: not known.
    familiarity: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)


@dataclass(frozen=True, slots=True)
class ModelBundle:
    """A model folder on disk, validated."""

    folder: Path
    card: ModelCard

    def path(self, part: str) -> Path:
        return self.folder / self.card.files[part]

    @property
    def model_id(self) -> str:
        """Short, stable id: name, version and a hash of the weights."""
        return f"{self.card.name}-{self.card.version}-{self.weights_hash()[:12]}"

    def weights_hash(self) -> str:
        digest = hashlib.sha256()
        for part in sorted(self.card.files):
            digest.update(self.path(part).read_bytes())
        return digest.hexdigest()


def load_model(folder: str | Path | None = None) -> ModelBundle:
    """Load and check a model folder; `None` or "default" means the shipped default model."""
    folder = DEFAULT_MODEL_DIR if folder is None or str(folder) == "default" else Path(folder)
    card_path = folder / "model.json"
    if not card_path.is_file():
        raise ModelError(f"model folder {folder}: expected a model.json card, found none")
    try:
        raw = json.loads(card_path.read_text())
        card = ModelCard(**raw)
    except (json.JSONDecodeError, TypeError) as exc:
        raise ModelError(f"{card_path}: not a valid model card ({exc})") from exc
    if card.segment not in SEGMENT_MODES:
        raise ModelError(f"{card_path}: segment {card.segment!r}; expected one of {SEGMENT_MODES}")
    bundle = ModelBundle(folder=folder, card=card)
    for part in ("detector", "segmenter"):
        if part not in card.files or not bundle.path(part).is_file():
            raise ModelError(f"model folder {folder}: expected the {part} ONNX file, found none")
    return bundle
