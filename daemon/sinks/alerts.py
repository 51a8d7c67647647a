"""Contamination alerts: rules over the stream of processed fields, per plate.

Four rules (thresholds from `[alerts]` and `[optics]` in config.toml):

- "plate_fraction": of the plate's last `plate_window` fields, a fraction of at least
  `plate_flagged_fraction` is flagged. Judged once the window is full; resolves when the fraction
  drops below the threshold.
- "well_fields": a well has `well_flagged_fields` or more flagged fields. One alert per well;
  flagged fields never become clean, so it resolves when the plate ends.
- "area_surge": a field's artifact area fraction is at least `surge_factor` x the plate's
  baseline, the median area fraction of its previous max(plate_window, surge_min_fields) fields
  (not below BASELINE_FLOOR), judged once `surge_min_fields` fields were seen. Resolves after
  SURGE_RESOLVE_FIELDS fields in a row below the threshold.
- "optics": an artifact at the same place in the field, field after field in different wells
  (daemon.sinks.optics, `[optics]`): dirt on the camera, objective or light path, not in the
  plate. One alert per place; resolves when the place is no longer seen (the light path was
  cleaned).
  Artifacts on the optics do not count towards the three rules above: a field whose only
  artifacts are on the optics is judged clean, its area without them (daemon.sinks.alert_hold makes
  fields wait for that decision).

Each alert fires once and resolves once: state is kept per (plate, rule, well or place). A plate
ends when `plate_window` frames in a row came from other plates; its firing alerts resolve and its
state is forgotten, so a daemon that runs for months holds only the plates in progress. Frames are
taken as fields (one analysed channel per field, as the folder source delivers them). Each judged
field is counted per plate in artifactd_plate_fields_total{plate,outcome} (the flag rate per
plate), whose series go when the plate ends.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import statistics
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from daemon.config import AlertsConfig
from daemon.frames import FrameResult
from daemon.ops.metrics import Metrics
from engines.timestamps import timestamp

if TYPE_CHECKING:
    from daemon.sinks.optics import OpticsEvent

logger = logging.getLogger(__name__)

PLATE_FRACTION = "plate_fraction"
WELL_FIELDS = "well_fields"
AREA_SURGE = "area_surge"
OPTICS = "optics"
RULES = (PLATE_FRACTION, WELL_FIELDS, AREA_SURGE, OPTICS)
OUTCOMES = ("clean", "flagged")  # of artifactd_plate_fields_total
SURGE_RESOLVE_FIELDS = 5
# On a clean plate the median area is 0, and without a floor any speck of dust would be a
# "surge"; with it and the default factor 3, a surge needs at least 0.6 % of the field.
BASELINE_FLOOR = 0.002


@dataclass(frozen=True, slots=True)
class Alert:
    plate: str
    rule: str  # PLATE_FRACTION | WELL_FIELDS | AREA_SURGE | OPTICS
    state: str  # "firing" | "resolved"
    message: str  # one sentence for people (log line, chat message)
    well: str = ""  # set for WELL_FIELDS
    value: float = 0.0  # the measured fraction, count, area fraction or fields seen
    threshold: float = 0.0
    at: str = ""  # RFC 3339 UTC, milliseconds (engines.timestamps)
    place: str = ""  # set for OPTICS: where in the field, "y 310-382, x 662-734 px"

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True)
class Field:
    """What the rules judge of one processed field."""

    plate: str
    well: str
    field: int  # -1: unknown
    identity: str  # tells fields apart when their number is unknown
    flagged: bool
    area_fraction: float

    @classmethod
    def of(cls, result: FrameResult) -> Field:
        meta = result.frame.meta
        return cls(meta.plate, meta.well, meta.field, result.frame.identity, bool(result.flagged),
                   float(result.area_fraction))


@dataclass(slots=True)
class _Plate:
    flagged: deque[bool]  # the last plate_window fields
    areas: deque[float]  # the fields the surge baseline is the median of
    last_seen: int  # observe() count of its latest field
    flagged_fields: dict[str, set[object]] = field(default_factory=dict)  # well -> fields
    firing: dict[tuple[str, str], Alert] = field(default_factory=dict)  # by (rule, well or place)
    normal_since_surge: int = 0


class ContaminationMonitor:
    """Feed it processed fields in order, from one thread; it returns (and sends to each sink)
    what changed.

    Sinks (the verdict publisher's publish_alert, the webhook's notify) are called on the
    caller's thread and must not block; one that raises is logged and the others still run.
    """

    def __init__(
        self,
        config: AlertsConfig,
        metrics: Metrics,
        sinks: Sequence[Callable[[Alert], None]] = (),
        optics_fields: int = 0,
    ) -> None:
        """optics_fields: fields a place must be seen in to be on the optics (`optics.fields`),
        the threshold its alerts report."""
        self._config = config
        self._gauge = metrics.contamination
        self._sinks = tuple(sinks)
        self._plates: dict[str, _Plate] = {}
        self._observed = 0
        self._baseline_fields = max(config.plate_window, config.surge_min_fields)
        self._fields = metrics.plate_fields
        self._optics_fields = optics_fields

    def observe(self, results: Sequence[FrameResult]) -> list[Alert]:
        """Judge processed fields as they are (duplicates left out)."""
        return self.observe_fields([Field.of(r) for r in results if not r.duplicate])

    def observe_fields(self, fields: Sequence[Field]) -> list[Alert]:
        if not self._config.enabled:
            return []
        alerts: list[Alert] = []
        for seen in fields:
            self._observed += 1
            plate = self._plate(seen.plate)
            plate.last_seen = self._observed
            self._fields.labels(plate=seen.plate, outcome=OUTCOMES[seen.flagged]).inc()
            alerts += self._plate_fraction(seen.plate, plate, seen)
            alerts += self._well_fields(seen.plate, plate, seen)
            alerts += self._area_surge(seen.plate, plate, seen)
            alerts += self._end_plates()
        return alerts

    def optics(self, event: OpticsEvent) -> list[Alert]:
        """A place on the optics found on a plate (fires), or gone (resolves)."""
        if not self._config.enabled:
            return []
        place = event.place
        key = f"place {place.id}"
        if event.state == "found":
            plate = self._plate(event.plate)
            if (OPTICS, key) in plate.firing:
                return []
            message = (
                f"plate {_show(event.plate)}: an artifact at the same place in the field "
                f"({place.describe()}) in {place.fields} fields of {place.wells} well(s), last in "
                f"{event.source}: dirt on the optics, not in the plate; clean the light path "
                "(camera window, objective, condenser)"
            )
            return [self._fire(event.plate, plate, OPTICS, key, message, place.fields,
                               self._optics_fields, place=place.describe())]
        plate = self._plates.get(event.plate)
        if plate is None or (OPTICS, key) not in plate.firing:
            return []
        message = (
            f"plate {_show(event.plate)}: the artifact on the optics at {place.describe()}, seen "
            f"in {place.fields} fields, is gone (none at its place in the last fields, up to "
            f"{event.source}): light path clean"
        )
        return [self._resolve(event.plate, plate, OPTICS, key, message, place.fields)]

    def _plate(self, name: str) -> _Plate:
        plate = self._plates.get(name)
        if plate is None:
            plate = self._plates[name] = _Plate(
                flagged=deque(maxlen=self._config.plate_window),
                areas=deque(maxlen=self._baseline_fields),
                last_seen=self._observed,
            )
        return plate

    def _plate_fraction(self, name: str, plate: _Plate, seen: Field) -> list[Alert]:
        plate.flagged.append(seen.flagged)
        window = self._config.plate_window
        if len(plate.flagged) < window:
            return []
        n = sum(plate.flagged)
        fraction, threshold = n / window, self._config.plate_flagged_fraction
        firing = (PLATE_FRACTION, "") in plate.firing
        if fraction >= threshold and not firing:
            message = (
                f"plate {_show(name)}: {n} of the last {window} fields flagged "
                f"({fraction:.0%} >= {threshold:.0%})"
            )
            return [self._fire(name, plate, PLATE_FRACTION, "", message, fraction, threshold)]
        if fraction < threshold and firing:
            message = (
                f"plate {_show(name)}: flagged fields back to {n} of the last {window} "
                f"({fraction:.0%} < {threshold:.0%})"
            )
            return [self._resolve(name, plate, PLATE_FRACTION, "", message, fraction)]
        return []

    def _well_fields(self, name: str, plate: _Plate, seen: Field) -> list[Alert]:
        well = seen.well
        if not seen.flagged or not well:
            return []
        fields = plate.flagged_fields.setdefault(well, set())
        fields.add(seen.field if seen.field >= 0 else seen.identity)
        threshold = self._config.well_flagged_fields
        if len(fields) < threshold or (WELL_FIELDS, well) in plate.firing:
            return []
        message = f"plate {_show(name)} well {well}: {len(fields)} flagged fields (>= {threshold})"
        return [self._fire(name, plate, WELL_FIELDS, well, message, len(fields), threshold,
                           well=well)]

    def _area_surge(self, name: str, plate: _Plate, seen: Field) -> list[Alert]:
        area = seen.area_fraction
        history = plate.areas
        alerts: list[Alert] = []
        if len(history) >= self._config.surge_min_fields:
            baseline = max(statistics.median(history), BASELINE_FLOOR)
            threshold = self._config.surge_factor * baseline
            firing = (AREA_SURGE, "") in plate.firing
            if area >= threshold:
                plate.normal_since_surge = 0
                if not firing:
                    message = (
                        f"plate {_show(name)}: artifact area surge in {seen.well or '?'} field "
                        f"{seen.field}: {area:.2%} of the field, >= {self._config.surge_factor:g}"
                        f" x the plate baseline {baseline:.2%}"
                    )
                    alerts.append(
                        self._fire(name, plate, AREA_SURGE, "", message, area, threshold)
                    )
            elif firing:
                plate.normal_since_surge += 1
                if plate.normal_since_surge >= SURGE_RESOLVE_FIELDS:
                    message = (
                        f"plate {_show(name)}: artifact area below {threshold:.2%} for "
                        f"{SURGE_RESOLVE_FIELDS} fields in a row"
                    )
                    alerts.append(self._resolve(name, plate, AREA_SURGE, "", message, area))
        history.append(area)
        return alerts

    def _end_plates(self) -> list[Alert]:
        """Plates with no field among the last plate_window frames have ended."""
        window = self._config.plate_window
        alerts: list[Alert] = []
        for name, plate in list(self._plates.items()):
            if self._observed - plate.last_seen < window:
                continue
            for rule, key in list(plate.firing):
                fired = plate.firing[(rule, key)]
                where = f" well {fired.well}" if fired.well else \
                    f" at {fired.place}" if fired.place else ""
                message = (
                    f"plate {_show(name)}{where}: plate ended "
                    f"(none of the last {window} fields was from it), {rule} alert resolved"
                )
                alerts.append(self._resolve(name, plate, rule, key, message))
            del self._plates[name]
            # Drop the ended plate's series, or a service running for months of screens would
            # export one per plate and rule forever.
            for rule in RULES:
                with contextlib.suppress(KeyError):
                    self._gauge.remove(name, rule)
            for outcome in OUTCOMES:
                with contextlib.suppress(KeyError):
                    self._fields.remove(name, outcome)
        return alerts

    def _fire(
        self, name: str, plate: _Plate, rule: str, key: str, message: str,
        value: float, threshold: float, *, well: str = "", place: str = "",
    ) -> Alert:
        """key: what tells this rule's alerts on the plate apart ("" for one per plate)."""
        alert = Alert(name, rule, "firing", message, well, float(value), float(threshold), _now(),
                      place)
        plate.firing[(rule, key)] = alert
        self._announce(plate, alert)
        return alert

    def _resolve(
        self, name: str, plate: _Plate, rule: str, key: str, message: str,
        value: float | None = None,
    ) -> Alert:
        fired = plate.firing.pop((rule, key))
        value = fired.value if value is None else float(value)
        alert = Alert(name, rule, "resolved", message, fired.well, value, fired.threshold, _now(),
                      fired.place)
        self._announce(plate, alert)
        return alert

    def _announce(self, plate: _Plate, alert: Alert) -> None:
        # One gauge per (plate, rule): 1 while any alert of the rule (any well) fires.
        firing = any(rule == alert.rule for rule, _ in plate.firing)
        self._gauge.labels(plate=alert.plate, rule=alert.rule).set(1 if firing else 0)
        kind = "optics" if alert.rule == OPTICS else "contamination"
        if alert.state == "firing":
            logger.warning("%s alert: %s", kind, alert.message)
        else:
            logger.info("%s alert resolved: %s", kind, alert.message)
        for sink in self._sinks:
            try:
                sink(alert)
            except Exception:
                logger.exception("alert sink %r failed on %s/%s", sink, alert.plate, alert.rule)


def _show(plate: str) -> str:
    return plate or "(unnamed)"


def _now() -> str:
    return timestamp()
