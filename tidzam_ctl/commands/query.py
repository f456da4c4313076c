"""``tidzam_ctl query detections``: what the projections say was heard
(``projections.queries``), as a table or ``--json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table

from tidzam_ctl.errors import EXIT_OK, EXIT_USAGE, CliError
from tidzam_ctl.settings import CtlSettings
from tidzam_ctl.stack.stack import Stack
from tidzam_ctl.timeparse import parse_time

out = Console(soft_wrap=True)


def query(settings: CtlSettings, args: argparse.Namespace) -> int:
    try:
        since = parse_time(args.since) if args.since else None
        until = parse_time(args.until) if args.until else None
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE) from exc
    rows = asyncio.run(_detections(Stack(settings), args, since, until))
    if args.json:
        out.print_json(json.dumps([_row_json(r) for r in rows]))
        return EXIT_OK
    table = Table(title=f"{len(rows)} detection(s)")
    for col in ("time (UTC)", "source", "channel", "label", "confidence", "model"):
        table.add_column(col)
    for r in rows:
        table.add_row(r.time.astimezone(UTC).isoformat(timespec="milliseconds"), r.source,
                      str(r.channel), r.label,
                      "-" if r.confidence is None else f"{r.confidence:.2f}",
                      f"{r.model_id}@{r.model_version}")
    out.print(table)
    return EXIT_OK


def _detections_of(stack: Stack, source: str) -> list[Any]:
    """Every detection of one source (for summaries)."""
    args = argparse.Namespace(source=source, channel=None, label=None, limit=1_000_000)
    return asyncio.run(_detections(stack, args, None, None))


def _row_json(row: Any) -> dict[str, Any]:
    return {"time": row.time.astimezone(UTC).isoformat(), "source": row.source,
            "channel": row.channel, "label": row.label, "confidence": row.confidence,
            "model_id": row.model_id, "model_version": row.model_version}


async def _detections(stack: Stack, args: argparse.Namespace, since: datetime | None,
                      until: datetime | None) -> list[Any]:
    import psycopg

    from projections import queries

    try:
        conn = await psycopg.AsyncConnection.connect(stack.database_url, connect_timeout=5)
    except (psycopg.OperationalError, FileNotFoundError) as exc:
        raise CliError(f"cannot reach PostgreSQL ({exc}); is the stack up?") from exc
    async with conn:
        return await queries.detections(conn, source=args.source, channel=args.channel,
                                        label=args.label, since=since, until=until,
                                        limit=args.limit)
