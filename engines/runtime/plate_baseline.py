"""The plate-relative verdict: the detector flags a field only when it stands out from its plate.

In a real screen about 90 % of fields are clean, so a plate's typical field is a clean one. A
model that finds a whole plate's cells unusual (another cell line, stain or microscope) scores
every field of it high: on an independently written renderer every clean field scored 0.74 to
1.0, and the whole plate was flagged. Against the plate's own fields those scores are ordinary.
So once a plate has `min_fields` fields, the detector's vote on a field stands only if the
field's score is at least `margin` above the plate's baseline, in logits (log-odds, where
scores near 0 and 1 spread out evenly):

    logit(score) >= min(baseline, logit(ceiling)) + margin

The baseline is the lower quartile of the plate's last `window` field scores: a clean field's
score as long as fewer than three in four fields hold artifacts. On plates like the model's
training frames clean fields score far below the detector threshold, so the bar sits below it
and nothing changes. The `ceiling` keeps a plate whose every field really is dirty flagged:
fields the detector is sure of (above ~0.9986 with the defaults) are flagged whatever the
plate's baseline.

Frames are judged in the order they come, against the fields before them; the first
`min_fields` fields of a plate get the detector's own verdict.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

_EPS = 1e-7  # float32 scores reach 0 and 1; keep their logits finite


@dataclass(frozen=True, slots=True)
class PlateBaselineOptions:
    enabled: bool = True
    margin: float = 2.0  # logits above the plate's baseline: odds 7.4x the typical field's
    min_fields: int = 8  # fields of a plate before its baseline is used
    quantile: float = 0.25  # of the plate's field scores: the baseline
    window: int = 200  # the plate's most recent fields the baseline is taken over
    ceiling: float = 0.99  # the baseline never counts as higher than this score


def logit(score: float) -> float:
    p = min(max(float(score), _EPS), 1 - _EPS)
    return math.log(p / (1 - p))


class PlateBaseline:
    """Each plate's recent detector scores; says whether a field stands out from them.

    Called from one thread, in the order fields are judged (the service's writer, reprocess's
    committer, `artifactd eval`).
    """

    def __init__(self, options: PlateBaselineOptions | None = None) -> None:
        self.options = options or PlateBaselineOptions()
        self._plates: dict[str, deque[float]] = {}

    def stands_out(self, plate: str, score: float) -> bool:
        """Whether this field's score is high for its plate (True while the plate has too few
        fields to tell); then the score joins the plate's baseline."""
        value = logit(score)
        history = self._history(plate)
        bar = self._bar(history)
        history.append(value)
        return bar is None or value >= bar

    def seed(self, plate: str, scores) -> None:
        """Scores of fields judged before (a restart reads them back from the store)."""
        self._history(plate).extend(logit(s) for s in scores)

    def forget(self, plate: str) -> None:
        """A plate that has ended."""
        self._plates.pop(plate, None)

    def baseline(self, plate: str) -> float | None:
        """The plate's baseline as a score (None until it has `min_fields` fields)."""
        history = self._plates.get(plate)
        if history is None or len(history) < self.options.min_fields:
            return None
        return 1 / (1 + math.exp(-float(np.quantile(history, self.options.quantile))))

    def _history(self, plate: str) -> deque[float]:
        history = self._plates.get(plate)
        if history is None:
            history = self._plates[plate] = deque(maxlen=self.options.window)
        return history

    def _bar(self, history: deque[float]) -> float | None:
        o = self.options
        if not o.enabled or len(history) < o.min_fields:
            return None
        baseline = float(np.quantile(history, o.quantile))
        return min(baseline, logit(o.ceiling)) + o.margin


def plate_verdict(score: float, n_artifacts: int, stands_out: bool, detect_threshold: float,
                  segment_all: bool) -> tuple[bool, bool]:
    """(flagged, keep the segmentation) of a field once its plate has had its say.

    Only the detector's vote is plate-relative. Where the segmenter runs on every frame, what
    it found still flags the frame; where it runs only on flagged frames, a field whose vote
    is withdrawn is a clean field, and its segmentation (made because of that vote) goes too.
    """
    detector = score >= detect_threshold and stands_out
    if segment_all:
        return bool(detector or n_artifacts > 0), True
    return bool(detector), bool(detector)
