"""Live audio handed from the gateway to the live producer: core NATS request/reply on
``subjects.LIVE_IN``, not stored (the producer makes ``AudioChunk`` events of it).

The gateway is the one port clients talk to; the live producer keeps the sessions, the
resampling, the chunking and the gain stage. A request is ``LiveRequest`` packed with
msgpack (``bus_schemas.requests``); the answer is the dict the gateway hands back to its
socket.io client (the seed's ``{"ok": true}``, ``{"sys": {...}}`` or ``{"error": ...}``).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from bus_schemas.requests import unpack_request

MAX_BUFFER_SAMPLES = 384_000  # one request: at most a second at the highest rate


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


def unpack(data: bytes) -> LiveRequest:
    return unpack_request(LiveRequest, data, "live")
