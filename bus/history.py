"""Reading a stream's history without a consumer: the few events of a subject
(deploys, for instance), one direct get each, in stream order."""

from __future__ import annotations

import logging

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from bus_schemas import DecodeError, ModelDeployed, decode
from bus_schemas import subjects as subj
from bus_schemas.streams import CONTROL

log = logging.getLogger(__name__)


async def read_deployments(js: JetStreamContext, model_id: str | None = None
                           ) -> tuple[list[tuple[int, ModelDeployed]], int]:
    """Every ``ModelDeployed`` in CONTROL for ``model_id`` (None: every model) in stream
    order with its stream sequence, and the last sequence read (0: none). Deploys are
    few: one direct get per event, no consumer left behind."""
    found: list[tuple[int, ModelDeployed]] = []
    seq = 0
    subject = subj.model_deployed(model_id)
    while True:
        try:
            raw = await js.get_msg(CONTROL.name, seq=seq + 1, subject=subject, next=True)
        except NotFoundError:
            return found, seq
        seq = raw.seq if raw.seq else seq + 1
        try:
            event = decode(raw.headers, raw.data or b"")
        except DecodeError as exc:
            log.warning("CONTROL seq %d on %s is unreadable (%s): skipped", seq, raw.subject,
                        exc.reason)
            continue
        if isinstance(event, ModelDeployed):
            found.append((seq, event))
