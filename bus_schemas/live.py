"""Live audio handed from the gateway to the live producer: core NATS request/reply on
``subjects.LIVE_IN``, not stored (the producer makes ``AudioChunk`` events of it).

The gateway is the one port clients talk to; the live producer keeps the sessions, the
resampling, the chunking and the gain stage. A request is ``LiveRequest`` packed with
msgpack; the answer is the dict the gateway hands back to its socket.io client (the
seed's ``{"ok": true}``, ``{"sys": {...}}`` or ``{"error": ...}``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgpack
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bus_schemas.errors import TidzamError

MAX_BUFFER_SAMPLES = 384_000  # one request: at most a second at the highest rate


class LiveRequestError(TidzamError, ValueError):
    """A live request that cannot be read."""


class LiveRequest(BaseModel):
    """``open`` a client's stream (answers its name), ``audio`` (PCM16 as bytes or a list
    of integers, at ``samplerate``), ``close`` it (``reason``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    op: Literal["open", "audio", "close"]
    client: Annotated[str, Field(min_length=1, max_length=200)]  # <gateway>:<sid>
    samplerate: int | None = None
    buffer: Annotated[bytes, Field(max_length=2 * MAX_BUFFER_SAMPLES)] | Annotated[
        list[int], Field(max_length=MAX_BUFFER_SAMPLES)] | None = None
    reason: Annotated[str, Field(max_length=200)] = ""


def pack(request: LiveRequest) -> bytes:
    return msgpack.packb(request.model_dump(), use_bin_type=True)  # type: ignore[no-any-return]


def unpack(data: bytes) -> LiveRequest:
    try:
        return LiveRequest.model_validate(msgpack.unpackb(data, raw=False))
    except (ValueError, ValidationError, msgpack.ExtraData) as exc:
        raise LiveRequestError(f"unreadable live request: {exc}") from exc


def pack_reply(reply: dict[str, Any]) -> bytes:
    return msgpack.packb(reply, use_bin_type=True)  # type: ignore[no-any-return]


def unpack_reply(data: bytes) -> dict[str, Any]:
    try:
        reply = msgpack.unpackb(data, raw=False)
    except (ValueError, msgpack.ExtraData) as exc:
        raise LiveRequestError(f"unreadable live answer: {exc}") from exc
    if not isinstance(reply, dict):
        raise LiveRequestError("a live answer is an object")
    return reply
