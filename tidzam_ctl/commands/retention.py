"""``tidzam_ctl retention``: remove what is older than the site keeps (``TIDZAM_RETAIN_*``,
``bus.settings.RetentionSettings``, kept by ``up``). ``check`` runs it too.

The streams (AUDIO: hours and gigabytes, EVENTS: days) apply their limits themselves,
set at every ``up``. This removes the rest: the database's time series
(``projections.retention``), the audio of samples nobody reviewed, and archive files.
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.console import Console

from audio import archive
from tidzam_ctl.errors import EXIT_OK
from tidzam_ctl.settings import CtlSettings
from tidzam_ctl.stack.stack import Stack
from tidzam_ctl.timeparse import parse_time

console = Console(stderr=True, soft_wrap=True)


def retention(settings: CtlSettings, args: argparse.Namespace) -> int:
    stack = Stack(settings)
    now = parse_time(args.now) if args.now else datetime.now(UTC)
    for line in apply(stack, now):
        console.print(line)
    return EXIT_OK


def configured(settings: CtlSettings) -> bool:
    return bool(settings.retain_predictions_days or settings.retain_samples_days
                or settings.retain_archive_days)


def apply(stack: Stack, now: datetime) -> list[str]:
    """Remove what the retention settings no longer keep at ``now``: what was done."""
    keep = stack.settings
    said = [f"streams: AUDIO {_age(keep.retain_audio_h / 24)} and at most "
            f"{keep.retain_audio_gb:g} GB, EVENTS {_age(keep.retain_events_days)} (set at `up`)"]
    if keep.retain_predictions_days:
        said.append(asyncio.run(_series(stack, now - timedelta(days=keep.retain_predictions_days))))
    if keep.retain_samples_days:
        said.append(asyncio.run(_samples(stack, now - timedelta(days=keep.retain_samples_days))))
    if keep.retain_archive_days:
        said.append(_archives(keep.archive_dir, now - timedelta(days=keep.retain_archive_days))
                    if keep.archive_dir is not None else
                    "archive files: no archive folder (TIDZAM_ARCHIVE_DIR) to clean")
    return said


async def _series(stack: Stack, cutoff: datetime) -> str:
    import psycopg

    from projections.retention import drop_series_before

    async with await psycopg.AsyncConnection.connect(stack.database_url) as conn:
        dropped = await drop_series_before(conn, cutoff)
    rows = ", ".join(f"{n:,} {t}" for t, n in dropped.rows.items() if n) or "nothing"
    months = f" ({len(dropped.partitions)} monthly partition(s) dropped)" \
        if dropped.partitions else ""
    return f"database before {cutoff:%Y-%m-%d %H:%M} UTC: {rows} removed{months}"


async def _samples(stack: Stack, cutoff: datetime) -> str:
    import psycopg

    from projections.retention import forget_samples

    root = stack.settings.samples_root
    async with await psycopg.AsyncConnection.connect(stack.database_url) as conn:
        paths = await forget_samples(conn, cutoff)
        for path in paths:  # the rows commit only once the files are gone
            audio = (root / path).resolve()
            if audio.is_relative_to(root.resolve()):
                audio.unlink(missing_ok=True)
                audio.with_suffix(".json").unlink(missing_ok=True)
    return (f"samples before {cutoff:%Y-%m-%d %H:%M} UTC never reviewed: {len(paths)} "
            "removed (reviewed ones stay)")


def _archives(root: Path, cutoff: datetime) -> str:
    removed = 0
    for folder in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        for f in archive.scan(folder):
            if f.duration_s is not None and f.end < cutoff:
                f.path.unlink(missing_ok=True)
                removed += 1
    return f"archive files ended before {cutoff:%Y-%m-%d %H:%M} UTC: {removed} removed"


def _age(days: float) -> str:
    return f"{days:g} day(s)" if days else "forever"
