"""What the plate page shows, kept in memory: every plate seen, its wells, their fields.

The writer thread tells it about each batch once the batch is durable (a pipeline sink), and
the page's requests read it; the store is read once, at start-up, for what earlier runs stored.
Work per frame is O(1): one field updated, its well's counts adjusted, one entry in the change
log. The page asks for the changes since the version it last saw (daemon.web.server), so an
update costs what changed, never the whole plate.

A field is one frame of a well, keyed by (field, channel, plane), or by its source when the
frame has no field number. A file rewritten and processed again replaces its field (the newest
result is current). An operator's correction overrides the model's flag, on the map too.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from daemon.frames import FrameResult
from daemon.plates import fits, infer_format, parse_well
from daemon.results.corrections import latest

THROUGHPUT_WINDOW_S = 30.0
CHANGE_LOG = 65536  # changed wells remembered; a page further behind reloads the state
MAX_PLATES = 64  # plates kept (the oldest is forgotten): a service runs for months of screens
RECENT_ALERTS = 50


@dataclass(slots=True)
class FieldView:
    row: int  # frame-table row: thumbnails and corrections are asked for by it
    identity: str
    source: str
    field: int
    channel: int
    plane: int
    score: float
    flagged: bool  # the model's verdict
    area_fraction: float
    n_artifacts: int
    processed_at: str
    thumbnail: bool
    correction: str = ""  # "", "clean" or "artifact"
    corrected_by: str = ""
    corrected_at: str = ""

    @property
    def shown_flagged(self) -> bool:
        """The verdict the page shows: the operator's where given, else the model's."""
        return self.correction == "artifact" if self.correction else self.flagged

    def as_dict(self) -> dict[str, Any]:
        return {
            "row": self.row, "source": self.source, "field": self.field,
            "channel": self.channel, "plane": self.plane, "score": _finite(self.score),
            "flagged": self.flagged, "shown_flagged": self.shown_flagged,
            "area_fraction": _finite(self.area_fraction), "n_artifacts": self.n_artifacts,
            "processed_at": self.processed_at, "thumbnail": self.thumbnail,
            "correction": self.correction, "corrected_by": self.corrected_by,
            "corrected_at": self.corrected_at,
        }


@dataclass(slots=True)
class WellView:
    fields: dict[Any, FieldView] = field(default_factory=dict)
    flagged: int = 0  # fields shown flagged
    corrected: int = 0

    def put(self, key: Any, view: FieldView) -> FieldView | None:
        old = self.fields.get(key)
        if old is not None:
            self._count(old, -1)
        self.fields[key] = view
        self._count(view, +1)
        return old

    def _count(self, view: FieldView, sign: int) -> None:
        self.flagged += sign * view.shown_flagged
        self.corrected += sign * bool(view.correction)

    def recount(self, view: FieldView, change: Callable[[], None]) -> None:
        self._count(view, -1)
        change()
        self._count(view, +1)

    def as_list(self) -> list[int]:
        """[fields seen, shown flagged, corrected]: compact, the map has up to 1536 of them."""
        return [len(self.fields), self.flagged, self.corrected]


@dataclass(slots=True)
class PlateView:
    name: str
    fixed_format: int | None  # from config; None: inferred from the wells seen
    wells: dict[str, WellView] = field(default_factory=dict)
    format: int = 96
    frames: int = 0  # fields currently shown
    flagged: int = 0

    # Wells with no place on the map (a CQ1 number, one beyond a configured layout): kept as
    # they come, so that a header costs what it holds, not a pass over 1536 wells.
    outside: set[str] = field(default_factory=set)

    def well(self, name: str) -> WellView:
        well = self.wells.get(name)
        if well is None:
            well = self.wells[name] = WellView()
            position = parse_well(name)
            grows = self.fixed_format is None and position is not None
            if grows and not fits(self.format, position):
                self.format = max(self.format, infer_format([position]))  # grows, never shrinks
                self.outside = {w for w in self.outside if not _placed(w, self.format)}
            if not _placed(name, self.format):
                self.outside.add(name)
        return well

    def unplaced(self) -> list[str]:
        return sorted(self.outside)

    def header(self) -> dict[str, Any]:
        return {"name": self.name, "format": self.format, "frames": self.frames,
                "flagged": self.flagged, "wells_seen": len(self.wells),
                "unplaced": self.unplaced()}

    def as_dict(self) -> dict[str, Any]:
        return {**self.header(), "wells": {name: w.as_list() for name, w in self.wells.items()}}


class PlateSummary:
    """Thread-safe: the writer thread observes, the page's handlers read."""

    def __init__(self, plate_format: str = "auto", *, max_plates: int = MAX_PLATES,
                 change_log: int = CHANGE_LOG, clock: Callable[[], float] = time.monotonic) -> None:
        self._fixed = None if plate_format == "auto" else int(plate_format)
        self._max_plates = max_plates
        self._clock = clock
        self._lock = threading.Lock()
        self._plates: dict[str, PlateView] = {}
        self._rows: dict[int, tuple[str, str, Any]] = {}  # row -> (plate, well, field key)
        self.version = 0
        self._log: deque[tuple[int, str, str]] = deque(maxlen=change_log)
        self._durable: deque[tuple[float, int]] = deque()  # (when, frames) per batch
        self._started = clock()
        self.frames = 0  # made durable in this run
        self.flagged = 0
        self._alerts: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._recent_alerts: deque[dict[str, Any]] = deque(maxlen=RECENT_ALERTS)

    # ------------------------------------------------------------------ feeding

    def load(self, store: Any) -> int:
        """What the store already holds (an earlier run's plates); returns the frames read."""
        table = store.frame_table()
        corrections = latest(store.correction_table())
        n = len(table["source"])
        with self._lock:
            for row in range(n):
                self._put(row, _view_from_table(table, row), str(table["plate"][row]),
                          str(table["well"][row]))
            for identity, c in corrections.items():
                self._correct(int(c["frame_row"]), identity, str(c["label"]), str(c["by"]),
                              str(c["at"]))
        return n

    def sink(self, store: Any) -> Callable[[Sequence[FrameResult], Sequence[float]], None]:
        """The pipeline sink: called by the writer, right after it stored the batch. The batch's
        new results are, in order, the store's last rows (only the writer appends frames)."""

        def observe(results: Sequence[FrameResult], _latencies: Sequence[float]) -> None:
            fresh = [r for r in results if not r.duplicate]
            self.observe(fresh, first_row=len(store) - len(fresh))

        return observe

    def observe(self, results: Sequence[FrameResult], *, first_row: int) -> None:
        """New results (no duplicates), stored at rows first_row, first_row + 1, ..."""
        with self._lock:
            for i, result in enumerate(results):
                meta = result.frame.meta
                self._put(first_row + i, _view_from_result(first_row + i, result), meta.plate,
                          meta.well)
                self.frames += 1
                self.flagged += bool(result.flagged)
            if results:
                self._durable.append((self._clock(), len(results)))

    def _put(self, row: int, view: FieldView, plate_name: str, well_name: str) -> None:
        plate = self._plates.get(plate_name)
        if plate is None:
            plate = self._plates[plate_name] = PlateView(plate_name, self._fixed,
                                                         format=self._fixed or 96)
            self._forget_oldest_plates()
        well = plate.well(well_name)
        key = (view.field, view.channel, view.plane) if view.field >= 0 else view.source
        old = well.put(key, view)
        if old is not None:
            self._rows.pop(old.row, None)
            plate.frames -= 1
            plate.flagged -= old.shown_flagged
        plate.frames += 1
        plate.flagged += view.shown_flagged
        self._rows[row] = (plate_name, well_name, key)
        self._changed(plate_name, well_name)

    def _changed(self, plate: str, well: str) -> None:
        self.version += 1
        self._log.append((self.version, plate, well))

    def _forget_oldest_plates(self) -> None:
        while len(self._plates) > self._max_plates:
            name = next(iter(self._plates))
            for well in self._plates.pop(name).wells.values():
                for view in well.fields.values():
                    self._rows.pop(view.row, None)

    def correct(self, row: int, identity: str, label: str, by: str,
                at: str) -> dict[str, Any] | None:
        """An operator's correction, once it is durable; the field as now shown, or None when the
        page does not show that row."""
        with self._lock:
            return self._correct(row, identity, label, by, at)

    def _correct(self, row: int, identity: str, label: str, by: str,
                 at: str) -> dict[str, Any] | None:
        view, plate, well = self._find(row)
        if view is None or view.identity != identity:
            return None

        def change() -> None:
            plate.flagged -= view.shown_flagged
            view.correction, view.corrected_by, view.corrected_at = label, by, at
            plate.flagged += view.shown_flagged

        well.recount(view, change)
        self._changed(plate.name, self._rows[row][1])
        return view.as_dict()

    def _find(self, row: int) -> tuple[FieldView | None, Any, Any]:
        where = self._rows.get(row)
        if where is None:
            return None, None, None
        plate = self._plates[where[0]]
        well = plate.wells[where[1]]
        return well.fields[where[2]], plate, well

    def field(self, row: int) -> FieldView | None:
        with self._lock:
            view, _, _ = self._find(row)
            return view

    def alert(self, alert: Any) -> None:
        """An alert sink (daemon.sinks.alerts): firing and resolved alerts for the page."""
        body = alert.as_dict() if hasattr(alert, "as_dict") else dict(alert)
        with self._lock:
            self._alerts[(body.get("plate", ""), body.get("rule", ""), body.get("well", ""))] = body
            self._recent_alerts.append(body)

    # ------------------------------------------------------------------ reading

    def state(self) -> dict[str, Any]:
        """Everything the page draws on load."""
        with self._lock:
            return {"version": self.version,
                    "plates": [p.as_dict() for p in reversed(self._plates.values())]}

    def well(self, plate: str, well: str) -> dict[str, Any] | None:
        with self._lock:
            view = self._plates.get(plate)
            found = view.wells.get(well) if view is not None else None
            if found is None:
                return None
            fields = sorted(found.fields.values(),
                            key=lambda v: (v.field, v.channel, v.plane, v.row))
            return {"plate": plate, "well": well, "counts": found.as_list(),
                    "fields": [f.as_dict() for f in fields]}

    def changes(self, since: int) -> dict[str, Any] | None:
        """The wells changed after version `since` (and their plates' headers); None when the
        log no longer reaches back that far (the page then reloads the whole state)."""
        with self._lock:
            if since >= self.version:
                return {"version": self.version, "plates": [], "wells": []}
            if not self._log or self._log[0][0] > since + 1:
                return None
            changed: dict[tuple[str, str], None] = {}
            for version, plate, well in reversed(self._log):
                if version <= since:
                    break
                changed[(plate, well)] = None
            plates = {plate for plate, _ in changed if plate in self._plates}
            wells = [[plate, well, self._plates[plate].wells[well].as_list()]
                     for plate, well in reversed(changed) if plate in self._plates]
            return {"version": self.version, "wells": wells,
                    "plates": [self._plates[p].header() for p in sorted(plates)]}

    def status(self) -> dict[str, Any]:
        with self._lock:
            now = self._clock()
            while self._durable and self._durable[0][0] < now - THROUGHPUT_WINDOW_S:
                self._durable.popleft()
            window = min(THROUGHPUT_WINDOW_S, max(now - self._started, 1.0))
            recent = sum(n for _, n in self._durable)
            alerts = sorted(self._alerts.values(), key=lambda a: a.get("at", ""), reverse=True)
            alerts.sort(key=lambda a: a.get("state") != "firing")  # firing first, newest first
            return {
                "throughput_fps": recent / window,
                "frames": self.frames,
                "flagged": self.flagged,
                "alerts": alerts,
                "recent_alerts": list(self._recent_alerts)[::-1],
            }


def _placed(well: str, wells: int) -> bool:
    position = parse_well(well)
    return position is not None and fits(wells, position)


def _view_from_result(row: int, result: FrameResult) -> FieldView:
    meta = result.frame.meta
    return FieldView(
        row=row, identity=result.frame.identity, source=meta.source, field=meta.field,
        channel=meta.channel, plane=meta.plane, score=float(result.score),
        flagged=bool(result.flagged), area_fraction=float(result.area_fraction),
        n_artifacts=int(result.n_artifacts), processed_at=result.processed_at,
        thumbnail=result.thumbnail is not None,
    )


def _view_from_table(table: dict[str, np.ndarray], row: int) -> FieldView:
    return FieldView(
        row=row, identity=str(table["identity"][row]), source=str(table["source"][row]),
        field=int(table["field"][row]), channel=int(table["channel"][row]),
        plane=int(table["plane"][row]), score=float(table["score"][row]),
        flagged=bool(table["flagged"][row]), area_fraction=float(table["area_fraction"][row]),
        n_artifacts=int(table["n_artifacts"][row]), processed_at=str(table["processed_at"][row]),
        thumbnail=int(table["thumbnail_index"][row]) >= 0,
    )


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None
