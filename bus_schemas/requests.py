"""Requests a process answers over core NATS request/reply (not stored): the gateway asks
the live producer (``bus_schemas.live``) and the classifiers (``bus_schemas.deploy``).

A request is a frozen pydantic model packed with msgpack; the answer is the dict the
gateway hands back to its client (``{"error": ...}`` when refused).
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgpack
from pydantic import BaseModel, ValidationError

from bus_schemas.errors import TidzamError

M = TypeVar("M", bound=BaseModel)


class RequestError(TidzamError, ValueError):
    """A request or an answer that cannot be read."""


def pack_request(request: BaseModel) -> bytes:
    """Raises OverflowError or ValueError for an integer msgpack cannot carry."""
    return msgpack.packb(request.model_dump(), use_bin_type=True)  # type: ignore[no-any-return]


def unpack_request(model: type[M], data: bytes, what: str) -> M:
    try:
        return model.model_validate(msgpack.unpackb(data, raw=False))
    except (ValueError, ValidationError, msgpack.ExtraData) as exc:
        raise RequestError(f"unreadable {what} request: {exc}") from exc


def pack_reply(reply: dict[str, Any]) -> bytes:
    return msgpack.packb(reply, use_bin_type=True)  # type: ignore[no-any-return]


def unpack_reply(data: bytes, what: str) -> dict[str, Any]:
    try:
        reply = msgpack.unpackb(data, raw=False)
    except (ValueError, msgpack.ExtraData) as exc:
        raise RequestError(f"unreadable {what} answer: {exc}") from exc
    if not isinstance(reply, dict):
        raise RequestError(f"a {what} answer is an object")
    return reply
