"""Contamination rules on scripted sequences of results: each alert fires once, then resolves."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from daemon.config import AlertsConfig
from daemon.frames import Frame, FrameMeta, FrameResult
from daemon.ops.metrics import Metrics
from daemon.sinks.alerts import (
    AREA_SURGE,
    PLATE_FRACTION,
    SURGE_RESOLVE_FIELDS,
    WELL_FIELDS,
    Alert,
    ContaminationMonitor,
)

# Each test switches on the rule it is about; these thresholds keep the others quiet.
QUIET = {"plate_window": 10, "well_flagged_fields": 1000, "surge_min_fields": 1000}


def result(
    plate: str, well: str, field: int, flagged: bool = False, area: float = 0.0
) -> FrameResult:
    frame = Frame(
        FrameMeta(source=f"{plate}/{well}_f{field}.tif", plate=plate, well=well, field=field),
        pixels=np.zeros((2, 2), np.uint16), ready_at=0.0, frame_id=f"{plate}-{well}-{field}",
    )
    return FrameResult(frame, 0.9 if flagged else 0.1, flagged, np.zeros((2, 2), np.uint16),
                       area_fraction=area)


class Recorder:
    def __init__(self) -> None:
        self.alerts: list[Alert] = []

    def __call__(self, alert: Alert) -> None:
        self.alerts.append(alert)


def gauge(metrics: Metrics, plate: str, rule: str) -> float | None:
    return metrics.registry.get_sample_value(
        "artifactd_contamination", {"plate": plate, "rule": rule}
    )


def monitor(**config: object) -> tuple[ContaminationMonitor, Metrics, Recorder]:
    metrics, sink = Metrics(), Recorder()
    return ContaminationMonitor(AlertsConfig(**{**QUIET, **config}), metrics, [sink]), metrics, sink


def test_plate_fraction_fires_once_and_resolves_when_it_drops(caplog):
    mon, metrics, sink = monitor(plate_window=10, plate_flagged_fraction=0.3)
    caplog.set_level(logging.INFO, logger="daemon.sinks.alerts")
    # Three flagged among the first fields: the window is not full yet, so no verdict on it.
    assert mon.observe([result("P1", "A01", i, flagged=True) for i in range(3)]) == []
    assert mon.observe([result("P1", "A02", i) for i in range(7)])  # window full: 3 of 10
    assert [(a.rule, a.state) for a in sink.alerts] == [(PLATE_FRACTION, "firing")]
    fired = sink.alerts[0]
    assert (fired.plate, fired.value, fired.threshold) == ("P1", 0.3, 0.3)
    assert "3 of the last 10 fields flagged" in fired.message
    assert gauge(metrics, "P1", PLATE_FRACTION) == 1
    # More flagged fields: still firing, no second alert.
    assert mon.observe([result("P1", "B01", i, flagged=True) for i in range(5)]) == []
    # Clean fields push the flagged ones out of the window: resolves once.
    resolved = mon.observe([result("P1", "B02", i) for i in range(10)])
    assert [(a.rule, a.state) for a in resolved] == [(PLATE_FRACTION, "resolved")]
    assert resolved[0].value == pytest.approx(0.2)
    assert gauge(metrics, "P1", PLATE_FRACTION) == 0
    assert sink.alerts[1:] == resolved
    levels = [(r.levelname, r.getMessage().split(":")[0]) for r in caplog.records]
    assert levels == [
        ("WARNING", "contamination alert"),
        ("INFO", "contamination alert resolved"),
    ]


def test_well_rule_fires_once_per_well_and_resolves_when_the_plate_ends():
    mon, metrics, sink = monitor(plate_window=20, plate_flagged_fraction=1.0,
                                 well_flagged_fields=3)
    # The same field flagged twice (two channels) counts once.
    mon.observe([result("P1", "C07", 1, True), result("P1", "C07", 1, True),
                 result("P1", "C07", 2, True)])
    assert sink.alerts == []
    alerts = mon.observe([result("P1", "C07", 3, True), result("P1", "C07", 4, True)])
    assert [(a.rule, a.well, a.state, a.value) for a in alerts] == [
        (WELL_FIELDS, "C07", "firing", 3.0)
    ]
    alerts = mon.observe([result("P1", "D02", f, True) for f in range(3)])
    assert [(a.well, a.state) for a in alerts] == [("D02", "firing")]
    assert gauge(metrics, "P1", WELL_FIELDS) == 1
    # Wells without a name cannot be told apart: never a well alert.
    assert mon.observe([result("P1", "", f, True) for f in range(5)]) == []
    # The next plate starts; after plate_window of its fields, P1 has ended.
    alerts = mon.observe([result("P2", "A01", f) for f in range(20)])
    assert sorted((a.plate, a.well, a.state) for a in alerts) == [
        ("P1", "C07", "resolved"), ("P1", "D02", "resolved"),
    ]
    assert all("plate ended" in a.message for a in alerts)
    # The ended plate's series is dropped rather than exported at 0 forever.
    assert gauge(metrics, "P1", WELL_FIELDS) is None
    assert len(sink.alerts) == 4


def test_area_surge_fires_against_the_plate_baseline_and_resolves_after_normal_fields():
    mon, metrics, sink = monitor(plate_window=10, plate_flagged_fraction=1.0,
                                 surge_factor=3.0, surge_min_fields=5)
    assert mon.observe([result("P1", "A01", f, area=0.01) for f in range(5)]) == []
    assert mon.observe([result("P1", "A02", 0, area=0.029)]) == []  # below 3 x 0.01
    alerts = mon.observe([result("P1", "A02", 1, True, area=0.05)])
    assert [(a.rule, a.state) for a in alerts] == [(AREA_SURGE, "firing")]
    assert alerts[0].value == 0.05 and alerts[0].threshold == pytest.approx(0.03)
    assert "A02 field 1" in alerts[0].message
    assert gauge(metrics, "P1", AREA_SURGE) == 1
    assert mon.observe([result("P1", "A02", 2, True, area=0.08)]) == []  # no second alert
    normal = [result("P1", "A03", f, area=0.01) for f in range(SURGE_RESOLVE_FIELDS)]
    assert mon.observe(normal[:-1]) == []
    alerts = mon.observe(normal[-1:])
    assert [(a.rule, a.state) for a in alerts] == [(AREA_SURGE, "resolved")]
    assert gauge(metrics, "P1", AREA_SURGE) == 0
    assert len(sink.alerts) == 2


def test_a_speck_on_a_clean_plate_is_no_surge():
    mon, _, sink = monitor(plate_window=10, plate_flagged_fraction=1.0, surge_min_fields=5)
    mon.observe([result("P1", "A01", f, area=0.0) for f in range(5)])
    assert mon.observe([result("P1", "A01", 5, True, area=0.001)]) == []
    assert [a.rule for a in mon.observe([result("P1", "A01", 6, True, area=0.05)])] == [
        AREA_SURGE
    ]
    assert len(sink.alerts) == 1


def test_plates_are_judged_apart():
    mon, metrics, _ = monitor(plate_window=4, plate_flagged_fraction=0.5)
    interleaved = []
    for f in range(4):
        interleaved += [result("P1", "A01", f, flagged=True), result("P2", "A01", f)]
    alerts = mon.observe(interleaved)
    assert [(a.plate, a.state) for a in alerts] == [("P1", "firing")]
    assert gauge(metrics, "P2", PLATE_FRACTION) is None


def test_disabled_alerts_do_nothing():
    mon, metrics, sink = monitor(enabled=False, plate_window=1, plate_flagged_fraction=0.1)
    assert mon.observe([result("P1", "A01", 0, flagged=True)]) == []
    assert sink.alerts == [] and gauge(metrics, "P1", PLATE_FRACTION) is None


def test_a_failing_sink_does_not_stop_the_others(caplog):
    def broken(alert: Alert) -> None:
        raise RuntimeError("webhook queue gone")

    metrics, sink = Metrics(), Recorder()
    config = AlertsConfig(**{**QUIET, "plate_window": 1, "plate_flagged_fraction": 1.0})
    mon = ContaminationMonitor(config, metrics, [broken, sink])
    alerts = mon.observe([result("P1", "A01", 0, flagged=True)])
    assert sink.alerts == alerts and len(alerts) == 1
    assert any("alert sink" in r.getMessage() and r.exc_info for r in caplog.records)


def test_alert_as_dict_is_plain_json_data():
    alert = Alert("P1", WELL_FIELDS, "firing", "m", "C07", 3.0, 3.0, "2026-01-01T00:00:00+00:00")
    assert alert.as_dict() == {
        "plate": "P1", "rule": WELL_FIELDS, "state": "firing", "message": "m", "well": "C07",
        "value": 3.0, "threshold": 3.0, "at": "2026-01-01T00:00:00+00:00", "place": "",
    }
