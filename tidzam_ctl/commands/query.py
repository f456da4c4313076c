"""``tidzam_ctl query detections|events``: what the projections say was heard
(``projections.queries``), as a table, CSV or JSON.

The table goes to stdout with a summary line under it ("1,000 of 12,345 detections");
with CSV or JSON only the records go to stdout, the summary to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rich.console import Console

from projections.roles import READER
from tidzam_ctl.commands import query_format as fmt
from tidzam_ctl.errors import EXIT_OK, EXIT_USAGE, CliError
from tidzam_ctl.settings import CtlSettings
from tidzam_ctl.stack.stack import Stack
from tidzam_ctl.timeparse import parse_time

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

# Counting stops here: a count of every row of billions takes minutes.
COUNT_AT_MOST = 1_000_000


@dataclass(frozen=True)
class Found:
    rows: list[Any]  # DetectionRow or EventRow
    total: int  # rows matching, counted up to COUNT_AT_MOST


def query(settings: CtlSettings, args: argparse.Namespace) -> int:
    try:
        since = parse_time(args.since) if args.since else None
        until = parse_time(args.until) if args.until else None
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE) from exc
    if args.limit < 1:
        raise CliError(f"--limit must be at least 1, got {args.limit}", EXIT_USAGE)
    if getattr(args, "min_windows", None) is not None and args.min_windows < 1:
        raise CliError(f"--min-windows must be at least 1, got {args.min_windows}", EXIT_USAGE)
    found = asyncio.run(_find(Stack(settings), args, since, until))
    show(args.what, found, args.format)
    return EXIT_OK


def show(kind: str, found: Found, form: fmt.Format) -> None:
    """Print ``found`` as ``form``: stdout for the rows, the summary where it does not mix."""
    line = fmt.summary(kind, len(found.rows), found.total, found.total >= COUNT_AT_MOST)
    if form != "table":
        fmt.write_records(form, kind, found.rows, sys.stdout)
        err.print(line, markup=False, highlight=False)
        return
    if found.rows:
        out.print(fmt.table(kind, found.rows, out))
    models = fmt.models_line(found.rows)
    out.print(line + (f"; {models}" if models else ""), markup=False, highlight=False)


async def _find(stack: Stack, args: argparse.Namespace, since: datetime | None,
                until: datetime | None) -> Found:
    import psycopg

    from projections import queries

    try:
        conn = await psycopg.AsyncConnection.connect(stack.database_url_as(READER),
                                                     connect_timeout=5)  # it only reads
    except (psycopg.OperationalError, FileNotFoundError) as exc:
        raise CliError(f"cannot reach PostgreSQL ({exc}); is the stack up?") from exc
    filters: dict[str, Any] = {"source": args.source, "channel": args.channel,
                               "label": args.label, "since": since, "until": until}
    async with conn:
        if args.what == "events":
            filters["min_windows"] = getattr(args, "min_windows", None)
            rows: list[Any] = await queries.detection_events(conn, limit=args.limit, **filters)
            total = await queries.count_detection_events(conn, at_most=COUNT_AT_MOST,
                                                         **filters)
        else:
            rows = await queries.detections(conn, limit=args.limit, **filters)
            total = await queries.count_detections(conn, at_most=COUNT_AT_MOST, **filters)
    return Found(rows, max(total, len(rows)))
