"""Times on the command line: ISO 8601 (UTC if no zone) or an age like ``90m``, ``2h``, ``3d``."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_AGE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """``2017-05-01T13:00``, ``2017-05-01 13:00:00+02:00`` or ``2h`` (that long ago)."""
    match = _AGE.match(text.strip())
    if match:
        delta = timedelta(**{_UNITS[match[2]]: float(match[1])})
        return (now or datetime.now(UTC)) - delta
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: use ISO 8601 (2017-05-01T13:00:00Z) or an age (2h, 3d)"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)
