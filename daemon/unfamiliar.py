"""One warning per plate whose frames mostly look unlike the model's training frames.

A model flags reliably only on images like those it learnt from. When most of a plate's frames
score above `engines.familiarity.UNFAMILIAR`, its flags (and its silence) may be wrong, and the
fix is a short fine-tune on ~100 labelled frames of that plate: the warning says how.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

from daemon.frames import FrameResult
from daemon.metrics import Metrics
from engines.familiarity import UNFAMILIAR

logger = logging.getLogger(__name__)

MIN_FRAMES = 20  # a plate is judged once it has this many frames
MOST = 0.5  # share of unfamiliar frames that makes a plate unfamiliar

RETRAIN = ("label about 100 of its frames clean/artifact (labels.csv: source,label) and "
           "fine-tune: artifactd train --init default --frames FRAMES --labels labels.csv "
           "--out my_model (minutes on a CPU), then set [model] path = \"my_model\"")


@dataclass(slots=True)
class _Plate:
    seen: int = 0
    unfamiliar: int = 0
    warned: bool = False


class UnfamiliarPlates:
    """A results sink: counts unfamiliar frames per plate, warns once per plate."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._plates: dict[str, _Plate] = {}

    def __call__(self, results: Sequence[FrameResult], _latencies: Sequence[float]) -> None:
        for result in results:
            if math.isnan(result.unfamiliarity):
                continue
            plate = self._plates.setdefault(result.frame.meta.plate, _Plate())
            plate.seen += 1
            plate.unfamiliar += result.unfamiliarity > UNFAMILIAR
            if not plate.warned and plate.seen >= MIN_FRAMES and plate.unfamiliar >= MOST * plate.seen:
                self._warn(result.frame.meta.plate or "(no plate)", plate)

    def _warn(self, name: str, plate: _Plate) -> None:
        plate.warned = True
        self.metrics.unfamiliar_plate.labels(plate=name).set(1)
        logger.warning(
            "plate %s: %d of its first %d frames look unlike anything the model was trained on "
            "(unfamiliarity above %g), so its flags may be wrong; %s",
            name, plate.unfamiliar, plate.seen, UNFAMILIAR, RETRAIN)
