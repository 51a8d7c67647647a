"""Dirt on the optics: the tracker follows places field to field (IoU of the masks), marks the
artifacts of a place seen in enough fields and wells, forgets what moves or goes; the alert rules
wait for that decision and leave those artifacts out."""

from __future__ import annotations

import numpy as np
import pytest

from daemon.config import AlertsConfig, OpticsConfig
from daemon.frames import STATIONARY, Frame, FrameMeta, FrameResult
from daemon.ops.metrics import Metrics
from daemon.sinks.alert_hold import HeldAlerts
from daemon.sinks.alerts import (
    AREA_SURGE,
    OPTICS,
    PLATE_FRACTION,
    WELL_FIELDS,
    ContaminationMonitor,
)
from daemon.sinks.optics import MAX_PLATES, MAX_TRACKS, OpticsTracker
from engines.runtime.postprocess import measure

SIZE = 96
SMUDGE = (30, 60, 9)  # y, x, radius px


def disc(y: float, x: float, radius: float) -> np.ndarray:
    rows, cols = np.ogrid[:SIZE, :SIZE]
    return (rows - y) ** 2 + (cols - x) ** 2 <= radius**2


def result(well: str, field: int, *blobs: np.ndarray, plate: str = "P1") -> FrameResult:
    """A processed field whose label image holds these masks (later ones on top), measured as
    the service measures them."""
    labels = np.zeros((SIZE, SIZE), np.uint16)
    for k, blob in enumerate(blobs, start=1):
        labels[blob] = k
    artifacts = measure(labels, None, None) if blobs else {}
    frame = Frame(FrameMeta(source=f"{plate}/{well}_f{field}.tif", plate=plate, well=well,
                            field=field), np.zeros((SIZE, SIZE), np.uint16), 0.0,
                  frame_id=f"{plate}-{well}-{field}")
    area = float(np.count_nonzero(labels)) / labels.size
    return FrameResult(frame, 0.9 if blobs else 0.1, bool(blobs), labels, artifacts, area,
                       len(blobs))


def plate_fields(n: int, fields_per_well: int = 4) -> list[tuple[str, int]]:
    """(well, field) in acquisition order: A01 f1..f4, A02 f1..f4, ..."""
    return [(f"A{i // fields_per_well + 1:02d}", i % fields_per_well + 1) for i in range(n)]


def marks(tracker: OpticsTracker, results: list[FrameResult]) -> list[list[bool]]:
    return [list(r.artifacts.get(STATIONARY, [])) for r in tracker.mark(results)]


def test_a_place_seen_in_enough_fields_and_wells_is_on_the_optics():
    tracker = OpticsTracker(OpticsConfig(fields=5, wells=2))
    seen = [marks(tracker, [result(w, f, disc(*SMUDGE))])[0] for w, f in plate_fields(8)]
    # Four sightings in A01, the fifth in A02: from there on it is marked.
    assert seen == [[False]] * 4 + [[True]] * 4
    _, events = tracker.take([])
    assert events == []  # taken with each batch: the found event went with the fifth field


def test_found_once_per_plate_with_the_place():
    tracker = OpticsTracker(OpticsConfig(fields=3, wells=2))
    events = []
    for w, f in plate_fields(10, fields_per_well=2):
        stored = tracker.mark([result(w, f, disc(*SMUDGE))])
        events += tracker.take(stored)[1]
    assert [(e.state, e.plate, e.source) for e in events] == [("found", "P1", "P1/A02_f1.tif")]
    place = events[0].place
    assert (place.fields, place.wells) == (3, 2)
    y, x, r = SMUDGE
    assert (place.y0, place.x0, place.y1, place.x1) == (y - r, x - r, y + r + 1, x + r + 1)


def test_the_same_smudge_drawn_a_little_differently_each_time_is_still_one_place():
    rng = np.random.default_rng(1)
    tracker = OpticsTracker(OpticsConfig(fields=5, wells=2))
    y, x, r = SMUDGE
    jittered = [disc(y + rng.uniform(-2, 2), x + rng.uniform(-2, 2), r + rng.uniform(-1.5, 1.5))
                for _ in range(8)]
    seen = [marks(tracker, [result(w, f, blob)])[0] for (w, f), blob in
            zip(plate_fields(8), jittered, strict=True)]
    assert seen[-1] == [True]


