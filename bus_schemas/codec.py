"""Encode events as (headers, msgpack body); decode by the type in the header.

The body holds only data; the event type and schema version travel in NATS
headers. Decoding never sniffs the body: an unknown type, a newer version, a body
that is not msgpack or that fails validation raises ``DecodeError`` with a reason
that goes to the dead-letter stream.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import msgpack
from pydantic import ValidationError

from bus_schemas.errors import TidzamError
from bus_schemas.events import EVENT_TYPES, Event
from bus_schemas.upcasters import UPCASTERS, Upcaster, UpcastError, upcast

HEADER_TYPE = "Tidzam-Type"
HEADER_VERSION = "Tidzam-Version"
MSG_ID_HEADER = "Nats-Msg-Id"


class DecodeError(TidzamError, ValueError):
    """A message that cannot become an event; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def encode_body(event: Event) -> bytes:
    body: bytes = msgpack.packb(event.model_dump(mode="python"), use_bin_type=True)
    return body


def encode(event: Event) -> tuple[dict[str, str], bytes]:
    """Headers (type, version, message id) and msgpack body of an event."""
    headers = {
        HEADER_TYPE: event.event_type,
        HEADER_VERSION: str(event.schema_version),
        MSG_ID_HEADER: event.msg_id(),
    }
    return headers, encode_body(event)


def decode(
    headers: Mapping[str, str] | None,
    body: bytes,
    upcasters: Mapping[tuple[str, int], Upcaster] | None = None,
) -> Event:
    """The event in a message, upcast to the current schema version."""
    if not headers or HEADER_TYPE not in headers:
        raise DecodeError(f"missing {HEADER_TYPE} header")
    type_name = headers[HEADER_TYPE]
    cls = EVENT_TYPES.get(type_name)
    if cls is None:
        raise DecodeError(f"unknown event type {type_name!r}")
    try:
        version = int(headers.get(HEADER_VERSION, "1"))
    except ValueError:
        raise DecodeError(f"bad {HEADER_VERSION} header {headers.get(HEADER_VERSION)!r}") from None
    try:
        data: Any = msgpack.unpackb(body, raw=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise DecodeError(f"body is not msgpack: {exc}") from None
    if not isinstance(data, dict):
        raise DecodeError(f"body is a {type(data).__name__}, not a map")
    try:
        data = upcast(type_name, version, data, cls.schema_version, upcasters or UPCASTERS)
        return cls.model_validate(data)
    except UpcastError as exc:
        raise DecodeError(str(exc)) from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise DecodeError(
            f"invalid {type_name} v{version}: {where}: {first['msg']} "
            f"({exc.error_count()} error(s))"
        ) from None


Decoder = Callable[[Mapping[str, str] | None, bytes], Event]
