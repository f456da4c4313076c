"""How the ``tidzam_ctl model`` commands show times, proportions and counts."""

from __future__ import annotations


def pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def num(value: int | None) -> str:
    return "-" if value is None else str(value)
