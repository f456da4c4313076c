"""The source manager: keeps every wanted source playing into the bus.

Desired state comes from the CONTROL stream (``SourceAdded`` / ``SourceRemoved``,
the configuration history, replayed from the start at every launch); actual state
goes back to it (``SourceLoaded`` / ``SourceFailed`` / ``SourceUnloaded``). Each
source runs in its own task: one failing source never disturbs the others.
Permanent sources are reloaded after a failure or an end, with exponential
backoff; a source whose channels would pass ``max_channels`` is refused, and so is
one the site's policy does not allow (``producers.source_policy``: URL schemes and
hosts, local folders), before anything is opened.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from audio import archive
from audio.icecast import IcecastRefused, IcecastTarget
from bus.publisher import Publisher
from bus.runner import Ack, Delivery, Outcome
from bus_schemas import SourceAdded, SourceFailed, SourceLoaded, SourceRemoved, SourceUnloaded
from producers.chunker import Mixer
from producers.jack_source import capture
from producers.player import Player, Session
from producers.source_policy import SourcePolicy, SourceRefused, Unresolved

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backoff:
    first_s: float = 1.0
    max_s: float = 60.0
    healthy_s: float = 60.0  # a session that lasted this long resets the attempts

    def delay(self, attempt: int) -> float:
        return float(min(self.max_s, self.first_s * 2 ** max(0, attempt - 1)))


class SourceManager:
    def __init__(self, publisher: Publisher, *, sample_rate: int = 48_000,
                 chunk_s: float = 1.0, max_channels: int = 64,
                 backoff: Backoff | None = None, open_timeout_s: float = 15.0,
                 icecast: IcecastTarget | None = None, mixer: Mixer | None = None,
                 policy: SourcePolicy) -> None:
        self.player = Player(publisher, sample_rate=sample_rate, chunk_s=chunk_s, speed=1.0,
                             open_timeout_s=open_timeout_s, mixer=mixer)
        self._pub = publisher
        self.policy = policy  # what a source may open: checked before each attempt
        self.icecast = icecast  # where `format: copy` sources go
        self.max_channels = max_channels
        self.backoff = backoff or Backoff()
        self.desired: dict[str, SourceAdded] = {}
        self.caught_up = False
        self._tasks: dict[str, tuple[asyncio.Task[None], asyncio.Event]] = {}
        self._channels: dict[str, int] = {}

    # ---------------------------------------------------------------- events

    async def handle(self, deliveries: Sequence[Delivery]) -> list[Outcome]:
        """Runner handler over ``tidzam.ctl.source.>`` (history first, then live)."""
        for delivery in deliveries:
            event = delivery.event
            if isinstance(event, SourceAdded):
                before = self.desired.get(event.source)
                self.desired[event.source] = event
                unchanged = before is not None and _config(before) == _config(event)
                if self.caught_up and not (unchanged and event.source in self.running):
                    await self._restart(event.source)
            elif isinstance(event, SourceRemoved):
                self.desired.pop(event.source, None)
                if self.caught_up:
                    await self._stop(event.source)
        if not self.caught_up and deliveries and deliveries[-1].msg.metadata.num_pending == 0:
            await self.catch_up()
        return [Ack()] * len(deliveries)

    async def catch_up(self) -> None:
        """The history is read: start every source still wanted."""
        if self.caught_up:
            return
        self.caught_up = True
        log.info("configuration read: %d source(s) wanted", len(self.desired))
        for name in list(self.desired):
            await self._restart(name)

    async def close(self) -> None:
        for name in list(self._tasks):
            await self._stop(name)

    @property
    def running(self) -> list[str]:
        return [n for n, (t, _) in self._tasks.items() if not t.done()]

    # ------------------------------------------------------------- lifecycle

    async def _restart(self, name: str) -> None:
        await self._stop(name)
        stop = asyncio.Event()
        task = asyncio.create_task(self._supervise(self.desired[name], stop),
                                   name=f"source-{name}")
        self._tasks[name] = (task, stop)

    async def _stop(self, name: str) -> None:
        entry = self._tasks.pop(name, None)
        if entry is None:
            return
        task, stop = entry
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _supervise(self, cfg: SourceAdded, stop: asyncio.Event) -> None:
        """Play ``cfg`` until removed; reload permanent sources with backoff."""
        attempt = 0
        try:
            while not stop.is_set():
                began = time.monotonic()
                try:
                    await self.policy.check(cfg)
                    error = await self._attempt(cfg, stop, attempt)
                except SourceRefused as exc:  # never allowed: not retried
                    log.error("source %s refused: %s", cfg.source, exc)
                    await self._failed(cfg, f"refused: {exc}", attempt, will_retry=False)
                    return
                except Unresolved as exc:
                    error = str(exc)
                    await self._failed(cfg, error, attempt, will_retry=cfg.permanent)
                if stop.is_set():
                    break
                if not cfg.permanent or not cfg.location:  # an archive alone ends
                    if error is None:
                        await self._unloaded(cfg.source, "end of stream")
                    return
                attempt = 1 if time.monotonic() - began > self.backoff.healthy_s else attempt + 1
                delay = self.backoff.delay(attempt)
                log.warning("%s: %s; reloading in %.0f s (attempt %d)", cfg.source,
                            error or "stream ended", delay, attempt)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
            await self._unloaded(cfg.source, "removed")
        finally:
            self._channels.pop(cfg.source, None)

    async def _attempt(self, cfg: SourceAdded, stop: asyncio.Event, attempt: int) -> str | None:
        """One try at playing ``cfg``; any failure becomes a ``SourceFailed``, never a
        dead supervisor (the bus storing nothing, an archive folder gone, a bug)."""
        try:
            if cfg.kind == "jack":
                return await capture(cfg, self._pub, stop, attempt=attempt,
                                     sample_rate=self.player.sample_rate,
                                     chunk_s=self.player.chunk_s, mixer=self.player.mixer)
            if cfg.format == "copy":
                return await self._copy_once(cfg, stop, attempt)
            return await self._play_once(cfg, stop, attempt)
        except Exception as exc:
            log.exception("source %s failed", cfg.source)
            reason = f"{type(exc).__name__}: {exc}"
            await self._failed(cfg, reason, attempt, will_retry=cfg.permanent)
            return reason

    async def _failed(self, cfg: SourceAdded, reason: str, attempt: int,
                      will_retry: bool) -> None:
        with contextlib.suppress(Exception):  # the bus storing nothing must not kill this
            await self._pub.publish_now(SourceFailed(
                source=cfg.source, reason=reason, at_ns=time.time_ns(), attempt=attempt,
                will_retry=will_retry))

    async def _play_once(self, cfg: SourceAdded, stop: asyncio.Event, attempt: int) -> str | None:
        """One pass over the source's sessions (archive files, then the live location)."""
        for session in self._sessions(cfg, attempt):
            result = await self.player.play(session, stop, will_retry=cfg.permanent,
                                            announce_end=False, admit=self._admit)
            self._channels.pop(cfg.source, None)
            if result.error is not None or result.stopped:
                return result.error
        return None

    async def _copy_once(self, cfg: SourceAdded, stop: asyncio.Event,
                         attempt: int) -> str | None:
        """``format: copy``: the stream goes to Icecast untouched, not analysed (as the
        original's copy mode, for streams with more channels than a player decodes)."""
        error = await self._copy(cfg, stop, attempt)
        if error is not None:
            await self._failed(cfg, error, attempt, will_retry=cfg.permanent)
        return error

    async def _copy(self, cfg: SourceAdded, stop: asyncio.Event, attempt: int) -> str | None:
        ffmpeg = shutil.which("ffmpeg")
        if self.icecast is None:
            return "format copy needs Icecast: start the stack with `tidzam_ctl up --icecast`"
        if ffmpeg is None:
            return "format copy needs ffmpeg (Debian: apt-get install ffmpeg)"
        suffix = Path(cfg.location.split("?", 1)[0]).suffix or ".ogg"
        mount = f"/{cfg.source}{suffix}"
        proc = await asyncio.create_subprocess_exec(
            ffmpeg, "-hide_banner", "-loglevel", "error", "-rw_timeout", "15000000",
            "-i", cfg.location, "-map", "0:a", "-codec", "copy", "-f", "ogg", "pipe:1",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        assert proc.stdout is not None and proc.stderr is not None
        try:
            first = await proc.stdout.read(16_384)  # the stream answers before Icecast
            if not first:
                err = (await proc.stderr.read()).decode(errors="replace").strip()
                return f"cannot copy {cfg.location}: {err or 'no data'}"
            writer = await self.icecast.open(mount, cfg.source)
            await self._pub.publish_now(SourceLoaded(
                source=cfg.source, kind=cfg.kind, location=cfg.location, channels=(),
                sample_rate=0, permanent=cfg.permanent, at_ns=time.time_ns(),
                attempt=attempt))
            data = first
            while data and not stop.is_set():
                writer.write(data)
                await writer.drain()
                data = await proc.stdout.read(16_384)
            writer.close()
            return None
        except (OSError, IcecastRefused, TimeoutError) as exc:
            return f"copy of {cfg.location} to Icecast {mount} failed: {exc}"
        finally:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    def _admit(self, session: Session, channels: tuple[int, ...]) -> str | None:
        others = sum(n for name, n in self._channels.items() if name != session.source)
        if others + len(channels) > self.max_channels:
            return (f"channel limit: {len(channels)} more channel(s) would make "
                    f"{others + len(channels)} > {self.max_channels} (TIDZAM_MAX_CHANNELS)")
        self._channels[session.source] = len(channels)
        return None

    async def _unloaded(self, source: str, reason: str) -> None:
        await self._pub.publish_now(SourceUnloaded(source=source, reason=reason,
                                                   at_ns=time.time_ns()))

    def _sessions(self, cfg: SourceAdded, attempt: int) -> Iterator[Session]:
        now_ns = time.time_ns()
        base = dict(source=cfg.source, channels=cfg.channels, permanent=cfg.permanent,
                    attempt=attempt)
        if cfg.database and cfg.date_ns is not None and cfg.date_ns < now_ns and attempt == 0:
            yield from self._archive_sessions(cfg, base)
        if cfg.location:
            kind = "file" if cfg.kind == "archive" and not _is_url(cfg.location) else cfg.kind
            yield Session(location=cfg.location, origin_ns=time.time_ns(), kind=kind,
                          **base)  # type: ignore[arg-type]

    @staticmethod
    def _archive_sessions(cfg: SourceAdded, base: dict[str, object]) -> Iterator[Session]:
        """The archive from ``date`` on: the file holding it (sought), then the next ones."""
        assert cfg.date_ns is not None
        at = datetime.fromtimestamp(cfg.date_ns / 1e9, UTC)
        # the folder's files of this source, else all of its files (a database may be
        # played under another name, as the original's `database` field allowed)
        files = archive.scan(Path(cfg.database), cfg.source) or archive.scan(Path(cfg.database))
        found = archive.locate(files, at)
        if found is None:
            return
        first, offset = found
        for i, f in enumerate(files[first:]):
            if f.duration_s is None:
                continue  # unreadable: announced by archive-ls, skipped here
            seek = offset if i == 0 else 0.0
            origin = int((f.start.timestamp() + seek) * 1e9)
            yield Session(location=str(f.path), origin_ns=origin, kind="archive", seek_s=seek,
                          **base)  # type: ignore[arg-type]


def _config(event: SourceAdded) -> dict[str, object]:
    """What a source plays, whenever it was asked for."""
    return event.model_dump(exclude={"at_ns"})


def _is_url(location: str) -> bool:
    return "://" in location
