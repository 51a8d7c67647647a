"""Dirt on the optics: an artifact at the same place in the field, field after field, well by well.

Dust or a smear on the camera window, the objective or a lens of the light path is imaged at the
same pixels of every field, whatever the sample under it. Dirt in the sample moves with the
sample: the next field (another place in the well) or the next well shows it elsewhere or not
at all.

The tracker follows the places where artifacts were found in the recent fields, per plate and
frame shape ("tracks"). An artifact continues a track when its mask and the track's latest mask
overlap with intersection over union (IoU) >= `optics.overlap`. A track seen in `optics.fields`
fields, spread over at least `optics.wells` wells, and never missing from more than
`optics.missed_fields` fields in a row, is a place on the optics: its artifacts from then on are
marked `stationary` (before they are written, so the stored artifact table says so) and the
alert rule "optics" fires for the plate. A place missing from more than missed_fields fields in
a row is forgotten; a place on the optics that is forgotten resolves its alert (the light path
was cleaned).

Overlap, defined: to make a place, intersection over union; to recognise a place already on the
optics, also the fraction of the artifact lying within it. IoU and not the overlap over the
smaller mask while the evidence builds up: a speck lying inside a large artifact's footprint
overlaps it completely by the smaller mask's measure, so in a dirty well a chain of unrelated
artifacts lying in each other's footprints could pass for one that stayed put, and calling
sample dirt optics dirt silences a plate's contamination alert, the costlier mistake. IoU is
symmetric and counts a change of size as much as a shift: the same smudge, darkening the same
pixels, gives about 0.9 from field to field, while a different artifact that happens to lie
there rarely reaches 0.5. Once a place is known, the segmenter sometimes outlines only part of
it (cells cover the rest; measured: half the smudge in 1 field of 40, IoU 0.49): an artifact
lying at least `overlap` within the place is that part (its mask does not replace the place's).
An artifact merging the smudge with sample dirt beside it lies mostly outside and stays sample.

Memory and time are bounded: per plate and frame shape at most MAX_TRACKS places, each keeping
only its latest mask (cut to its bounding box, bit-packed); at most MAX_PLATES plates (the least
recently seen is forgotten). A frame costs one bounding-box test per artifact and place and a
mask comparison only where boxes meet; nothing grows with the length of the run.

A plate starts with the places on the optics of the plate before it (same frame shape): the dirt
did not move when the plate was changed, so on the new plate its first sighting is marked.

The first fields - 1 sightings of a new place are written before the place is known, so they
stay unmarked in the table. The contamination rules wait for the decision instead
(daemon.sinks.alert_hold): each field reaches them once its artifacts are known to be on the
optics or not, and the `Sighting` here says which.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from daemon.config import OpticsConfig
from daemon.frames import STATIONARY, FrameResult
from daemon.sinks.alerts import Field

logger = logging.getLogger(__name__)

MAX_TRACKS = 32  # places followed per plate and frame shape
MAX_PLATES = 4  # plates (and frame shapes) followed at once; the least recently seen goes
MAX_WELLS_COUNTED = 96  # distinct wells remembered per place (for the rule and the message)
BOX = ("bbox_min_y", "bbox_min_x", "bbox_max_y", "bbox_max_x")  # max exclusive (postprocess)


@dataclass(frozen=True, slots=True)
class Place:
    """Where in the field a place is (its latest bounding box) and how often it was seen."""

    id: int
    y0: int
    x0: int
    y1: int  # exclusive
    x1: int
    fields: int  # fields it was seen in
    wells: int  # distinct wells among them

    def describe(self) -> str:
        return f"y {self.y0}-{self.y1 - 1}, x {self.x0}-{self.x1 - 1} px"


@dataclass(frozen=True, slots=True)
class OpticsEvent:
    state: str  # "found": a place on the optics, seen on this plate | "gone": forgotten
    plate: str
    place: Place
    source: str  # the field it was last seen in ("found") or judged gone at ("gone")


@dataclass(slots=True, eq=False)
class _Track:
    id: int
    box: tuple[int, int, int, int]  # y0, x0, y1, x1 of its latest sighting
    bits: np.ndarray  # its mask in that box, np.packbits
    area: int
    seen: int  # fields it was seen in
    wells: set[str]  # distinct named wells among them (up to MAX_WELLS_COUNTED)
    missed: int = 0  # fields in a row without it
    on_optics: bool = False
    ended: bool = False
    announced: str | None = None  # the plate its "found" event went to

    @property
    def decided(self) -> bool:
        return self.on_optics or self.ended

    def mask(self) -> np.ndarray:
        y0, x0, y1, x1 = self.box
        shape = (y1 - y0, x1 - x0)
        return np.unpackbits(self.bits, count=shape[0] * shape[1]).reshape(shape).astype(bool)

    def place(self) -> Place:
        return Place(self.id, *self.box, self.seen, len(self.wells))


@dataclass(frozen=True, slots=True)
class _Found:
    """One artifact of the current frame, as the tracker compares it."""

    row: int  # its row in the frame's artifact columns
    box: tuple[int, int, int, int]
    mask: np.ndarray  # bool, in box
    area: int


@dataclass(slots=True)
class Sighting:
    """A field as the contamination rules will judge it, once its places are decided."""

    plate: str
    well: str
    field: int
    identity: str
    flagged: bool
    area_fraction: float
    pixels: int
    n_artifacts: int
    places: tuple[tuple[_Track | None, int], ...] = ()  # (its place or None, area px) per artifact

    @classmethod
    def of(cls, result: FrameResult,
           places: tuple[tuple[_Track | None, int], ...] = ()) -> Sighting:
        meta = result.frame.meta
        height, width = result.frame.pixels.shape[-2:]
        return cls(meta.plate, meta.well, meta.field, result.frame.identity, bool(result.flagged),
                   float(result.area_fraction), int(height * width), int(result.n_artifacts),
                   places)

    @property
    def decided(self) -> bool:
        return all(track is None or track.decided for track, _ in self.places)

    def judged(self) -> Field:
        """The field for the contamination rules: its artifacts on the optics left out."""
        optics = [area for track, area in self.places if track is not None and track.on_optics]
        if not optics:
            return Field(self.plate, self.well, self.field, self.identity, self.flagged,
                         self.area_fraction)
        # Flagged only for what is in the sample. (A frame the detector flagged with no artifact
        # in its mask has no places, so it kept its flag above.)
        in_sample = self.n_artifacts - len(optics)
        area = max(0.0, self.area_fraction - sum(optics) / max(self.pixels, 1))
        return Field(self.plate, self.well, self.field, self.identity,
                     self.flagged and in_sample > 0, area)


@dataclass(slots=True)
class _Plate:
    tracks: list[_Track] = field(default_factory=list)


class OpticsTracker:
    """mark() each batch before it is written, take() it once stored; from one thread."""

    def __init__(self, config: OpticsConfig) -> None:
        self.config = config
        self._plates: OrderedDict[tuple[str, tuple[int, int]], _Plate] = OrderedDict()
        self._next_id = 1
        self._notes: dict[str, Sighting] = {}  # this batch's fields, by identity
        self._events: list[OpticsEvent] = []

    @property
    def max_wait(self) -> int:
        """Fields after which every place seen in a field is decided, at the latest (a place
        confirmed within fields x (missed + 1) fields, or forgotten missed + 1 after its last)."""
        c = self.config
        return c.fields * (c.missed_fields + 1) + c.missed_fields + 1

    def mark(self, results: Sequence[FrameResult]) -> list[FrameResult]:
        """The results with STATIONARY set in their artifact columns, in order."""
        # What the previous batch left untaken (alerts off, or the batch never became durable)
        # goes: nothing accumulates.
        self._notes, self._events = {}, []
        marked = []
        for result in results:
            result, sighting = self._look(result)
            self._notes[result.frame.identity] = sighting
            marked.append(result)
        return marked

    def take(self, results: Sequence[FrameResult]) -> tuple[list[Sighting], list[OpticsEvent]]:
        """The stored results' fields (duplicates left out) and the events since the last take."""
        sightings = [self._notes.get(r.frame.identity) or Sighting.of(r)
                     for r in results if not r.duplicate]
        self._notes = {}
        events, self._events = self._events, []
        return sightings, events

    # ---------------------------------------------------------------- one frame

    def _look(self, result: FrameResult) -> tuple[FrameResult, Sighting]:
        found, rows = _artifacts_of(result)
        meta = result.frame.meta
        plate = self._plate(meta.plate, tuple(result.frame.pixels.shape[-2:]))
        stationary = np.zeros(rows, dtype=bool)
        places: list[tuple[_Track | None, int]] = []
        continued = set()
        for artifact, track in zip(found, self._match(plate.tracks, found), strict=True):
            if track is None:
                track = self._part_of(plate, artifact)
                if track is not None:
                    self._seen_again(track, meta.well, continued)
                else:
                    track = self._start(plate, artifact, meta.well)
            else:
                self._continue(track, artifact, meta.well, result)
                continued.add(track.id)
            if track is not None and track.on_optics:
                stationary[artifact.row] = True
                if track.announced != meta.plate:
                    track.announced = meta.plate
                    self._events.append(
                        OpticsEvent("found", meta.plate, track.place(), meta.source))
            places.append((track, artifact.area))
        self._miss(plate, continued, places, meta.source)
        if rows:
            result = replace(result, artifacts={**result.artifacts, STATIONARY: stationary})
        return result, Sighting.of(result, tuple(places))

    def _plate(self, name: str, shape: tuple[int, ...]) -> _Plate:
        key = (name, (int(shape[0]), int(shape[1])))
        plate = self._plates.get(key)
        if plate is None:
            plate = self._plates[key] = _Plate(self._inherited(key[1]))
            while len(self._plates) > MAX_PLATES:
                self._plates.popitem(last=False)
        self._plates.move_to_end(key)
        return plate

    def _inherited(self, shape: tuple[int, int]) -> list[_Track]:
        """The places on the optics of the latest plate of this frame shape, copied."""
        for (_, other), plate in reversed(self._plates.items()):
            if other == shape:
                return [replace(t, id=self._new_id(), wells=set(t.wells), missed=0,
                                announced=None)
                        for t in plate.tracks if t.on_optics and not t.ended]
        return []

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    def _match(self, tracks: list[_Track], found: list[_Found]) -> list[_Track | None]:
        """Each artifact's place (or None): the best IoU pairs first, each place used once."""
        pairs = []
        for i, artifact in enumerate(found):
            for track in tracks:
                iou = _iou(track, artifact, self.config.overlap)
                if iou >= self.config.overlap:
                    pairs.append((iou, i, track))
        pairs.sort(key=lambda p: -p[0])
        matched: list[_Track | None] = [None] * len(found)
        used = set()
        for _, i, track in pairs:
            if matched[i] is None and track.id not in used:
                matched[i] = track
                used.add(track.id)
        return matched

    def _part_of(self, plate: _Plate, artifact: _Found) -> _Track | None:
        """A place on the optics this artifact lies within (at least `overlap` of it): a part
        of the smudge segmented where cells cover the rest, or one of its pieces."""
        for track in plate.tracks:
            if track.on_optics and _inside(artifact, track) >= self.config.overlap:
                return track
        return None

    def _seen_again(self, track: _Track, well: str, continued: set[int]) -> None:
        """Seen in part: counted as seen, its mask kept (the place stays as it was established)."""
        if track.id not in continued:
            track.seen += 1
            track.missed = 0
            continued.add(track.id)
        if well and len(track.wells) < MAX_WELLS_COUNTED:
            track.wells.add(well)

    def _start(self, plate: _Plate, artifact: _Found, well: str) -> _Track | None:
        if len(plate.tracks) >= MAX_TRACKS and not self._make_room(plate):
            return None  # every place followed is on the optics: this one is judged as sample
        track = _Track(self._new_id(), artifact.box, np.packbits(artifact.mask), artifact.area,
                       1, {well} if well else set())
        plate.tracks.append(track)
        return track

    @staticmethod
    def _make_room(plate: _Plate) -> bool:
        """Forget the least promising place not on the optics (seen least, missed most)."""
        candidates = [t for t in plate.tracks if not t.on_optics]
        if not candidates:
            return False
        weakest = min(candidates, key=lambda t: (t.seen, -t.missed))
        weakest.ended = True
        plate.tracks.remove(weakest)
        return True

    def _continue(self, track: _Track, artifact: _Found, well: str, result: FrameResult) -> None:
        track.box, track.bits, track.area = artifact.box, np.packbits(artifact.mask), artifact.area
        track.seen += 1
        track.missed = 0
        if well and len(track.wells) < MAX_WELLS_COUNTED:
            track.wells.add(well)
        if track.on_optics or track.seen < self.config.fields:
            return
        if self.config.wells <= 1 or len(track.wells) >= self.config.wells:
            track.on_optics = True
            logger.info("%s: the artifact at %s was seen at the same place in %d fields of %d "
                        "wells: on the optics", result.frame.meta.source, track.place().describe(),
                        track.seen, len(track.wells))

    def _miss(self, plate: _Plate, continued: set[int], places: list, source: str) -> None:
        """Places not seen in this field count a miss; too many in a row and they are forgotten."""
        new = {track.id for track, _ in places if track is not None}
        kept = []
        for track in plate.tracks:
            if track.id not in continued and track.id not in new:
                track.missed += 1
                if track.missed > self.config.missed_fields:
                    track.ended = True
                    if track.on_optics and track.announced is not None:
                        self._events.append(OpticsEvent("gone", track.announced, track.place(),
                                                        source))
                    continue
            kept.append(track)
        plate.tracks = kept


