"""The editor's one error: an edit or a sound that cannot be done."""

from __future__ import annotations

from bus_schemas.errors import TidzamError


class EditorError(TidzamError, RuntimeError):
    """An edit that cannot be done; the message says why and what to do instead."""
