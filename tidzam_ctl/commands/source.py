"""``tidzam_ctl source add | rm | ls | archive-ls`` and ``up --sources``.

Adding or removing a source publishes the wish (``SourceAdded``/``SourceRemoved``)
on the CONTROL stream; the source manager acts on it and reports back with
``SourceLoaded``/``SourceFailed``/``SourceUnloaded``, projected into ``sources``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from datetime import UTC
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from bus_schemas import Event, SourceAdded, SourceRemoved
from producers.source_policy import SourcePolicy, SourceRefused, Unresolved
from tidzam_ctl.errors import EXIT_OK, EXIT_USAGE, CliError
from tidzam_ctl.settings import CtlSettings
from tidzam_ctl.stack.stack import Stack
from tidzam_ctl.timeparse import parse_time

console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)


def source_added(name: str, *, url: str | None = None, file: Path | None = None,
                 jack: str | None = None,
                 channels: str | None = None, permanent: bool = False,
                 database: Path | None = None, date: str | None = None,
                 fmt: str = "ogg") -> SourceAdded:
    """The ``SourceAdded`` event for the command line's options (validated)."""
    if url is None and file is None and database is None and jack is None:
        raise CliError("give --url, --file, --jack or --database", EXIT_USAGE)
    if file is not None and not file.exists():
        raise CliError(f"no such file: {file}", EXIT_USAGE)
    if database is not None and not database.is_dir():
        raise CliError(f"no such archive folder: {database}", EXIT_USAGE)
    try:
        chosen = tuple(int(c) for c in re.split(r"[,\s]+", channels.strip())) if channels else ()
        date_ns = None
        if date and date != "now":
            date_ns = int(parse_time(date).timestamp() * 1e9)
    except ValueError as exc:
        raise CliError(f"bad --channels or --date: {exc}", EXIT_USAGE) from exc
    kind = "archive" if database is not None else ("url" if url else "file")
    location = url or (str(file.resolve()) if file else "")
    if jack is not None:
        try:
            re.compile(jack)
        except re.error as exc:
            raise CliError(f"bad --jack pattern: {exc}", EXIT_USAGE) from exc
        kind, location = "jack", jack
    try:
        return SourceAdded(source=name, kind=kind, location=location, channels=chosen,
                           permanent=permanent, database=str(database.resolve()) if database
                           else "", date_ns=date_ns, format=fmt,
                           at_ns=time.time_ns())
    except ValidationError as exc:
        raise CliError(exc.errors()[0]["msg"], EXIT_USAGE) from exc


