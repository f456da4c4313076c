"""Replay recordings (files or folders) through the bus as ``AudioChunk`` events.

``plan`` decides what plays as which source from when; ``Replayer`` plays each file
as one session of the ``Player``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from audio.archive import parse_archive_name
from audio.suffixes import is_audio
from bus.publisher import Publisher
from producers.chunker import Mixer
from producers.player import Player, Progress, Session

log = logging.getLogger(__name__)



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
                                if p.is_file() and is_audio(p)))
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


class Replayer:
    """Replay planned files (the CLI's ``replay``), one session per file."""

    def __init__(self, publisher: Publisher, *, sample_rate: int = 48_000,
                 chunk_s: float = 1.0, speed: float | None = None,
                 progress: Progress | None = None, mixer: Mixer | None = None) -> None:
        self.player = Player(publisher, sample_rate=sample_rate, chunk_s=chunk_s, speed=speed,
                             progress=progress, mixer=mixer)

    async def replay(self, items: list[ReplayItem]) -> list[SourceReport]:
        reports: dict[str, SourceReport] = {}
        next_start: dict[str, datetime] = {}
        for item in items:
            report = reports.setdefault(item.source, SourceReport(item.source))
            start = item.start or next_start.get(item.source) or datetime.now(UTC)
            session = Session(source=item.source, location=str(item.path),
                              origin_ns=int(start.timestamp() * 1e9))
            result = await self.player.play(session)
            if result.error is not None:
                report.errors.append(result.error)
            else:
                report.files += 1
            report.chunks += result.chunks
            report.audio_s += result.seconds
            report.channels = max(report.channels, len(result.channels))
            next_start[item.source] = datetime.fromtimestamp(
                start.timestamp() + result.seconds, UTC)
        return list(reports.values())