def _artifacts_of(result: FrameResult) -> tuple[list[_Found], int]:
    """The frame's artifacts (masks cut from its label image) and its number of artifact rows."""
    columns = result.artifacts
    rows = len(np.atleast_1d(columns["label"])) if "label" in columns else 0
    labels = np.asarray(result.labels)
    if not rows or labels.ndim != 2 or not all(name in columns for name in BOX):
        return [], rows
    boxes = np.stack([np.atleast_1d(np.asarray(columns[name])).astype(np.int64) for name in BOX],
                     axis=1)
    found = []
    for row, (label, box) in enumerate(zip(np.atleast_1d(columns["label"]), boxes, strict=True)):
        y0, x0, y1, x1 = (int(v) for v in box)
        if y1 <= y0 or x1 <= x0:
            continue
        mask = labels[y0:y1, x0:x1] == int(label)
        area = int(np.count_nonzero(mask))
        if area:
            found.append(_Found(row, (y0, x0, y1, x1), mask, area))
    return found, rows


def _shared_pixels(track: _Track, artifact: _Found) -> int:
    """Pixels in both the track's mask and the artifact's (compared within their boxes' overlap)."""
    ty0, tx0, ty1, tx1 = track.box
    ay0, ax0, ay1, ax1 = artifact.box
    y0, x0, y1, x1 = max(ty0, ay0), max(tx0, ax0), min(ty1, ay1), min(tx1, ax1)
    if y1 <= y0 or x1 <= x0:
        return 0
    mine = track.mask()[y0 - ty0 : y1 - ty0, x0 - tx0 : x1 - tx0]
    theirs = artifact.mask[y0 - ay0 : y1 - ay0, x0 - ax0 : x1 - ax0]
    return int(np.count_nonzero(mine & theirs))


def _inside(artifact: _Found, track: _Track) -> float:
    """The fraction of the artifact's mask that lies within the track's."""
    return _shared_pixels(track, artifact) / artifact.area


def _iou(track: _Track, artifact: _Found, at_least: float) -> float:
    """Intersection over union of the masks; 0 when it cannot reach `at_least` anyway."""
    small, large = sorted((track.area, artifact.area))
    if small < at_least * large:  # IoU <= small / large, whatever the places
        return 0.0
    inter = _shared_pixels(track, artifact)
    return inter / (track.area + artifact.area - inter)
