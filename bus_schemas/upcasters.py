"""Pure functions that lift an old event body to the next schema version.

An upcaster takes the decoded body (a dict) of ``event_type`` at version N and
returns the body at version N+1. ``upcast`` chains them up to the current version
of the model, so stored events of any age are read by today's code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from bus_schemas.errors import TidzamError

Body = dict[str, Any]
Upcaster = Callable[[Body], Body]

# (event_type, from_version) -> function producing from_version + 1.
# v1 is the first schema; upcasters are added here when a model's version is bumped.
UPCASTERS: dict[tuple[str, int], Upcaster] = {}


class UpcastError(TidzamError, ValueError):
    """No path from a stored version to the current one."""


def upcast(
    event_type: str,
    version: int,
    body: Body,
    current: int,
    registry: Mapping[tuple[str, int], Upcaster] | None = None,
) -> Body:
    """Lift ``body`` from ``version`` to ``current`` through the registered steps."""
    steps = UPCASTERS if registry is None else registry
    if version > current:
        raise UpcastError(
            f"{event_type} v{version} is newer than this code (v{current}): upgrade Tidzam"
        )
    while version < current:
        step = steps.get((event_type, version))
        if step is None:
            raise UpcastError(f"no upcaster for {event_type} v{version} -> v{version + 1}")
        body = step(dict(body))
        version += 1
    return body
