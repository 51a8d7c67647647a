"""The one way artifactd writes a moment: RFC 3339 in UTC with milliseconds,
e.g. `2026-12-02T11:16:34.123Z`.

Every stored time (frame and failure tables, store settings, journal, alerts, engine cache)
goes through `timestamp`, so they compare and sort as plain text: one zone, one width.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def timestamp(moment: datetime | None = None) -> str:
    """`moment` (now when None) as RFC 3339 UTC with milliseconds; a time without a zone is
    taken to be UTC."""
    moment = datetime.now(UTC) if moment is None else moment
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def timestamp_ns(ns: int) -> str:
    """Nanoseconds since the epoch (a file's mtime_ns) in the same format, without the
    rounding a float of seconds would bring."""
    return timestamp(EPOCH + timedelta(microseconds=ns // 1000))