def test_dirt_in_the_sample_moves_and_is_never_marked():
    rng = np.random.default_rng(2)
    tracker = OpticsTracker(OpticsConfig(fields=3, wells=1))
    seen = []
    for w, f in plate_fields(40):
        blobs = [disc(rng.uniform(10, 86), rng.uniform(10, 86), rng.uniform(3, 8))
                 for _ in range(3)]
        seen += [m for row in marks(tracker, [result(w, f, *blobs)]) for m in row]
    assert seen and not any(seen)


def test_a_shift_that_leaves_iou_below_the_threshold_is_a_new_place():
    tracker = OpticsTracker(OpticsConfig(fields=2, wells=1, overlap=0.5))
    y, x, r = SMUDGE
    marks(tracker, [result("A01", 1, disc(y, x, r))])
    # Shifted by one radius: the discs overlap by a lot, but IoU is ~0.4.
    shifted = disc(y, x + r, r)
    inter = np.count_nonzero(disc(y, x, r) & shifted)
    assert inter / np.count_nonzero(disc(y, x, r) | shifted) < 0.5
    assert marks(tracker, [result("A02", 1, shifted)]) == [[False]]
    assert marks(tracker, [result("A03", 1, shifted)]) == [[True]]  # that one did stay


def test_overlap_is_iou_so_a_speck_inside_a_large_artifact_does_not_continue_it():
    """Overlap over the smaller mask would be 1.0 here; IoU is small, so the speck is its own."""
    tracker = OpticsTracker(OpticsConfig(fields=2, wells=1))
    big, speck = disc(48, 48, 30), disc(48, 48, 5)
    marks(tracker, [result("A01", 1, big)])
    # Two sightings make a place here: had the speck continued the big one, it would be marked.
    assert marks(tracker, [result("A02", 1, speck)]) == [[False]]
    assert marks(tracker, [result("A03", 1, big)]) == [[True]]  # the big one itself, seen again


def test_part_of_a_known_place_is_recognised_but_dirt_merged_with_it_is_not():
    tracker = OpticsTracker(OpticsConfig(fields=3, wells=1))
    y, x, r = SMUDGE
    smudge = disc(y, x, r)
    for well in ("A01", "A02", "A03"):
        marks(tracker, [result(well, 1, smudge)])
    half = smudge & (np.arange(SIZE)[None, :] < x)  # cells covered the rest (IoU ~0.5)
    assert marks(tracker, [result("A04", 1, half)]) == [[True]]
    left, right = half, smudge & ~half
    gap = np.zeros_like(smudge)
    gap[:, x] = True
    assert marks(tracker, [result("A05", 1, left & ~gap, right & ~gap)]) == [[True, True]]
    # The smudge and larger sample dirt touching it, outlined as one: mostly not on the optics.
    merged = smudge | disc(y, x + 2.2 * r, 1.4 * r)
    assert marks(tracker, [result("A06", 1, merged)]) == [[False]]
    assert marks(tracker, [result("A07", 1, smudge)]) == [[True]]  # the place is still there


def test_one_well_only_is_not_enough_when_wells_are_asked_for():
    tracker = OpticsTracker(OpticsConfig(fields=3, wells=2))
    # The stage did not move between fields of one well: the same artifact, always in A01.
    seen = [marks(tracker, [result("A01", f, disc(*SMUDGE))])[0] for f in range(1, 9)]
    assert not any(m for row in seen for m in row)
    assert marks(tracker, [result("A02", 1, disc(*SMUDGE))]) == [[True]]


def test_frames_without_a_well_name_never_make_a_place_on_the_optics():
    tracker = OpticsTracker(OpticsConfig(fields=3, wells=2))
    seen = [marks(tracker, [result("", f, disc(*SMUDGE))])[0] for f in range(10)]
    assert not any(m for row in seen for m in row)


def test_a_missed_field_is_forgiven_but_a_place_gone_for_longer_is_forgotten():
    tracker = OpticsTracker(OpticsConfig(fields=4, wells=2, missed_fields=1))
    fields = iter(plate_fields(40, fields_per_well=1))

    def field(*blobs):
        stored = tracker.mark([result(*next(fields), *blobs)])
        return [list(r.artifacts.get(STATIONARY, [])) for r in stored], tracker.take(stored)[1]

    smudge = disc(*SMUDGE)
    field(smudge), field(smudge)
    field()  # one field without it (under a dense patch of cells)
    field(smudge)
    seen, events = field(smudge)  # the fourth sighting
    assert seen == [[True]] and [e.state for e in events] == ["found"]
    field()
    seen, events = field()  # two in a row: forgotten, and its alert resolves
    assert [e.state for e in events] == ["gone"]
    assert field(smudge)[0] == [[False]]  # back again: a new place, to be confirmed anew


