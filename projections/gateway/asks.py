"""What the gateway asks other processes over core NATS request/reply (not stored): live
audio to the live producer (``bus_schemas.live``) and model requests to the classifiers
(``bus_schemas.deploy``), which hold what the gateway may not import (the registry,
LiteRT). An answer that is an error, a process that is not running or that does not
answer in time raises ``Refused`` with the HTTP status a REST client gets."""

from __future__ import annotations

from typing import Any, Literal

from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from pydantic import ValidationError

from bus_schemas import subjects as subj
from bus_schemas.deploy import ModelRequest
from bus_schemas.errors import TidzamError
from bus_schemas.requests import RequestError, pack_request, unpack_reply


class Refused(TidzamError):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


async def ask(nc: Client, subject: str, packed: bytes, who: str, absent: str,
              timeout: float) -> dict[str, Any]:
    """``who``'s answer; Refused: 503 where nobody answers, 422 for its refusal."""
    try:
        answer = await nc.request(subject, packed, timeout=timeout)
        reply = unpack_reply(answer.data, who)
    except NoRespondersError:
        raise Refused(absent, 503) from None
    except (TimeoutError, NatsTimeoutError):
        raise Refused(f"{who} did not answer in {timeout:.0f} s", 503) from None
    except RequestError as exc:
        raise Refused(str(exc), 502) from None
    if "error" in reply:
        raise Refused(str(reply["error"])[:1000], 422)
    return reply


async def models(nc: Client, op: Literal["list", "deploy", "rollback"], spec: str = "",
                 new_windowing: Any = False, by: str = "") -> dict[str, Any]:
    """A classifier's answer to a model request: ``{"models": [...]}`` for ``list``,
    ``{"model": {model_id, version, previous, path, message}}`` for a deploy or a
    rollback (published: every classifier switches at its next batch)."""
    if not isinstance(new_windowing, bool):
        raise Refused("new_windowing is true or false", 422)
    try:
        request = ModelRequest(op=op, spec=spec, new_windowing=new_windowing, by=by[:200])
    except ValidationError:
        raise Refused("a model is NAME or NAME@VERSION (letters, digits and . _ - +, at "
                      "most 200)", 422) from None
    # a deploy validates the folder with one LiteRT inference: loading a model takes time
    return await ask(nc, subj.MODEL_IN, pack_request(request), "the classifier",
                     "no classifier is running to answer model requests (the stack's "
                     "`classifier` process: `tidzam_ctl status`)",
                     timeout=15 if op == "list" else 120)
