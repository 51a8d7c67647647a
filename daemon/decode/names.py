"""Plate, well, field, channel and plane from a frame's file name, as instruments write them.

Presets:

- ``operetta`` (Operetta / Opera Phenix export): ``r02c03f04p01-ch1sk1fk1fl1.tiff`` is row 2
  ("B"), column 3 -> well "B03", field 4, plane 1, channel 1. The plate is the folder the file is
  in (the measurement folder); an ``Images`` folder, as Harmony exports it, is skipped.
- ``imagexpress`` (MetaXpress): ``<plate>_<well>_s<site>_w<channel>.tif``, e.g.
  ``Plate1_C07_s3_w2.tif``; ``_s`` and ``_w`` are optional (one site / one wavelength), a
  ``_thumb...`` or UUID suffix after the channel is allowed, and a ``ZStep_<n>`` folder gives the
  plane.
  The well is upper case, as MetaXpress writes it: in ``P123_A05_f1.tif`` "f1" is no well.
- ``cellvoyager`` (Yokogawa CV7000 / CV8000): ``<plate>_<well>_T<time>F<field>L<layer>A<action>
  Z<plane>C<channel>.tif``, e.g. ``AssayPlate_Greiner_#655090_C02_T0001F001L01A01Z01C01.tif``.
- ``cq1`` (Yokogawa CellVoyager CQ1): ``W<well number>F<field>T<time>Z<plane>C<channel>.tif``,
  e.g. ``W0001F0001T0001Z001C1.tif``; the plate is the folder. The name carries the well's
  number in the measurement, not its row and column (only the measurement's OME-XML maps them),
  so the well is kept as the instrument numbered it: "W0001".
- ``generic``: ``<plate>_<well>_<f|s><field>[_<w|c|ch><channel>].tif`` with a strict well, a row
  letter A-P and one or two digits: ``P123_A05_f1.tif``, ``screen3_H12_s2_w1.tif``.
- ``auto`` tries each preset in turn. A name none of them fully describes gets no plate, well or
  field (never a guessed one); the folder's first such name is logged with what to configure,
  and `artifactd_filenames_unparsed_total` counts them. ``regex`` uses the configured
  expression; ``none`` parses nothing.

Numbers are kept as the instrument wrote them (1-based); wells are a row letter and two digits.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from collections import OrderedDict
from typing import TypedDict

from daemon.config import ConfigError, MetadataConfig

logger = logging.getLogger(__name__)

REGEX_GROUPS = ("plate", "well", "row", "column", "field", "channel", "plane")

_OPERETTA = re.compile(
    r"r(?P<row>\d{1,2})c(?P<column>\d{1,2})f(?P<field>\d+)p(?P<plane>\d+)"
    r"-ch(?P<channel>\d+)sk\d+fk\d+fl\d+\.tiff?",
    re.IGNORECASE,
)
# The plate never runs across a "_<well>_" token: in "P123_A05_F1.tif" the well is A05 (and the
# name is not MetaXpress's), not F1 of a plate "P123_A05".
_IMAGEXPRESS = re.compile(
    r"(?P<plate>(?:(?!_(?-i:[A-Z]{1,2})\d{1,2}_).)+?)_(?P<well>(?-i:[A-Z]{1,2})\d{1,2})(?:_s(?P<field>\d+))?(?:_w(?P<channel>\d+))?"
    r"(?:_thumb[^.]*|[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12})?\.tiff?",
    re.IGNORECASE,
)
_CELLVOYAGER = re.compile(
    r"(?P<plate>.+)_(?P<well>(?-i:[A-Z]{1,2})\d{2})_T\d{4}F(?P<field>\d{3})L\d{2}A\d{2}"
    r"Z(?P<plane>\d{2})C(?P<channel>\d{2})\.tiff?",
    re.IGNORECASE,
)
_CQ1 = re.compile(
    r"W(?P<well>\d{4})F(?P<field>\d{4})T\d{4}Z(?P<plane>\d{3})C(?P<channel>\d+)\.tiff?",
    re.IGNORECASE,
)
_GENERIC = re.compile(
    r"(?P<plate>.+?)_(?P<well>(?-i:[A-P])\d{1,2})_[fs](?P<field>\d+)"
    r"(?:_(?:w|ch|c)(?P<channel>\d+))?\.tiff?",
    re.IGNORECASE,
)
_ZSTEP_FOLDER = re.compile(r"ZStep_(\d+)", re.IGNORECASE)
_WELL = re.compile(r"([A-Z]{1,2})0*(\d{1,3})", re.IGNORECASE)
# Harmony puts the TIFFs of a measurement into "<measurement>/Images/".
_EXPORT_FOLDERS = {"images"}


class NameMeta(TypedDict):
    plate: str
    well: str
    field: int
    channel: int
    plane: int


def parse_name(source: str, config: MetadataConfig) -> NameMeta:
    """What the file name at `source` (relative path, forward slashes) says about the frame.

    Parts a name does not carry keep FrameMeta's defaults: "" for plate and well, -1 for numbers.

    >>> cfg = MetadataConfig(preset="auto")
    >>> parse_name("Run 7/r02c03f04p01-ch1sk1fk1fl1.tiff", cfg)
    {'plate': 'Run 7', 'well': 'B03', 'field': 4, 'channel': 1, 'plane': 1}
    >>> parse_name("Plate1_C07_s3_w2.tif", cfg)
    {'plate': 'Plate1', 'well': 'C07', 'field': 3, 'channel': 2, 'plane': -1}
    """
    folders, _, name = source.rpartition("/")
    if config.preset == "none":
        return _meta()
    if config.preset == "regex":
        return _parse_regex(source, folders, _compiled(config.regex))
    chosen = PRESETS.get(config.preset)
    for parse in (chosen,) if chosen else PRESETS.values():
        meta = parse(name, folders)
        if meta is not None:
            return meta
    _unparsed.note(folders, name, config.preset)
    return _meta()


def unparsed_names() -> int:
    """File names no preset described since start-up (artifactd_filenames_unparsed_total)."""
    return _unparsed.count


class _Unparsed:
    """Counts names no preset describes; logs the first one of each folder (a bounded memory
    of folders, so a long screen cannot grow it)."""

    def __init__(self, folders: int = 1024) -> None:
        self.count = 0
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._limit = folders
        self._lock = threading.Lock()

    def note(self, folder: str, name: str, preset: str) -> None:
        with self._lock:
            self.count += 1
            if folder in self._seen:
                return
            self._seen[folder] = None
            if len(self._seen) > self._limit:
                self._seen.popitem(last=False)
        logger.warning(
            "%s: file names like %r match no preset (%s), so their plate, well and field are "
            "left empty; set metadata.preset to the instrument's, or metadata.preset = \"regex\" "
            "with metadata.regex", folder or ".", name,
            ", ".join(PRESETS) if preset == "auto" else preset)


_unparsed = _Unparsed()


def check_regex(config: MetadataConfig) -> None:
    """Fail at start-up, naming metadata.regex, when the expression cannot be used."""
    if config.preset == "regex":
        _compiled(config.regex)


def well_name(row: str, column: str) -> str:
    """'C', '7' -> 'C07'; '3', '7' -> 'C07' (a row number counts from 1 = 'A').

    >>> well_name("c", "7"), well_name("3", "07"), well_name("27", "1")
    ('C07', 'C07', 'AA01')
    """
    if row.isdigit():
        number, letters = int(row), ""
        while number > 0:
            number, rest = divmod(number - 1, 26)
            letters = chr(ord("A") + rest) + letters
        row = letters
    return f"{row.upper()}{int(column):02d}"


def _parse_operetta(name: str, folders: str) -> NameMeta | None:
    match = _OPERETTA.fullmatch(name)
    if match is None:
        return None
    parents = [p for p in folders.split("/") if p]
    while parents and parents[-1].lower() in _EXPORT_FOLDERS:
        parents.pop()
    return _meta(
        plate=parents[-1] if parents else "",
        well=well_name(match["row"], match["column"]),
        field=int(match["field"]),
        channel=int(match["channel"]),
        plane=int(match["plane"]),
    )


def _parse_imagexpress(name: str, folders: str) -> NameMeta | None:
    match = _IMAGEXPRESS.fullmatch(name)
    if match is None:
        return None
    zstep = _ZSTEP_FOLDER.search(folders)
    return _meta(
        plate=match["plate"],
        well=_normal_well(match["well"]),
        field=_number(match["field"]),
        channel=_number(match["channel"]),
        plane=int(zstep[1]) if zstep else -1,
    )


def _parse_cellvoyager(name: str, folders: str) -> NameMeta | None:
    match = _CELLVOYAGER.fullmatch(name)
    if match is None:
        return None
    return _meta(plate=match["plate"], well=_normal_well(match["well"]),
                 field=int(match["field"]), channel=int(match["channel"]),
                 plane=int(match["plane"]))


def _parse_cq1(name: str, folders: str) -> NameMeta | None:
    match = _CQ1.fullmatch(name)
    if match is None:
        return None
    return _meta(plate=folders.rsplit("/", 1)[-1], well=f"W{match['well']}",
                 field=int(match["field"]), channel=int(match["channel"]),
                 plane=int(match["plane"]))


def _parse_generic(name: str, folders: str) -> NameMeta | None:
    match = _GENERIC.fullmatch(name)
    if match is None:
        return None
    return _meta(plate=match["plate"], well=_normal_well(match["well"]),
                 field=int(match["field"]), channel=_number(match["channel"]))


# In the order `auto` tries them: the most specific names first.
PRESETS = {
    "operetta": _parse_operetta,
    "cellvoyager": _parse_cellvoyager,
    "cq1": _parse_cq1,
    "imagexpress": _parse_imagexpress,
    "generic": _parse_generic,
}


def _parse_regex(source: str, folders: str, pattern: re.Pattern[str]) -> NameMeta:
    match = pattern.search(source)
    if match is None:
        return _meta()
    groups = {k: v for k, v in match.groupdict().items() if v}
    well = ""
    if "well" in groups:
        well = _normal_well(groups["well"])
    elif "row" in groups and "column" in groups:
        well = well_name(groups["row"], groups["column"])
    parent = folders.rsplit("/", 1)[-1]
    return _meta(
        plate=groups.get("plate", parent),
        well=well,
        field=_number(groups.get("field")),
        channel=_number(groups.get("channel")),
        plane=_number(groups.get("plane")),
    )


@functools.lru_cache(maxsize=8)
def _compiled(regex: str) -> re.Pattern[str]:
    try:
        pattern = re.compile(regex)
    except re.error as exc:
        raise ConfigError(f"metadata.regex: not a valid regular expression ({exc})") from None
    unknown = sorted(set(pattern.groupindex) - set(REGEX_GROUPS))
    if unknown or not pattern.groupindex:
        raise ConfigError(
            f"metadata.regex: expected named groups among {', '.join(REGEX_GROUPS)}, "
            f"got {sorted(pattern.groupindex) or 'none'}"
        )
    return pattern


def _normal_well(text: str) -> str:
    match = _WELL.fullmatch(text)
    return well_name(match[1], match[2]) if match else text.upper()


def _number(text: str | None) -> int:
    return int(text) if text and text.isdigit() else -1


def _meta(
    *, plate: str = "", well: str = "", field: int = -1, channel: int = -1, plane: int = -1
) -> NameMeta:
    return NameMeta(plate=plate, well=well, field=field, channel=channel, plane=plane)