def sources_file(path: Path) -> list[SourceAdded]:
    """The original's JSON sources file, as permanent sources."""
    try:
        data = json.loads(path.read_text())
        entries = data["sources"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CliError(f"{path}: not a sources file ({exc})", EXIT_USAGE) from exc
    events = []
    for entry in entries:
        database = entry.get("path_database")
        url = entry.get("url")
        if database and not Path(database).is_dir():
            database = None  # the folder is elsewhere: play live only
        channels = entry.get("channels")
        events.append(source_added(
            entry["name"], url=url if url and "://" in url else None,
            file=Path(url) if url and "://" not in url else None,
            channels=",".join(map(str, channels)) if isinstance(channels, list) else channels,
            permanent=entry.get("is_permanent", True), database=Path(database) if database
            else None, date=entry.get("date"), fmt=entry.get("format", "ogg")))
    return events


async def publish(stack: Stack, events: list[Event]) -> None:
    from bus.connect import connect, ensure_streams
    from bus.publisher import Publisher

    nc = await connect(stack.nats_url, "tidzam_ctl-source")
    try:
        await ensure_streams(nc.jetstream())
        await Publisher(nc.jetstream()).publish_all(events)
    finally:
        await nc.drain()


def source(settings: CtlSettings, args: argparse.Namespace) -> int:
    stack = Stack(settings)
    if args.action == "add":
        event = source_added(args.name, url=args.url, file=args.file, jack=args.jack,
                             channels=args.channels,
                             permanent=args.permanent, database=args.database,
                             date=args.date, fmt=args.format)
        policy = SourcePolicy.from_settings(stack.settings, stack.home,
                                            stack.settings.archive_dir)
        try:  # the source manager checks too: this says it at once
            asyncio.run(policy.check(event))
        except SourceRefused as exc:
            raise CliError(f"source {args.name} refused: {exc}", EXIT_USAGE) from exc
        except Unresolved as exc:
            console.print(f"[yellow]warning:[/] {exc}; the source manager will keep trying")
        asyncio.run(publish(stack, [event]))
        console.print(f"source {args.name} requested; `tidzam_ctl source ls` shows its state")
        return EXIT_OK
    if args.action == "rm":
        asyncio.run(publish(stack, [SourceRemoved(source=args.name, at_ns=time.time_ns())]))
        console.print(f"source {args.name} removed")
        return EXIT_OK
    if args.action == "ls":
        return _ls(stack, args)
    return _archive_ls(stack, args)


def _ls(stack: Stack, args: argparse.Namespace) -> int:
    rows, rates = asyncio.run(_sources_and_rates(stack))
    rows = [r for r in rows if args.all or r.wanted]
    if args.json:
        out.print_json(json.dumps([_source_json(r, rates.get(r.name, 0.0)) for r in rows]))
        return EXIT_OK
    table = Table(title=f"{len(rows)} source(s)")
    for col in ("name", "kind", "state", "channels", "since (UTC)", "reconnects", "chunks/s",
                "last error"):
        table.add_column(col)
    for r in rows:
        table.add_row(r.name, r.kind or "-", r.state, _channels(r.channels),
                      r.since.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"), str(r.attempts),
                      f"{rates.get(r.name, 0.0):.1f}", (r.last_error or "")[:60])
    out.print(table)
    return EXIT_OK


def _channels(channels: list[int] | None) -> str:
    return ",".join(map(str, channels)) if channels else "-"


def _source_json(row: Any, rate: float) -> dict[str, Any]:
    return {"name": row.name, "kind": row.kind, "location": row.location,
            "state": row.state, "channels": row.channels, "permanent": row.permanent,
            "since": row.since.astimezone(UTC).isoformat(), "last_error": row.last_error,
            "reconnects": row.attempts, "chunks_per_s": rate, "wanted": row.wanted}


async def _sources_and_rates(stack: Stack) -> tuple[list[Any], dict[str, float]]:
    import psycopg

    from bus.connect import connect
    from projections import queries

    async with await psycopg.AsyncConnection.connect(stack.database_url) as conn:
        rows = await queries.sources(conn)
    nc = await connect(stack.nats_url, "tidzam_ctl-ls")
    try:
        before = await _chunk_counts(nc)
        t0 = time.monotonic()
        await asyncio.sleep(1.0)
        after = await _chunk_counts(nc)
        elapsed = time.monotonic() - t0
    finally:
        await nc.drain()
    rates = {name: (after.get(name, 0) - before.get(name, 0)) / elapsed for name in after}
    return rows, rates


async def _chunk_counts(nc: Any) -> dict[str, int]:
    """Messages stored per source in the AUDIO stream (summed over channels)."""
    info = await nc.jetstream().stream_info("AUDIO", subjects_filter="tidzam.audio.>")
    counts: dict[str, int] = {}
    for subject, n in (info.state.subjects or {}).items():
        name = subject.split(".")[2]
        counts[name] = counts.get(name, 0) + int(n)
    return counts


def _archive_ls(stack: Stack, args: argparse.Namespace) -> int:
    from audio import archive

    database = args.database
    if database is None:
        rows, _ = asyncio.run(_sources_and_rates(stack))
        found = [r for r in rows if r.name == args.name and r.database]
        if not found:
            raise CliError(f"source {args.name} has no archive folder; give --database",
                           EXIT_USAGE)
        database = Path(found[0].database)
    try:
        files = archive.scan(database, args.name)
    except FileNotFoundError as exc:
        raise CliError(str(exc), EXIT_USAGE) from exc
    spans = archive.ranges(files)
    if args.json:  # the original's `database` answer, per source
        out.print_json(json.dumps({args.name: {
            "nb_channels": archive.channel_count(files),
            "database": [[a.isoformat(), b.isoformat()] for a, b in spans]}}))
        return EXIT_OK
    for a, b in spans:
        out.print(f"{a.isoformat()}  →  {b.isoformat()}  ({(b - a).total_seconds():.0f} s)")
    unreadable = [f.path.name for f in files if f.duration_s is None]
    if unreadable:
        console.print(f"[yellow]unreadable:[/yellow] {', '.join(unreadable)}")
    return EXIT_OK
