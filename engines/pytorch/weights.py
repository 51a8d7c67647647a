"""Loading a model folder's torch weights (the torch backend, parity tests, fine-tuning)."""

from __future__ import annotations

from pathlib import Path

import torch

from engines.pytorch.models import Architecture, Detector, UNet
from engines.runtime.modelcard import ModelCard


def load_torch_models(folder: Path, card: ModelCard) -> tuple[Detector, UNet]:
    """The torch modules of a model folder (for the torch backend and for parity tests)."""
    arch = Architecture.from_dict(card.architecture)
    detector, segmenter = Detector(arch), UNet(arch)
    detector.load_state_dict(torch.load(folder / card.files["detector_torch"], weights_only=True))
    segmenter.load_state_dict(torch.load(folder / card.files["segmenter_torch"], weights_only=True))
    return detector.eval(), segmenter.eval()
