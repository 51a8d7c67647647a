"""Contamination alerts: rules over the stream of processed fields, per plate.

Three rules (thresholds from `[alerts]` in config.toml):

- "plate_fraction": of the plate's last `plate_window` fields, a fraction of at least
  `plate_flagged_fraction` is flagged. Judged once the window is full; resolves when the fraction
  drops below the threshold.
- "well_fields": a well has `well_flagged_fields` or more flagged fields. One alert per well;
  flagged fields never become clean, so it resolves when the plate ends.
- "area_surge": a field's artifact area fraction is at least `surge_factor` x the plate's
  baseline, the median area fraction of its previous max(plate_window, surge_min_fields) fields
  (not below BASELINE_FLOOR), judged once `surge_min_fields` fields were seen. Resolves after
  SURGE_RESOLVE_FIELDS fields in a row below the threshold.

Each alert fires once and resolves once: state is kept per (plate, rule, well). A plate ends when
`plate_window` frames in a row came from other plates; its firing alerts resolve and its state is
forgotten, so a daemon that runs for months holds only the plates in progress. Frames are taken as
fields (one analysed channel per field, as the folder source delivers them).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import statistics
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from daemon.config import AlertsConfig
from daemon.frames import FrameResult
from daemon.metrics import Metrics
from engines.timestamps import timestamp

logger = logging.getLogger(__name__)

PLATE_FRACTION = "plate_fraction"
WELL_FIELDS = "well_fields"
AREA_SURGE = "area_surge"
RULES = (PLATE_FRACTION, WELL_FIELDS, AREA_SURGE)
SURGE_RESOLVE_FIELDS = 5
# On a clean plate the median area is 0, and without a floor any speck of dust would be a
# "surge"; with it and the default factor 3, a surge needs at least 0.6 % of the field.
BASELINE_FLOOR = 0.002


@dataclass(frozen=True, slots=True)
class Alert:
    plate: str
    rule: str  # PLATE_FRACTION | WELL_FIELDS | AREA_SURGE
    state: str  # "firing" | "resolved"
    message: str  # one sentence for people (log line, chat message)
    well: str = ""  # set for WELL_FIELDS
    value: float = 0.0  # the measured fraction, count or area fraction
    threshold: float = 0.0
    at: str = ""  # RFC 3339 UTC, milliseconds (engines.timestamps)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(slots=True)
class _Plate:
    flagged: deque[bool]  # the last plate_window fields
    areas: deque[float]  # the fields the surge baseline is the median of
    last_seen: int  # observe() count of its latest field
    flagged_fields: dict[str, set[object]] = field(default_factory=dict)  # well -> fields
    firing: dict[tuple[str, str], Alert] = field(default_factory=dict)  # by (rule, well)
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
    ) -> None:
        self._config = config
        self._gauge = metrics.contamination
        self._sinks = tuple(sinks)
        self._plates: dict[str, _Plate] = {}
        self._observed = 0
        self._baseline_fields = max(config.plate_window, config.surge_min_fields)

    def observe(self, results: Sequence[FrameResult]) -> list[Alert]:
        if not self._config.enabled:
            return []
        alerts: list[Alert] = []
        for result in results:
            if result.duplicate:  # counted when it was first stored
                continue
            self._observed += 1
            name = result.frame.meta.plate
            plate = self._plates.get(name)
            if plate is None:
                plate = self._plates[name] = _Plate(
                    flagged=deque(maxlen=self._config.plate_window),
                    areas=deque(maxlen=self._baseline_fields),
                    last_seen=self._observed,
                )
            plate.last_seen = self._observed
            alerts += self._plate_fraction(name, plate, result)
            alerts += self._well_fields(name, plate, result)
            alerts += self._area_surge(name, plate, result)
            alerts += self._end_plates()
        return alerts

    def _plate_fraction(self, name: str, plate: _Plate, result: FrameResult) -> list[Alert]:
        plate.flagged.append(result.flagged)
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

    def _well_fields(self, name: str, plate: _Plate, result: FrameResult) -> list[Alert]:
        well = result.frame.meta.well
        if not result.flagged or not well:
            return []
        meta_field = result.frame.meta.field
        fields = plate.flagged_fields.setdefault(well, set())
        fields.add(meta_field if meta_field >= 0 else result.frame.identity)
        threshold = self._config.well_flagged_fields
        if len(fields) < threshold or (WELL_FIELDS, well) in plate.firing:
            return []
        message = f"plate {_show(name)} well {well}: {len(fields)} flagged fields (>= {threshold})"
        return [self._fire(name, plate, WELL_FIELDS, well, message, len(fields), threshold)]

    def _area_surge(self, name: str, plate: _Plate, result: FrameResult) -> list[Alert]:
        area = result.area_fraction
        history = plate.areas
        alerts: list[Alert] = []
        if len(history) >= self._config.surge_min_fields:
            baseline = max(statistics.median(history), BASELINE_FLOOR)
            threshold = self._config.surge_factor * baseline
            firing = (AREA_SURGE, "") in plate.firing
            if area >= threshold:
                plate.normal_since_surge = 0
                if not firing:
                    meta = result.frame.meta
                    message = (
                        f"plate {_show(name)}: artifact area surge in {meta.well or '?'} field "
                        f"{meta.field}: {area:.2%} of the field, >= {self._config.surge_factor:g}"
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
            for rule, well in list(plate.firing):
                message = (
                    f"plate {_show(name)}{' well ' + well if well else ''}: plate ended "
                    f"(none of the last {window} fields was from it), {rule} alert resolved"
                )
                alerts.append(self._resolve(name, plate, rule, well, message))
            del self._plates[name]
            # Drop the ended plate's series, or a service running for months of screens would
            # export one per plate and rule forever.
            for rule in RULES:
                with contextlib.suppress(KeyError):
                    self._gauge.remove(name, rule)
        return alerts

    def _fire(
        self, name: str, plate: _Plate, rule: str, well: str, message: str,
        value: float, threshold: float,
    ) -> Alert:
        alert = Alert(name, rule, "firing", message, well, float(value), float(threshold), _now())
        plate.firing[(rule, well)] = alert
        self._announce(plate, alert)
        return alert

    def _resolve(
        self, name: str, plate: _Plate, rule: str, well: str, message: str,
        value: float | None = None,
    ) -> Alert:
        fired = plate.firing.pop((rule, well))
        value = fired.value if value is None else float(value)
        alert = Alert(name, rule, "resolved", message, well, value, fired.threshold, _now())
        self._announce(plate, alert)
        return alert

    def _announce(self, plate: _Plate, alert: Alert) -> None:
        # One gauge per (plate, rule): 1 while any alert of the rule (any well) fires.
        firing = any(rule == alert.rule for rule, _ in plate.firing)
        self._gauge.labels(plate=alert.plate, rule=alert.rule).set(1 if firing else 0)
        if alert.state == "firing":
            logger.warning("contamination alert: %s", alert.message)
        else:
            logger.info("contamination alert resolved: %s", alert.message)
        for sink in self._sinks:
            try:
                sink(alert)
            except Exception:
                logger.exception("alert sink %r failed on %s/%s", sink, alert.plate, alert.rule)


def _show(plate: str) -> str:
    return plate or "(unnamed)"


def _now() -> str:
    return timestamp()