def test_memory_is_bounded_by_places_and_plates():
    rng = np.random.default_rng(3)
    tracker = OpticsTracker(OpticsConfig(fields=5, wells=2, missed_fields=1000))
    for i in range(60):
        blobs = [disc(rng.uniform(5, 91), rng.uniform(5, 91), 2.5) for _ in range(4)]
        tracker.mark([result(f"B{i % 12 + 1:02d}", i, *blobs, plate=f"P{i % 7}")])
    assert len(tracker._plates) <= MAX_PLATES
    assert all(len(p.tracks) <= MAX_TRACKS for p in tracker._plates.values())


def test_the_next_plate_starts_with_the_places_on_the_optics():
    tracker = OpticsTracker(OpticsConfig(fields=5, wells=2))
    for w, f in plate_fields(6):
        tracker.mark([result(w, f, disc(*SMUDGE), plate="P1")])
    events = tracker.take([])[1]
    stored = tracker.mark([result("A01", 1, disc(*SMUDGE), plate="P2")])
    assert list(stored[0].artifacts[STATIONARY]) == [True]  # its first sighting on P2
    assert [(e.state, e.plate) for e in events + tracker.take(stored)[1]] == [("found", "P2")]


def test_marks_go_to_the_right_rows_and_the_rest_of_the_result_is_kept():
    tracker = OpticsTracker(OpticsConfig(fields=2, wells=1))
    tracker.mark([result("A01", 1, disc(*SMUDGE))])
    speck = disc(80, 15, 4)
    before = result("A02", 1, speck, disc(*SMUDGE))
    after = tracker.mark([before])[0]
    assert list(after.artifacts[STATIONARY]) == [False, True]  # label 2 is the smudge
    assert after.artifacts["area_px"] is before.artifacts["area_px"]
    assert (after.score, after.flagged, after.labels is before.labels) == (0.9, True, True)
    empty = tracker.mark([result("A03", 1)])[0]
    assert STATIONARY not in empty.artifacts  # no rows, no column to add


def test_sighting_judged_without_the_artifacts_on_the_optics():
    tracker = OpticsTracker(OpticsConfig(fields=2, wells=1))
    smudge, speck = disc(*SMUDGE), disc(80, 15, 4)
    tracker.mark([result("A01", 1, smudge)])
    (judged_only,), _ = tracker.take(tracker.mark([result("A02", 1, smudge)]))
    assert (judged_only.judged().flagged, judged_only.judged().area_fraction) == (False, 0.0)
    (judged_both,), _ = tracker.take(tracker.mark([result("A03", 1, speck, smudge)]))
    field = judged_both.judged()
    assert field.flagged
    assert field.area_fraction == pytest.approx(np.count_nonzero(speck) / SIZE**2)


# ------------------------------------------------------------------ with the alert rules


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def held(optics: OpticsConfig, **alerts: object) -> tuple[HeldAlerts, OpticsTracker, list]:
    sent: list = []
    config = AlertsConfig(**{"plate_window": 20, "plate_flagged_fraction": 0.3,
                             "well_flagged_fields": 3, "surge_min_fields": 10, **alerts})
    monitor = ContaminationMonitor(config, Metrics(), [sent.append], optics_fields=optics.fields)
    tracker = OpticsTracker(optics)
    return HeldAlerts(monitor, tracker, clock=Clock()), tracker, sent


def run(hold: HeldAlerts, tracker: OpticsTracker, results: list[FrameResult]) -> None:
    for r in results:  # one batch per field, as the writer does when frames come one by one
        hold.observe(tracker.mark([r]))


def test_a_smudge_in_every_field_fires_optics_and_no_contamination_alert():
    hold, tracker, sent = held(OpticsConfig(fields=5, wells=2))
    run(hold, tracker, [result(w, f, disc(*SMUDGE)) for w, f in plate_fields(48)])
    hold.flush()
    assert [(a.rule, a.state) for a in sent] == [(OPTICS, "firing")]
    assert "clean the light path" in sent[0].message
    assert sent[0].place == "y 21-39, x 51-69 px" and sent[0].threshold == 5


