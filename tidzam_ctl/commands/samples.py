"""``tidzam_ctl samples info | ls | label | export``: the extracted samples.

The extractor writes samples into the samples folder (``TIDZAM_SAMPLES_DIR``,
default ``$TIDZAM_HOME/samples``) and publishes ``SampleExtracted``; a review is a
``SampleLabelled`` event on CONTROL. Both are projected into the ``samples`` table,
which these commands read.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import getpass
import io
import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bus_schemas import SampleLabelled
from learning.datasets.samples import DISCARDED
from tidzam_ctl.errors import EXIT_OK, EXIT_USAGE, CliError
from tidzam_ctl.settings import CtlSettings
from tidzam_ctl.stack.stack import Stack

console = Console(stderr=True)
out = Console(soft_wrap=True)

_COLUMNS = ("sample_id", "time", "end_time", "window_start", "window_end", "source", "channel",
            "label", "confidence", "reviewed_label", "reviewed_by", "reason", "destination",
            "path", "sample_rate", "model_id", "model_version")


def add_samples_parser(sub: Any) -> None:
    p = sub.add_parser("samples", help="extracted samples: counts, list, label, export",
                       description="Samples the extractor saved (see `tidzam_ctl rules`), "
                       "their reviews and their export for review elsewhere.")
    ssub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    i = ssub.add_parser("info", help="per destination and class: samples, unchecked, reviewed "
                        "(the original's database_info)")
    i.add_argument("--json", action="store_true")
    ls = ssub.add_parser("ls", help="the samples, newest first")
    ls.add_argument("--label", help="proposed or reviewed label")
    ls.add_argument("--unchecked", action="store_true", help="only samples nobody reviewed")
    ls.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    ls.add_argument("--json", action="store_true")
    lab = ssub.add_parser("label", help="review samples: give their true class",
                          description="Publish a SampleLabelled event per sample: the class "
                          "a reviewer gives it (the model's proposal to accept it, another "
                          "to relabel it, or --discard). The latest review of a sample wins.")
    lab.add_argument("sample_ids", nargs="+", metavar="SAMPLE_ID")
    what = lab.add_mutually_exclusive_group(required=True)
    what.add_argument("--as", dest="label", metavar="LABEL", help="the sample's class")
    what.add_argument("--accept", action="store_true", help="the model's proposed label")
    what.add_argument("--discard", action="store_true", help="not a usable sample")
    lab.add_argument("--by", default=getpass.getuser(), help="reviewer (default: you)")
    ex = ssub.add_parser("export", help="for review in other tools: csv, Raven, Audacity",
                         description="csv: one row per sample. raven: a Raven Pro selection "
                         "table (one selection per sample: its window inside its file, with "
                         "Begin Path). audacity: one label file <sample_id>.txt per sample "
                         "(the window inside the sample file), into --out.")
    ex.add_argument("--format", choices=("csv", "raven", "audacity"), default="csv")
    ex.add_argument("--out", type=Path, help="file (csv, raven) or folder (audacity); "
                    "default: standard output")
    ex.add_argument("--label", help="only this proposed or reviewed label")
    ex.add_argument("--unchecked", action="store_true", help="only samples nobody reviewed")


def samples(settings: CtlSettings, args: argparse.Namespace) -> int:
    stack = Stack(settings)
    if args.action == "info":
        rows = asyncio.run(_query(stack, "SELECT destination, label, samples, unchecked, reviewed"
                                  " FROM samples_info ORDER BY destination, label"))
        if args.json:
            out.print_json(json.dumps({dest: {label: {"samples": n, "unchecked": u,
                                                      "reviewed": r}
                                              for d, label, n, u, r in rows if d == dest}
                                       for dest in sorted({r[0] for r in rows})}))
            return EXIT_OK
        table = Table(title=f"samples in {settings.samples_root}")
        for col in ("destination", "class", "samples", "unchecked", "reviewed"):
            table.add_column(col, justify="right" if col in ("samples", "unchecked",
                                                              "reviewed") else "left")
        for row in rows:
            table.add_row(*map(str, row))
        out.print(table if rows else "no samples yet (tidzam_ctl rules set --help)")
        return EXIT_OK
    if args.action == "ls":
        found = asyncio.run(_select(stack, args.label, args.unchecked, args.limit))
        if args.json:
            out.print_json(json.dumps([_jsonable(r) for r in found]))
            return EXIT_OK
        table = Table(title=f"{len(found)} sample(s)")
        for col in ("sample_id", "time (UTC)", "label", "confidence", "reviewed", "reason"):
            table.add_column(col)
        for r in found:
            table.add_row(r["sample_id"], r["window_start"].strftime("%Y-%m-%d %H:%M:%S"),
                          r["label"], f"{r['confidence']:.2f}", r["reviewed_label"] or "-",
                          r["reason"])
        out.print(table)
        return EXIT_OK
    if args.action == "label":
        return _label(stack, args)
    return _export(stack, settings, args)


def _label(stack: Stack, args: argparse.Namespace) -> int:
    from learning.datasets.samples import CLASS_NAME

    if args.label is not None and not CLASS_NAME.fullmatch(args.label):
        raise CliError(f"{args.label!r} is not a class name (letters, digits, '_', "
                       "'-' between levels: birds-american_robin)", EXIT_USAGE)
    found = {r["sample_id"]: r for r in asyncio.run(_by_ids(stack, list(args.sample_ids)))}
    missing = [s for s in args.sample_ids if s not in found]
    if missing:
        raise CliError(f"no such sample: {', '.join(missing)} (tidzam_ctl samples ls)",
                       EXIT_USAGE)
    events = []
    for i, sid in enumerate(args.sample_ids):
        row = found[sid]
        label = (row["label"] if args.accept else DISCARDED if args.discard else args.label)
        events.append(SampleLabelled(sample_id=sid, label=label,
                                     previous_label=row["reviewed_label"] or row["label"],
                                     by=args.by, at_ns=time.time_ns() + i))
    asyncio.run(_publish(stack, events))
    console.print(f"{len(events)} sample(s) labelled")
    return EXIT_OK


def _export(stack: Stack, settings: CtlSettings, args: argparse.Namespace) -> int:
    rows = asyncio.run(_select(stack, args.label, args.unchecked, None))
    root = settings.samples_root
    if args.format == "audacity":
        folder = args.out or Path("labels")
        folder.mkdir(parents=True, exist_ok=True)
        for r in rows:
            a, b = _window_in_file(r)
            (folder / f"{r['sample_id']}.txt").write_text(
                f"{a:.6f}\t{b:.6f}\t{r['reviewed_label'] or r['label']}\n")
        console.print(f"{len(rows)} Audacity label file(s) in {folder}")
        return EXIT_OK
    buffer = io.StringIO()
    if args.format == "csv":
        writer = csv.writer(buffer)
        writer.writerow(_COLUMNS)
        for r in rows:
            writer.writerow([_csv_value(r[c]) for c in _COLUMNS])
    else:  # Raven Pro selection table: tab-separated, one selection per sample
        buffer.write("\t".join(("Selection", "View", "Channel", "Begin Time (s)",
                                "End Time (s)", "Low Freq (Hz)", "High Freq (Hz)",
                                "Begin Path", "File Offset (s)", "Annotation", "Confidence",
                                "Sample ID")) + "\n")
        offset = 0.0
        for n, r in enumerate(rows, start=1):
            a, b = _window_in_file(r)
            length = (r["end_time"] - r["time"]).total_seconds()
            buffer.write("\t".join(map(str, (
                n, "Spectrogram 1", 1, f"{offset + a:.6f}", f"{offset + b:.6f}", 0,
                (r["sample_rate"] or 48_000) // 2, (root / r["path"]).resolve(), f"{a:.6f}",
                r["reviewed_label"] or r["label"], f"{r['confidence']:.4f}",
                r["sample_id"]))) + "\n")
            offset += length
    if args.out is None:
        print(buffer.getvalue(), end="")
    else:
        args.out.write_text(buffer.getvalue())
        console.print(f"{len(rows)} sample(s) written to {args.out}")
    return EXIT_OK


def _window_in_file(row: dict[str, Any]) -> tuple[float, float]:
    """The scored window's start and end inside the sample's file, seconds."""
    return ((row["window_start"] - row["time"]).total_seconds(),
            (row["window_end"] - row["time"]).total_seconds())


def _csv_value(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: _csv_value(v) for k, v in row.items() if k in _COLUMNS}


async def _query(stack: Stack, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    import psycopg

    async with await psycopg.AsyncConnection.connect(stack.database_url) as conn:
        cur = await conn.execute(query.encode(), params)
        return list(await cur.fetchall())


async def _select(stack: Stack, label: str | None, unchecked: bool, limit: int | None
                  ) -> list[dict[str, Any]]:
    import psycopg
    from psycopg.rows import dict_row

    where = ["path IS NOT NULL"]
    params: list[Any] = []
    if label:
        where.append("(label = %s OR reviewed_label = %s)")
        params += [label, label]
    if unchecked:
        where.append("reviewed_label IS NULL")
    query = (f"SELECT {', '.join(_COLUMNS)} FROM samples WHERE {' AND '.join(where)}"
             " ORDER BY window_start DESC")
    if limit is not None:
        if limit < 1:
            raise CliError("--limit must be at least 1", EXIT_USAGE)
        query += f" LIMIT {int(limit)}"
    async with await psycopg.AsyncConnection.connect(stack.database_url,
                                                     row_factory=dict_row) as conn:
        cur = await conn.execute(query.encode(), params)
        return list(await cur.fetchall())


async def _by_ids(stack: Stack, ids: list[str]) -> list[dict[str, Any]]:
    import psycopg
    from psycopg.rows import dict_row

    async with await psycopg.AsyncConnection.connect(stack.database_url,
                                                     row_factory=dict_row) as conn:
        cur = await conn.execute("SELECT sample_id, label, reviewed_label FROM samples"
                                 " WHERE sample_id = ANY(%s) AND path IS NOT NULL", (ids,))
        return list(await cur.fetchall())


async def reviewed_labels(stack: Stack) -> dict[str, str]:
    """Every reviewed sample's class (sample id → label), discarded ones included."""
    rows = await _query(stack, "SELECT sample_id, reviewed_label FROM samples"
                        " WHERE reviewed_label IS NOT NULL")
    return {str(sid): str(label) for sid, label in rows}


async def _publish(stack: Stack, events: list[Any]) -> None:
    from bus.connect import connect, ensure_streams
    from bus.publisher import Publisher

    nc = await connect(stack.nats_url, "tidzam_ctl-samples")
    try:
        await ensure_streams(nc.jetstream())
        await Publisher(nc.jetstream()).publish_all(events)
    finally:
        await nc.drain()
