"""A detector fine-tune that keeps its first layers as they are (`--fixed-layers N`).

The detector's first layers (its stem, then its first stages) work at the finest scales of
the frame and cost most of every step (full-resolution convolutions, forward and backward).
Kept fixed, their output for a training frame never changes, so it is computed once per frame
and orientation (flips and quarter turns), and the steps train only the later layers and the
head: several times faster on a 2-core CPU (bench/RESULTS.md, adaptation). Brightness and
texture augmentation cannot follow the frames into the stored features; baking a draw of them
in beside each orientation measured worse on a new renderer.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from tqdm import tqdm

from engines.data.dataset import Dataset
from engines.pytorch.models import Detector
from engines.training.batches import to_tensor

logger = logging.getLogger(__name__)

ORIENTATIONS = 8  # the identity, three quarter turns, and the same four mirrored
MEMORY_BUDGET = 2 * 1024**3  # bytes the stored features may take; fewer orientations beyond


def oriented(frames: torch.Tensor, k: int) -> torch.Tensor:
    """Orientation k (0-7) of a (N, C, H, W) batch: k // 4 mirrors, k % 4 quarter turns."""
    if k >= 4:
        frames = frames.flip(3)
    return torch.rot90(frames, k % 4, (2, 3))


class FixedFeatures:
    """The fixed layers' output for every training frame, in up to ORIENTATIONS orientations,
    stored as float16 (the layers after them compute in float32)."""

    def __init__(self, model: Detector, dataset: Dataset, indices: np.ndarray, layers: int,
                 multiple: int, device: torch.device) -> None:
        self.features: dict[int, list[torch.Tensor]] = {}
        self.orientations = ORIENTATIONS
        model.eval()
        with torch.no_grad():
            for n, i in enumerate(tqdm(indices, desc="fixed layers", unit="frame")):
                x = to_tensor([dataset.samples[i].image], multiple).to(device)
                first = model.features_before(x, layers).half()
                if n == 0:  # the first frame's size says how many orientations fit
                    self.orientations = self._orientations_that_fit(first, layers, len(indices))
                self.features[int(i)] = [first, *(model.features_before(oriented(x, k),
                                                                        layers).half()
                                                  for k in range(1, self.orientations))]

    @staticmethod
    def _orientations_that_fit(one: torch.Tensor, layers: int, frames: int) -> int:
        per_frame = one.numel() * one.element_size()
        fits = int(MEMORY_BUDGET // max(per_frame * frames, 1))
        chosen = max(1, min(ORIENTATIONS, fits))
        logger.info("the detector's first %d layer(s) kept fixed: their output is computed "
                    "once for %d frames in %d orientation(s) (%.0f MB)", layers, frames,
                    chosen, per_frame * frames * chosen / 1e6)
        return chosen

    def batch(self, picks: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        """The stored features of these frames, all in one orientation drawn for the batch (a
        quarter turn swaps height and width, and a batch must share one shape)."""
        k = int(rng.integers(self.orientations))
        return torch.cat([self.features[int(i)][k] for i in picks]).float()
