"""The source manager process: ``python -m producers.source_service``.

At each start it re-reads the whole source configuration history from CONTROL
(a fresh durable from the first message), so the wanted sources are exactly
those added and not removed, whatever happened while it was down. Run one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from nats.js.errors import NotFoundError
from pydantic import Field, SecretStr

from audio.icecast import IcecastTarget
from bus.connect import connect, ensure_streams
from bus.process import run_process
from bus.publisher import Publisher
from bus.runner import ConsumerRunner
from bus_schemas.streams import SOURCE_MANAGER
from producers.gain import GainStage
from producers.source_manager import SourceManager
from producers.source_policy import SourcePolicy, SourcePolicySettings

log = logging.getLogger(__name__)

SPEC = SOURCE_MANAGER


class SourcesSettings(SourcePolicySettings):
    nats_url: SecretStr
    home: Path | None = None
    archive_dir: Path | None = None
    sample_rate: int = 48_000
    chunk_s: float = Field(1.0, gt=0.05, le=10.0)
    max_channels: int = Field(64, ge=1, le=4096)
    open_timeout_s: float = Field(15.0, gt=0.0, le=600.0)
    icecast_host: str = "127.0.0.1"
    icecast_port: int | None = None  # set (with the password) when Icecast runs
    icecast_source_password: SecretStr | None = None


async def run(settings: SourcesSettings, stop: asyncio.Event) -> None:
    nc = await connect(settings.nats_url.get_secret_value(), "tidzam-sources")
    js = nc.jetstream()
    await ensure_streams(js)
    with contextlib.suppress(NotFoundError):  # read the history from its start again
        await js.delete_consumer(SPEC.stream, SPEC.durable)
    gain = GainStage()
    await gain.follow(nc)
    manager = SourceManager(Publisher(js), sample_rate=settings.sample_rate,
                            chunk_s=settings.chunk_s, max_channels=settings.max_channels,
                            open_timeout_s=settings.open_timeout_s,
                            icecast=_icecast(settings), mixer=gain.state,
                            policy=SourcePolicy.from_settings(settings, settings.home,
                                                              settings.archive_dir))
    runner = ConsumerRunner(nc, SPEC, manager.handle)
    await runner.ensure_consumer()
    info = await js.consumer_info(SPEC.stream, SPEC.durable)
    if not info.num_pending:
        await manager.catch_up()  # no source event was ever published
    log.info("source manager running")
    await runner.run(stop)
    await manager.close()
    await gain.close()
    await nc.drain()
    log.info("source manager drained: exiting")


def _icecast(settings: SourcesSettings) -> IcecastTarget | None:
    if settings.icecast_port is None or settings.icecast_source_password is None:
        return None
    return IcecastTarget(settings.icecast_host, settings.icecast_port,
                         settings.icecast_source_password.get_secret_value())


def main() -> None:
    settings = SourcesSettings()
    run_process(lambda stop: run(settings, stop))


if __name__ == "__main__":
    main()
