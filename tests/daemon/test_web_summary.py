"""The plate page's in-memory summary: wells and fields as stored, corrections shown over the
model, layouts from the wells seen, changes since a version, and the rows the store gave."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from daemon.plates import infer_format, parse_well, row_name, well_label
from daemon.results.store import ResultsStore
from daemon.sinks.alerts import Alert
from daemon.web.summary import PlateSummary
from tests.daemon.test_store import make_result


def result(i: int, well: str, field: int, *, flagged: bool, plate: str = "P1",
           source: str | None = None, size: int | None = None):
    base = make_result(i, source=source or f"{plate}/{well}_f{field}.tif",
                       n_artifacts=2 if flagged else 0, size=size)
    meta = dataclasses.replace(base.frame.meta, plate=plate, well=well, field=field, channel=0)
    frame = dataclasses.replace(base.frame, meta=meta)
    return dataclasses.replace(base, frame=frame, flagged=flagged)


def test_well_names_and_layouts():
    assert parse_well("A01") == (0, 0) and parse_well("p24") == (15, 23)
    assert parse_well("AF48") == (31, 47) and parse_well("C7") == (2, 6)
    for name in ("W0001", "", "A00", "12", "A123"):
        assert parse_well(name) is None, name
    assert [row_name(i) for i in (0, 25, 26, 31)] == ["A", "Z", "AA", "AF"]
    assert well_label(31, 47) == "AF48"
    assert infer_format([]) == 96
    assert infer_format([(7, 11)]) == 96 and infer_format([(8, 0)]) == 384
    assert infer_format([(0, 12)]) == 384 and infer_format([(16, 0)]) == 1536
    assert infer_format([(40, 60)]) == 1536


def test_wells_count_fields_seen_and_flagged():
    summary = PlateSummary()
    summary.observe([result(0, "B03", 1, flagged=True), result(1, "B03", 2, flagged=False),
                     result(2, "C07", 1, flagged=False)], first_row=0)
    [plate] = summary.state()["plates"]
    assert plate["wells"] == {"B03": [2, 1, 0], "C07": [1, 0, 0]}
    assert (plate["format"], plate["frames"], plate["flagged"]) == (96, 3, 1)
    well = summary.well("P1", "B03")
    assert [f["row"] for f in well["fields"]] == [0, 1]
    assert [f["flagged"] for f in well["fields"]] == [True, False]
    assert summary.well("P1", "A01") is None and summary.well("P9", "B03") is None


def test_a_file_processed_again_replaces_its_field():
    summary = PlateSummary()
    summary.observe([result(0, "B03", 1, flagged=True)], first_row=0)
    summary.observe([result(1, "B03", 1, flagged=False, source="P1/B03_f1.tif", size=5)],
                    first_row=1)
    assert summary.state()["plates"][0]["wells"]["B03"] == [1, 0, 0]
    assert [f["row"] for f in summary.well("P1", "B03")["fields"]] == [1]
    assert summary.field(0) is None and summary.field(1) is not None


def test_a_correction_overrides_the_model_on_the_map():
    summary = PlateSummary()
    first = result(0, "B03", 1, flagged=True)
    summary.observe([first, result(1, "B03", 2, flagged=False)], first_row=0)
    shown = summary.correct(0, first.frame.identity, "clean", "alice", "2026-01-01T00:00:00.000Z")
    assert shown["flagged"] is True and shown["shown_flagged"] is False
    assert (shown["correction"], shown["corrected_by"]) == ("clean", "alice")
    plate = summary.state()["plates"][0]
    assert plate["wells"]["B03"] == [2, 0, 1] and plate["flagged"] == 0
    second = summary.field(1)
    summary.correct(1, second.identity, "artifact", "bob", "2026-01-01T00:00:01.000Z")
    assert summary.state()["plates"][0]["wells"]["B03"] == [2, 1, 2]
    # Only a frame the page shows, under its identity, can be corrected.
    assert summary.correct(1, "another|frame", "clean", "bob", "") is None
    assert summary.correct(7, second.identity, "clean", "bob", "") is None


def test_the_layout_grows_with_the_wells_seen_unless_configured():
    summary = PlateSummary()
    summary.observe([result(0, "H12", 1, flagged=False)], first_row=0)
    assert summary.state()["plates"][0]["format"] == 96
    summary.observe([result(1, "P24", 1, flagged=False)], first_row=1)
    assert summary.state()["plates"][0]["format"] == 384
    summary.observe([result(2, "AF48", 1, flagged=False), result(3, "W0001", 1, flagged=True)],
                    first_row=2)
    plate = summary.state()["plates"][0]
    assert plate["format"] == 1536 and plate["unplaced"] == ["W0001"]

    fixed = PlateSummary("384")
    fixed.observe([result(0, "A01", 1, flagged=False), result(1, "AF48", 1, flagged=False)],
                  first_row=0)
    plate = fixed.state()["plates"][0]
    assert plate["format"] == 384 and plate["unplaced"] == ["AF48"]


def test_changes_since_a_version_name_each_changed_well_once():
    summary = PlateSummary()
    assert summary.changes(-1) is None  # nothing logged yet: the page loads the state
    summary.observe([result(0, "B03", 1, flagged=True)], first_row=0)
    version = summary.version
    summary.observe([result(1, "C07", 1, flagged=False), result(2, "C07", 2, flagged=True),
                     result(3, "D01", 1, flagged=False, plate="P2")], first_row=1)
    changes = summary.changes(version)
    assert changes["version"] == summary.version
    assert changes["wells"] == [["P1", "C07", [2, 1, 0]], ["P2", "D01", [1, 0, 0]]]
    assert [p["name"] for p in changes["plates"]] == ["P1", "P2"]
    unchanged = {"version": summary.version, "plates": [], "wells": []}
    assert summary.changes(summary.version) == unchanged
    # Newest plate first in the state.
    assert [p["name"] for p in summary.state()["plates"]] == ["P2", "P1"]


def test_a_page_too_far_behind_is_told_to_reload():
    summary = PlateSummary(change_log=100)
    summary.observe([result(i, "B03", i % 7, flagged=False) for i in range(110)], first_row=0)
    assert summary.changes(3) is None
    assert summary.changes(summary.version - 5)["wells"] == [["P1", "B03", [7, 0, 0]]]


def test_old_plates_are_forgotten():
    summary = PlateSummary(max_plates=2)
    for i, plate in enumerate(("P1", "P2", "P3")):
        summary.observe([result(i, "A01", 1, flagged=False, plate=plate)], first_row=i)
    assert [p["name"] for p in summary.state()["plates"]] == ["P3", "P2"]
    assert summary.field(0) is None and summary.field(2) is not None


def test_throughput_and_alerts():
    now = [100.0]
    summary = PlateSummary(clock=lambda: now[0])
    now[0] = 110.0
    summary.observe([result(i, "A01", i, flagged=i == 0) for i in range(20)], first_row=0)
    status = summary.status()
    assert status["throughput_fps"] == pytest.approx(20 / 10)
    assert (status["frames"], status["flagged"]) == (20, 1)
    now[0] = 200.0
    assert summary.status()["throughput_fps"] == 0.0
    summary.alert(Alert("P1", "well_fields", "firing", "P1 well A01: 3 flagged", "A01", 3, 3, "t1"))
    summary.alert(Alert("P1", "plate_fraction", "firing", "P1: 40%", "", 0.4, 0.3, "t2"))
    summary.alert(Alert("P1", "plate_fraction", "resolved", "P1: back to 10%", "", 0.1, 0.3, "t3"))
    alerts = summary.status()["alerts"]
    assert [(a["rule"], a["state"]) for a in alerts] == [("well_fields", "firing"),
                                                         ("plate_fraction", "resolved")]
    assert len(summary.status()["recent_alerts"]) == 3


def test_loaded_from_the_store_and_fed_by_the_sink_with_the_stores_rows(tmp_path: Path):
    path = tmp_path / "results.zarr"
    with ResultsStore(path) as store:
        first = [result(0, "B03", 1, flagged=True), result(1, "B03", 2, flagged=False)]
        store.append(first)
        from daemon.results.corrections import Correction

        store.record_corrections([Correction(0, first[0].frame.identity, first[0].frame.meta.source,
                                             "clean", "loopback")])
    with ResultsStore(path) as store:
        summary = PlateSummary()
        assert summary.load(store) == 2
        assert summary.state()["plates"][0]["wells"]["B03"] == [2, 0, 1]
        sink = summary.sink(store)
        batch = [result(2, "C07", 1, flagged=True), result(3, "C07", 2, flagged=False)]
        again = dataclasses.replace(first[1], duplicate=True)  # a replay: the store had it
        written = store.append([*batch, again])
        assert len(written) == 2
        sink([*batch, again], [0.0, 0.0, 0.0])
        identities = store.frame_table()["identity"]
        for field in summary.well("P1", "C07")["fields"]:
            assert identities[field["row"]] == summary.field(field["row"]).identity
        assert [f["row"] for f in summary.well("P1", "C07")["fields"]] == [2, 3]
        assert summary.status()["frames"] == 2  # the duplicate is not counted again
