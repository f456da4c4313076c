"""Event times (ns since the epoch, UTC) as PostgreSQL timestamps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_datetime(ns: int) -> datetime:
    """UTC time of a nanosecond timestamp, truncated to PostgreSQL's microseconds.

    Integer arithmetic: a float would round differently across replays.
    """
    return _EPOCH + timedelta(microseconds=ns // 1000)
