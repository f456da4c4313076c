"""``tidzam_ctl samples info | ls | label | review | export``: the extracted samples.

The extractor writes samples into the samples folder (``TIDZAM_SAMPLES_DIR``,
default ``$TIDZAM_HOME/samples``) and publishes ``SampleExtracted``; a review is a
``SampleLabelled`` event on CONTROL. Both are projected into the ``samples`` table,
which these commands read. ``review`` opens the editor's ``ReviewApp``
(``tidzam_ctl/editor/review.py``) on rows read here, publishing with ``BusPublisher``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import getpass
import io
import json
import logging
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from bus_schemas import SampleLabelled
from bus_schemas.control import CLASS_NAME, DISCARDED
from bus_schemas.errors import TidzamError
from tidzam_ctl.editor.errors import EditorError
from tidzam_ctl.errors import EXIT_OK, EXIT_USAGE, CliError
from tidzam_ctl.settings import CtlSettings
from tidzam_ctl.stack.stack import Stack

if TYPE_CHECKING:
    from tidzam_ctl.editor.review import ReviewRow

console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

_COLUMNS = ("sample_id", "time", "end_time", "window_start", "window_end", "source", "channel",
            "label", "confidence", "reviewed_label", "reviewed_by", "reason", "destination",
            "path", "sample_rate", "model_id", "model_version")


def add_samples_parser(sub: Any) -> None:
    p = sub.add_parser("samples", help="extracted samples: counts, list, label, review, export",
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
    rv = ssub.add_parser("review", help="review samples in a text UI: play, spectrogram, "
                         "accept, relabel, discard, skip, undo",
                         description="The samples nobody reviewed yet (--all: every one) in "
                         "a keyboard-driven text UI: classes (proposed labels, then ✓ reviewed "
                         "ones) | samples | the scored window's spectrogram and the scores. "
                         "p plays the sample with its context, a accepts the proposed label, "
                         "r relabels, d discards, n or space skips, u takes this session's "
                         "last review back, / filters, q quits. Each review is a "
                         "SampleLabelled event, published at once.")
    rv.add_argument("--all", action="store_true", help="every sample, reviewed ones too")
    rv.add_argument("--label", help="start at this class")
    rv.add_argument("--by", default=getpass.getuser(), help="reviewer (default: you)")
    rv.add_argument("--limit", type=int, default=10_000,
                    help="at most this many samples, oldest first (default 10000)")
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
    if args.action == "review":
        return _review(stack, settings, args)
    return _export(stack, settings, args)


def _label(stack: Stack, args: argparse.Namespace) -> int:
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


def _review(stack: Stack, settings: CtlSettings, args: argparse.Namespace) -> int:
    from tidzam_ctl.editor.player import Player, find_player
    from tidzam_ctl.editor.review import ReviewApp, ReviewBrowser

    if args.limit < 1:
        raise CliError("--limit must be at least 1", EXIT_USAGE)
    if not args.by.strip():
        raise CliError("--by must name the reviewer", EXIT_USAGE)
    publisher = BusPublisher(stack.nats_url)
    try:
        browser = ReviewBrowser(lambda: _review_rows(stack, args.all, args.limit), publisher,
                                settings.samples_root, args.by.strip())
        if not browser.rows:
            console.print("no sample to review" + ("" if args.all else " (--all: the "
                                                   "reviewed ones too)"))
            return EXIT_OK
        if len(browser.rows) == args.limit:
            browser.title += f" (the oldest {args.limit}: --limit)"
        start = browser.start_group(args.label) if args.label else None
        publisher.open()
        ReviewApp(browser, Player(find_player()), start).run()
    except EditorError as exc:
        raise CliError(str(exc)) from None
    finally:
        publisher.close()
    console.print(f"{browser.published} review event(s) published as {browser.by}")
    return EXIT_OK


def _review_rows(stack: Stack, everything: bool, limit: int) -> list[ReviewRow]:
    """The samples to review (unchecked only unless ``everything``), oldest first."""
    import psycopg
    from psycopg.rows import dict_row

    from tidzam_ctl.editor.review import COLUMNS, ReviewRow

    where = "path IS NOT NULL" + ("" if everything else " AND reviewed_label IS NULL")
    query = (f"SELECT {', '.join(COLUMNS)} FROM samples WHERE {where}"
             " ORDER BY window_start, sample_id LIMIT %s")
    try:
        with psycopg.connect(stack.database_url, row_factory=dict_row,
                             connect_timeout=10) as conn:
            rows = conn.execute(query.encode(), (limit,)).fetchall()
    except psycopg.OperationalError as exc:
        raise CliError(f"cannot read the samples from PostgreSQL ({exc}): is the stack up? "
                       "(tidzam_ctl status)") from None
    return [ReviewRow.from_sql(r) for r in rows]


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


_NATS_LOG = logging.getLogger("nats.aio.client")


def _quiet(record: logging.LogRecord) -> bool:
    """NATS's own error log is dropped while a review is open: it would be written over
    the screen, and the status line says what failed."""
    return False


class BusPublisher:
    """``Publish`` on NATS: one connection for the session, in a thread of its own.

    Each call waits ``timeout_s`` at most (the UI waits with it): a review not stored
    by then, or not sent because the connection is down, raises ``EditorError``."""

    def __init__(self, url: str, timeout_s: float = 3.0) -> None:
        self.url, self.timeout_s = url, timeout_s
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="review-publisher")
        self._thread.start()
        self._nc: Any = None
        self._publisher: Any = None
        _NATS_LOG.addFilter(_quiet)

    def open(self) -> None:
        """Connect now: ``EditorError`` if NATS does not answer."""
        self._wait(self._connect(), "cannot publish reviews")

    def __call__(self, event: SampleLabelled) -> None:
        self._wait(self._publish(event), f"the review of {event.sample_id} is not recorded")

    def close(self) -> None:
        with contextlib.suppress(EditorError):  # nothing is left to send: each review
            self._wait(self._shutdown(), "closing")  # was waited for
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(self.timeout_s)
        if not self._thread.is_alive():
            self._loop.close()
        _NATS_LOG.removeFilter(_quiet)

    async def _connect(self) -> Any:
        from bus.connect import connect, ensure_streams
        from bus.publisher import Publisher

        if self._publisher is None:
            nc = await connect(self.url, "tidzam_ctl-review")
            try:
                await ensure_streams(nc.jetstream())
            except BaseException:
                await nc.close()
                raise
            self._nc, self._publisher = nc, Publisher(nc.jetstream(), retries=1, timeout_s=1.0)
        return self._publisher

    async def _shutdown(self) -> None:
        """Close the connection; end what a timeout left running (a connect, a publish)."""
        if self._nc is not None:
            await self._nc.drain()
        left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in left:
            task.cancel()
        await asyncio.gather(*left, return_exceptions=True)

    async def _publish(self, event: SampleLabelled) -> None:
        publisher = await self._connect()
        if not self._nc.is_connected:  # a publish now would be sent later, unseen
            raise EditorError("the connection to NATS is lost (reconnecting)")
        await publisher.publish_now(event)

    def _wait(self, work: Coroutine[Any, Any, object], failed: str) -> None:
        from nats.errors import Error as NatsError

        future = asyncio.run_coroutine_threadsafe(work, self._loop)
        try:
            future.result(self.timeout_s)
        except TimeoutError:
            future.cancel()
            raise EditorError(f"NATS did not answer within {self.timeout_s:g} s: {failed} "
                              "(is the stack up? tidzam_ctl status)") from None
        except (TidzamError, NatsError, OSError) as exc:
            raise EditorError(f"{failed}: {exc}") from None
