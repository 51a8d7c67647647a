"""Plate, well, field, channel and plane from a frame's file name, as instruments write them.

Presets:

- ``operetta`` (Operetta / Opera Phenix export): ``r02c03f04p01-ch1sk1fk1fl1.tiff`` is row 2
  ("B"), column 3 -> well "B03", field 4, plane 1, channel 1. The plate is the folder the file is
  in (the measurement folder); an ``Images`` folder, as Harmony exports it, is skipped.
- ``imagexpress`` (MetaXpress): ``<plate>_<well>_s<site>_w<channel>.tif``, e.g.
  ``Plate1_C07_s3_w2.tif``; ``_s`` and ``_w`` are optional (one site / one wavelength), a
  ``_thumb...`` or UUID suffix after the channel is allowed, and a ``ZStep_<n>`` folder gives the
  plane.
- ``auto`` tries each preset in turn; ``regex`` uses the configured expression; ``none`` parses
  nothing.

Numbers are kept as the instrument wrote them (1-based); wells are a row letter and two digits.
"""

from __future__ import annotations

import functools
import re
from typing import TypedDict

from daemon.config import ConfigError, MetadataConfig

REGEX_GROUPS = ("plate", "well", "row", "column", "field", "channel", "plane")

_OPERETTA = re.compile(
    r"r(?P<row>\d{1,2})c(?P<column>\d{1,2})f(?P<field>\d+)p(?P<plane>\d+)"
    r"-ch(?P<channel>\d+)sk\d+fk\d+fl\d+\.tiff?",
    re.IGNORECASE,
)
_IMAGEXPRESS = re.compile(
    r"(?P<plate>.+?)_(?P<well>[A-Z]{1,2}\d{1,2})(?:_s(?P<field>\d+))?(?:_w(?P<channel>\d+))?"
    r"(?:_thumb[^.]*|[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12})?\.tiff?",
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
    parsers = {"operetta": (_parse_operetta,), "imagexpress": (_parse_imagexpress,)}
    for parse in parsers.get(config.preset, (_parse_operetta, _parse_imagexpress)):
        meta = parse(name, folders)
        if meta is not None:
            return meta
    return _meta()


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
