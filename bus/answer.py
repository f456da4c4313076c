"""Answer one core NATS request (``bus_schemas.requests``): the handler's dict, or
``{"error": ...}`` for a refusal (a ``TidzamError``); an unexpected failure is logged
with its traceback and answered too, so the next request goes on."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.msg import Msg

from bus_schemas.errors import TidzamError
from bus_schemas.requests import pack_reply

log = logging.getLogger(__name__)


async def answer(msg: Msg, handle: Callable[[bytes], Awaitable[dict[str, Any]]],
                 what: str) -> None:
    try:
        reply = await handle(msg.data)
    except TidzamError as exc:  # RequestError included: a request that cannot be read
        reply = {"error": str(exc)}
    except Exception as exc:
        log.exception("%s request failed", what)
        reply = {"error": f"the {what} request failed: {type(exc).__name__}"}
    if msg.reply:
        await msg.respond(pack_reply(reply))