def test_dirty_wells_beside_a_smudge_still_raise_their_alerts():
    rng = np.random.default_rng(4)
    hold, tracker, sent = held(OpticsConfig(fields=5, wells=2))
    results = []
    for w, f in plate_fields(48):
        blobs = [disc(*SMUDGE)]
        if w == "A07":  # sample dirt, somewhere else in each field
            blobs.append(disc(rng.uniform(60, 85), rng.uniform(10, 35), 6))
        results.append(result(w, f, *blobs))
    run(hold, tracker, results)
    hold.flush()
    fired = {(a.rule, a.well) for a in sent if a.state == "firing"}
    # The surge too: the plate's baseline area leaves the smudge out, so A07's dirt stands out.
    assert fired == {(OPTICS, ""), (WELL_FIELDS, "A07"), (AREA_SURGE, "")}


def test_the_first_sightings_wait_for_the_decision_then_count_as_optics():
    """Judged at once, the smudge's four sightings in A01 would raise a well alert there."""
    hold, tracker, sent = held(OpticsConfig(fields=5, wells=2), plate_window=1000)
    run(hold, tracker, [result(w, f, disc(*SMUDGE)) for w, f in plate_fields(4)])
    assert sent == [] and hold.waiting == 4  # not decided yet: not judged yet
    run(hold, tracker, [result("A02", 1, disc(*SMUDGE))])
    assert [a.rule for a in sent] == [OPTICS] and hold.waiting == 0


def test_waiting_fields_are_judged_after_an_idle_spell_and_at_shutdown():
    hold, tracker, _ = held(OpticsConfig(fields=5, wells=2), plate_window=3,
                            plate_flagged_fraction=0.5, well_flagged_fields=1000)
    run(hold, tracker, [result("A01", f, disc(*SMUDGE)) for f in range(1, 4)])
    assert hold.tick() == [] and hold.waiting == 3
    hold._clock.now += 61  # the instrument paused: judged as they stand (sample dirt)
    assert [(a.rule, a.state) for a in hold.tick()] == [(PLATE_FRACTION, "firing")]
    assert hold.waiting == 0
    run(hold, tracker, [result("A02", 1, disc(10, 10, 4))])
    assert hold.waiting == 1
    hold.flush()
    assert hold.waiting == 0


def test_what_waits_is_bounded():
    hold, tracker, _ = held(OpticsConfig(fields=5, wells=5, missed_fields=2))
    # The same artifact in every field of one well stays undecided (five wells asked for).
    run(hold, tracker, [result("A01", f, disc(*SMUDGE)) for f in range(60)])
    assert hold.waiting <= tracker.max_wait


def test_a_plate_without_a_smudge_fires_no_optics_and_its_sample_alerts_as_before():
    rng = np.random.default_rng(5)
    hold, tracker, sent = held(OpticsConfig(fields=5, wells=2), surge_min_fields=1000)
    results = []
    for w, f in plate_fields(40):
        dirty = w in ("A03", "A04")
        blobs = [disc(rng.uniform(10, 86), rng.uniform(10, 86), 5)
                 for _ in range(2 if dirty else 0)]
        results.append(result(w, f, *blobs))
    run(hold, tracker, results)
    hold.flush()
    assert OPTICS not in {a.rule for a in sent}
    assert {(a.rule, a.well) for a in sent if a.state == "firing"} >= {
        (WELL_FIELDS, "A03"), (WELL_FIELDS, "A04")}
    assert AREA_SURGE not in {a.rule for a in sent}


def test_optics_alert_resolves_when_the_place_is_gone_and_when_the_plate_ends():
    hold, tracker, sent = held(OpticsConfig(fields=3, wells=2, missed_fields=1), plate_window=8)
    fields = plate_fields(30, fields_per_well=2)
    run(hold, tracker, [result(w, f, disc(*SMUDGE)) for w, f in fields[:6]])
    run(hold, tracker, [result(w, f) for w, f in fields[6:8]])  # cleaned: gone after 2 fields
    assert [(a.rule, a.state) for a in sent] == [(OPTICS, "firing"), (OPTICS, "resolved")]
    assert "light path clean" in sent[1].message and sent[1].place == sent[0].place
    # Dirty again; then the next plate: P1 ends after plate_window fields of P2.
    run(hold, tracker, [result(w, f, disc(*SMUDGE)) for w, f in fields[8:14]])
    run(hold, tracker, [result(w, f, plate="P2") for w, f in fields[:10]])
    hold.flush()
    states = [(a.plate, a.rule, a.state) for a in sent[2:]]
    assert states == [("P1", OPTICS, "firing"), ("P1", OPTICS, "resolved")]
    assert "plate ended" in sent[-1].message and sent[-1].place in sent[-1].message
