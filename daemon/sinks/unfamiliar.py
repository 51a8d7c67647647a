"""One warning per plate whose frames mostly look unlike the model's training frames.

A model flags reliably only on images like those it learnt from. When a plate's typical
(median) frame scores above `PLATE_UNFAMILIAR`, its flags (and its silence) may be wrong, and
the fix is a short fine-tune on ~100 labelled frames of that plate: the warning says how.

The plate's median, not single frames, decides: a plate is one cell line on one instrument, so
its frames agree, and their median separates a new domain from the training frames far better
than any one frame does.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import median

from daemon.frames import FrameResult
from daemon.ops.metrics import Metrics
from engines.runtime.familiarity import PLATE_UNFAMILIAR, UNFAMILIAR

logger = logging.getLogger(__name__)

MIN_FRAMES = 20  # a plate is judged once it has this many frames
KEPT = 256  # scores kept per plate for its median (the first ones: the warning comes early)

RETRAIN = ("label about 100 of its frames clean/artifact (labels.csv: source,label) and "
           "fine-tune: artifactd train --init default --frames FRAMES --labels labels.csv "
           "--out my_model (minutes on a CPU), then set [model] path = \"my_model\"")


@dataclass(slots=True)
class _Plate:
    scores: list[float] = field(default_factory=list)
    unfamiliar: int = 0  # frames above UNFAMILIAR
    warned: bool = False


class UnfamiliarPlates:
    """A results sink: counts unfamiliar frames per plate, warns once per plate."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._plates: dict[str, _Plate] = {}

    def __call__(self, results: Sequence[FrameResult], _latencies: Sequence[float]) -> None:
        for result in results:
            if result.duplicate or math.isnan(result.unfamiliarity):
                continue
            plate = self._plates.setdefault(result.frame.meta.plate, _Plate())
            if plate.warned or len(plate.scores) >= KEPT:
                continue
            plate.scores.append(result.unfamiliarity)
            plate.unfamiliar += result.unfamiliarity > UNFAMILIAR
            if len(plate.scores) >= MIN_FRAMES and median(plate.scores) > PLATE_UNFAMILIAR:
                self._warn(result.frame.meta.plate or "(no plate)", plate)

    def _warn(self, name: str, plate: _Plate) -> None:
        plate.warned = True
        self.metrics.unfamiliar_plate.labels(plate=name).set(1)
        logger.warning(
            "plate %s: its first %d frames look unlike anything the model was trained on "
            "(median unfamiliarity %.2f, %d frames above %g), so its flags may be wrong; %s",
            name, len(plate.scores), median(plate.scores), plate.unfamiliar, UNFAMILIAR, RETRAIN)
