"""Plate layouts: where a well name sits on a 96-, 384- or 1536-well plate.

Wells are named as daemon.decode.names writes them: row letters then a column number, "C07",
"P24", "AF48" (rows after Z are AA..AF). A name of another form (a CQ1 measurement number such
as "W0001", an empty well) has no position: it is shown and exported apart from the grid.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

LAYOUTS = {96: (8, 12), 384: (16, 24), 1536: (32, 48)}  # wells -> (rows, columns)
_WELL = re.compile(r"([A-Z]{1,2})(\d{1,2})")


def parse_well(well: str) -> tuple[int, int] | None:
    """(row, column), both from 0, of a well name; None when it names no plate position.

    >>> parse_well("C07"), parse_well("AF48"), parse_well("W0001")
    ((2, 6), (31, 47), None)
    """
    match = _WELL.fullmatch(well.upper())
    if match is None:
        return None
    letters, digits = match.groups()
    row = 0
    for letter in letters:
        row = row * 26 + ord(letter) - ord("A") + 1
    column = int(digits)
    if column < 1:
        return None
    return row - 1, column - 1


def row_name(row: int) -> str:
    """0 -> "A", 25 -> "Z", 26 -> "AA"."""
    name = ""
    row += 1
    while row > 0:
        row, rest = divmod(row - 1, 26)
        name = chr(ord("A") + rest) + name
    return name


def well_label(row: int, column: int) -> str:
    return f"{row_name(row)}{column + 1:02d}"


def infer_format(positions: Iterable[tuple[int, int]]) -> int:
    """The smallest layout that holds every position (96 for none; 1536 at most)."""
    rows = columns = 0
    for row, column in positions:
        rows, columns = max(rows, row + 1), max(columns, column + 1)
    for wells, (n_rows, n_columns) in sorted(LAYOUTS.items()):
        if rows <= n_rows and columns <= n_columns:
            return wells
    return max(LAYOUTS)


def fits(wells: int, position: tuple[int, int]) -> bool:
    n_rows, n_columns = LAYOUTS[wells]
    return position[0] < n_rows and position[1] < n_columns
