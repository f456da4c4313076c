"""Replay recordings (files or folders) through the bus as ``AudioChunk`` events.

Decoding runs in a worker thread and hands chunk sets to the event loop through
a bounded queue (backpressure: a slow bus slows the decoder, memory stays flat).
Chunks of one channel are stored strictly in order: a set (one chunk per
channel) is acked before the next set is sent.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bus_schemas import AudioChunk, SourceFailed, SourceLoaded, SourceUnloaded
from learning.audio_stream import AudioDecodeError, AudioStream, parse_archive_name
from producers.chunker import Chunker
from producers.publisher import Publisher

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac", ".aif",
                  ".aiff", ".wma", ".webm", ".mka"}

Progress = Callable[[str, float], None]  # (source, audio seconds just published)


@dataclass(frozen=True)
class ReplayItem:
    path: Path
    source: str
    start: datetime | None  # None: continue after the previous file of the same source


@dataclass
class SourceReport:
    source: str
    files: int = 0
    chunks: int = 0
    audio_s: float = 0.0
    channels: int = 0
    errors: list[str] = field(default_factory=list)


def source_name(text: str) -> str:
    """A valid source name (NATS token) from a file stem."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_")[:64]
    return name or "source"


def plan(paths: Iterable[Path], source: str | None = None,
         start: datetime | None = None) -> list[ReplayItem]:
    """What to replay, in order: archive files by their time, others by name.

    Archive files (``<name>-YYYY-MM-DD-HH-MM-SS.ext``) start at their name's time.
    Other files start at ``start`` (or their modification time); several of them
    under one ``--source`` are played one after the other from ``start``.
    """
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*")
                                if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES))
        else:
            files.append(path)
    items: list[ReplayItem] = []
    for path in files:
        archive = parse_archive_name(path)
        if archive is not None:
            name, ts = archive
            items.append(ReplayItem(path, source or source_name(name), ts))
            continue
        name = source or source_name(path.stem)
        earlier = any(it.source == name for it in items)
        if start is not None:
            items.append(ReplayItem(path, name, None if earlier else start))
        else:
            mtime = datetime.fromtimestamp(path.stat().st_mtime, UTC) if path.exists() else None
            items.append(ReplayItem(path, name, None if earlier and source else mtime))
    by_source: dict[str, list[ReplayItem]] = {}
    for item in items:
        by_source.setdefault(item.source, []).append(item)
    ordered: list[ReplayItem] = []
    for group in by_source.values():
        if all(it.start is not None for it in group):  # archives: by their time
            group.sort(key=lambda it: it.start or datetime.min.replace(tzinfo=UTC))
        ordered.extend(group)  # otherwise in the given order, one after the other
    return ordered


_END = object()


class Replayer:
    def __init__(self, publisher: Publisher, *, sample_rate: int = 48_000,
                 chunk_s: float = 1.0, speed: float | None = None,
                 progress: Progress | None = None) -> None:
        self._pub = publisher
        self.sample_rate = sample_rate
        self.chunk_samples = round(chunk_s * sample_rate)
        self.speed = speed  # None = as fast as the bus takes it
        self._progress = progress

    async def replay(self, items: list[ReplayItem]) -> list[SourceReport]:
        reports: dict[str, SourceReport] = {}
        next_start: dict[str, datetime] = {}
        for item in items:
            report = reports.setdefault(item.source, SourceReport(item.source))
            start = item.start or next_start.get(item.source) or datetime.now(UTC)
            seconds = await self._replay_file(item, start, report)
            next_start[item.source] = datetime.fromtimestamp(start.timestamp() + seconds, UTC)
        return list(reports.values())

    async def _replay_file(self, item: ReplayItem, start: datetime,
                           report: SourceReport) -> float:
        loop = asyncio.get_running_loop()
        sets: queue.Queue[object] = queue.Queue(maxsize=8)
        info_box: dict[str, object] = {}
        stop = threading.Event()
        origin_ns = int(start.timestamp() * 1e9)
        thread = threading.Thread(target=self._decode, daemon=True,
                                  args=(item, origin_ns, sets, info_box, stop))
        thread.start()
        published = 0.0
        t0 = time.monotonic()
        try:
            while True:
                got = await loop.run_in_executor(None, sets.get)
                if got is _END:
                    break
                if isinstance(got, AudioDecodeError):
                    raise got
                if isinstance(got, dict):  # the stream opened: announce the source
                    await self._pub.publish_now(SourceLoaded(
                        source=item.source, kind="file", location=str(item.path),
                        channels=tuple(range(int(got["channels"]))),
                        sample_rate=self.sample_rate, at_ns=time.time_ns()))
                    report.channels = int(got["channels"])
                    continue
                assert isinstance(got, list)
                chunks: list[AudioChunk] = got
                await self._pub.publish_all(chunks)
                seconds = chunks[0].n_samples / self.sample_rate
                published += seconds
                report.chunks += len(chunks)
                if self._progress:
                    self._progress(item.source, seconds)
                await self._pace(t0, published)
        except AudioDecodeError as exc:
            report.errors.append(str(exc))
            await self._pub.publish_now(SourceFailed(source=item.source, reason=str(exc),
                                                     at_ns=time.time_ns()))
            return published
        finally:
            stop.set()
            thread.join(timeout=5)
        report.files += 1
        report.audio_s += published
        await self._pub.publish_now(SourceUnloaded(source=item.source, reason="end of file",
                                                   at_ns=time.time_ns()))
        return published

    async def _pace(self, t0: float, published_s: float) -> None:
        if self.speed:
            ahead = t0 + published_s / self.speed - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)

    def _decode(self, item: ReplayItem, origin_ns: int, sets: queue.Queue[object],
                info_box: dict[str, object], stop: threading.Event) -> None:
        """Worker thread: decode, chunk, queue chunk sets; ends with _END."""
        def put(obj: object) -> bool:
            while not stop.is_set():
                try:
                    sets.put(obj, timeout=0.2)
                    return True
                except queue.Full:
                    continue
            return False

        try:
            with AudioStream(item.path, self.sample_rate) as stream:
                channels = stream.info.channels
                put({"channels": channels})
                chunker = Chunker(item.source, range(channels), self.sample_rate, origin_ns,
                                  self.chunk_samples)
                for block in stream.blocks():
                    for chunk_set in chunker.push(block):
                        if not put(chunk_set):
                            return
                put(chunker.finish())
        except AudioDecodeError as exc:
            put(exc)
        put(_END)
