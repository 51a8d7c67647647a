"""Corrections: the operator's word on a frame, "clean" or "artifact", overriding the model's.

Recorded from the plate page into the store's `corrections` table: append-only and durable,
each row with the frame it is about, the label, who gave it (a token's name, or "loopback" for
someone at the acquisition PC itself) and when. A frame corrected twice keeps both rows; the
later one counts. `artifactd export STORE --labels labels.csv` turns them into the
`source,label` CSV that `artifactd train --labels` reads, so a fine-tune on the day's
corrections is one command.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from engines.data.dataset import LABELS  # what `artifactd train --labels` accepts

LOOPBACK = "loopback"  # who, for a correction made on this machine without a token


@dataclass(frozen=True, slots=True)
class Correction:
    frame_row: int  # the frame table's row
    identity: str  # that row's identity (checked against the store when recorded)
    source: str
    label: str  # "clean" | "artifact"
    by: str  # a token's name, or LOOPBACK
    at: str = ""  # RFC 3339 UTC; the store sets it when empty

    def check(self) -> None:
        if self.label not in LABELS:
            raise ValueError(f"label {self.label!r}: expected one of {', '.join(LABELS)}")
        if not self.by:
            raise ValueError("a correction needs who made it")


class CorrectionTables(Protocol):
    def frame_table(self) -> dict[str, np.ndarray]: ...
    def correction_table(self) -> dict[str, np.ndarray]: ...


def latest(table: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """identity -> its latest correction (label, by, at, frame_row, source)."""
    found: dict[str, dict[str, Any]] = {}
    names = [name for name in table if name != "identity"]
    for i, identity in enumerate(table["identity"]):
        found[str(identity)] = {name: _plain(table[name][i]) for name in names}
    return found


@dataclass(frozen=True, slots=True)
class TrainingLabels:
    rows: list[tuple[str, str]]  # (source, label), in frame-table order
    streamed: int  # corrections of streamed frames: no file to train on
    replaced: int  # corrections of a file version since replaced by a newer one


def training_labels(store: CorrectionTables) -> TrainingLabels:
    """The corrected frames as `artifactd train --labels` rows: the latest correction of the
    current version of each file (a correction of an earlier version of a rewritten file no
    longer describes what is on disk)."""
    corrected = latest(store.correction_table())
    frames = store.frame_table()
    current: dict[str, int] = {}
    for row, source in enumerate(frames["source"]):
        current[str(source)] = row
    rows: list[tuple[str, str]] = []
    streamed = replaced = 0
    for identity, correction in _by_row(corrected):
        row, source = int(correction["frame_row"]), str(correction["source"])
        if source.startswith("zmq:"):
            streamed += 1
        elif current.get(source) != row or str(frames["identity"][row]) != identity:
            replaced += 1
        else:
            rows.append((source, str(correction["label"])))
    return TrainingLabels(rows, streamed, replaced)


def _by_row(corrected: dict[str, dict[str, Any]]) -> Iterable[tuple[str, dict[str, Any]]]:
    return sorted(corrected.items(), key=lambda item: int(item[1]["frame_row"]))


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
