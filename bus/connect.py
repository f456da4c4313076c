"""Connecting to NATS and creating the JetStream streams of ``bus_schemas.streams``."""

from __future__ import annotations

import logging
import os
import time

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError

from bus.settings import RetentionSettings
from bus_schemas.errors import TidzamError
from bus_schemas.streams import ALL_STREAMS, AUDIO, EVENTS, StreamSpec

log = logging.getLogger(__name__)


class BusError(TidzamError, RuntimeError):
    """NATS is unreachable or refused the stream layout."""


async def connect(url: str, name: str) -> Client:
    """A NATS connection that reconnects for ever (a restarted server is picked up).

    ``url`` may list several servers of a cluster, comma-separated: any one that
    answers will do, and the others are tried on reconnects.
    """
    servers = [u.strip() for u in url.split(",") if u.strip()]
    lost: list[float] = []  # when the connection was lost, while it is

    async def on_error(exc: Exception) -> None:  # one line, not nats-py's traceback
        if lost:  # reconnect attempts fail until the server is back: said once
            return
        log.warning("NATS: %s", f"{type(exc).__name__}: {exc}".rstrip(": "))

    client: list[Client] = []

    async def on_disconnected() -> None:
        closing = client and (client[0].is_closed or client[0].is_draining)
        if not lost and not closing:
            lost.append(time.monotonic())
            log.warning("NATS connection lost: reconnecting (nothing is dropped meanwhile)")

    async def on_reconnected() -> None:
        if lost:
            log.warning("NATS connection back after %.1f s", time.monotonic() - lost.pop())

    try:
        nc: Client = await nats.connect(
            servers,
            name=name,
            connect_timeout=5,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            allow_reconnect=True,
            error_cb=on_error,
            disconnected_cb=on_disconnected,
            reconnected_cb=on_reconnected,
        )
    except Exception as exc:
        raise BusError(f"cannot connect to NATS ({_redact(url)}): {exc}") from exc
    client.append(nc)
    return nc


def _redact(url: str) -> str:
    if "," in url:
        return ",".join(_redact(u) for u in url.split(","))
    if "@" not in url:
        return url
    scheme, rest = url.split("://", 1) if "://" in url else ("nats", url)
    return f"{scheme}://***@{rest.split('@', 1)[1]}"


def stream_replicas() -> int:
    """Copies of each stream: ``TIDZAM_STREAM_REPLICAS`` (3 on a 3-node cluster), else 1."""
    raw = os.environ.get("TIDZAM_STREAM_REPLICAS", "1")
    if not raw.isdigit() or not 1 <= int(raw) <= 5:
        raise BusError(f"TIDZAM_STREAM_REPLICAS must be 1 to 5, not {raw!r}")
    return int(raw)


def stream_config(spec: StreamSpec, retention: RetentionSettings | None = None) -> StreamConfig:
    """The JetStream config of ``spec``; AUDIO's and EVENTS' limits are the site's
    (``retention``, else ``TIDZAM_RETAIN_*`` from the environment)."""
    max_age, max_bytes = spec.max_age_s, spec.max_bytes
    if spec.name in (AUDIO.name, EVENTS.name):
        keep = retention if retention is not None else RetentionSettings()
        if spec.name == AUDIO.name:
            max_age = keep.retain_audio_h * 3600
            max_bytes = int(keep.retain_audio_gb * 1024**3) or -1
        else:
            max_age = keep.retain_events_days * 86_400
    return StreamConfig(
        name=spec.name,
        description=spec.description,
        subjects=list(spec.subjects),
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        max_age=max_age or None,
        max_bytes=max_bytes,
        duplicate_window=spec.duplicate_window_s,
        num_replicas=stream_replicas(),
        allow_direct=True,  # reads of single messages answered raw, not as base64 JSON
    )


async def ensure_streams(js: JetStreamContext, specs: tuple[StreamSpec, ...] = ALL_STREAMS,
                         retention: RetentionSettings | None = None,
                         update: bool = False) -> None:
    """Create the streams that are missing; with ``update``, also update the others to
    the specs (idempotent). Only the operator (`tidzam_ctl up`) updates: a process's
    NATS role may not, so a compromised one cannot shorten what the bus keeps."""
    for spec in specs:
        config = stream_config(spec, retention)
        try:
            await js.stream_info(spec.name)
        except NotFoundError:
            await js.add_stream(config)
            log.info("created stream %s", spec.name)
            continue
        if not update:
            continue
        try:
            await js.update_stream(config)
        except BadRequestError as exc:
            raise BusError(f"stream {spec.name} cannot be updated to the spec: {exc}") from exc
