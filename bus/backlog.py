"""Waiting for the pipeline to catch up: consumers drained, projections committed; where
a durable consumer's backlog starts."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import datetime

from nats.aio.client import Client
from nats.js.errors import NotFoundError

from bus_schemas.streams import AUDIO, CLASSIFIER_DURABLE_PREFIX


async def consumer_backlog(nc: Client, stream: str, durable: str) -> int | None:
    """Messages not yet acked by a durable consumer (None if it does not exist)."""
    try:
        info = await nc.jetstream().consumer_info(stream, durable)
    except NotFoundError:
        return None
    return int(info.num_pending or 0) + int(info.num_ack_pending or 0)


async def classifiers_waiting(nc: Client) -> int:
    """Audio chunks not yet handed to any classifier (summed over the classifier
    durables of the AUDIO stream): the live pipeline's backlog."""
    infos = await nc.jetstream().consumers_info(AUDIO.name)
    return sum(int(info.num_pending or 0) for info in infos
               if (info.name or "").startswith(CLASSIFIER_DURABLE_PREFIX))


async def wait_idle(nc: Client, durables: list[tuple[str, str]], timeout_s: float,
                    settle_s: float = 1.0) -> bool:
    """Wait until every durable has no backlog for ``settle_s``; False on timeout."""
    deadline = time.monotonic() + timeout_s
    quiet_since: float | None = None
    while time.monotonic() < deadline:
        backlogs = [await consumer_backlog(nc, s, d) for s, d in durables]
        if all(b == 0 for b in backlogs):
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= settle_s:
                return True
        else:
            quiet_since = None
        await asyncio.sleep(0.2)
    return False


async def wait_processed(nc: Client, durables: list[tuple[str, str]], timeout_s: float
                         ) -> bool:
    """Wait until each durable, in order, has handled everything its stream held when
    the durable's turn came (the classifier: the audio published so far; then each
    projection: the predictions the classifier had published by then). What keeps
    arriving after that (a live source that never stops) is not waited for, as
    ``wait_idle`` would. False on timeout."""
    deadline = time.monotonic() + timeout_s
    js = nc.jetstream()
    for stream, durable in durables:
        target = int((await js.stream_info(stream)).state.last_seq or 0)
        while True:
            try:
                info = await js.consumer_info(stream, durable)
            except NotFoundError:
                info = None  # not created yet: its process is starting
            if info is not None:
                floor = int(info.ack_floor.stream_seq or 0) if info.ack_floor else 0
                if floor >= target or not (info.num_pending or info.num_ack_pending):
                    break
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.2)
    return True


async def oldest_unacked_at(nc: Client, stream: str, durable: str, subject: str
                            ) -> datetime | None:
    """When the oldest message on ``subject`` that ``durable`` has not acked was stored
    (the stream's oldest if the durable does not exist yet); None when there is none."""
    js = nc.jetstream()
    floor = 0
    with contextlib.suppress(NotFoundError):
        info = await js.consumer_info(stream, durable)
        if not (info.num_pending or info.num_ack_pending):
            return None
        floor = int(info.ack_floor.stream_seq or 0) if info.ack_floor else 0
    try:
        raw = await js.get_msg(stream, seq=floor + 1, subject=subject, next=True)
    except NotFoundError:
        return None
    return raw.time
