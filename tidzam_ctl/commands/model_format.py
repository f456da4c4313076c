"""How the ``tidzam_ctl model`` commands show times, proportions and counts."""

from __future__ import annotations

from datetime import UTC, datetime


def iso(at_ns: int | None) -> str | None:
    return None if not at_ns else datetime.fromtimestamp(at_ns / 1e9, UTC).isoformat()


def pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def num(value: int | None) -> str:
    return "-" if value is None else str(value)
