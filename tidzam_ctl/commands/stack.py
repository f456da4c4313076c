"""What each ``tidzam_ctl`` command does; ``__main__`` only parses."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tidzam_ctl.errors import EXIT_ERROR, EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, CliError
from tidzam_ctl.settings import CtlSettings
from tidzam_ctl.stack.stack import Stack
from tidzam_ctl.timeparse import parse_time

console = Console(stderr=True)
out = Console(soft_wrap=True)


# ------------------------------------------------------------------- the stack


def up(settings: CtlSettings, args: argparse.Namespace) -> int:
    from tidzam_ctl.commands.source import publish, sources_file

    if getattr(args, "icecast", False):
        settings = settings.model_copy(update={"icecast": True})
    if getattr(args, "jack", False):
        settings = settings.model_copy(update={"jack": True})
    stack = Stack(settings)
    wanted = sources_file(args.sources) if getattr(args, "sources", None) else []
    with console.status("starting the stack…"):
        try:
            stack.up()
        except Exception as exc:
            raise CliError(f"could not start the stack: {exc}") from exc
    if wanted:
        asyncio.run(publish(stack, list(wanted)))
        console.print(f"{len(wanted)} source(s) requested from {args.sources}")
    return status(settings, args)


def down(settings: CtlSettings, args: argparse.Namespace) -> int:
    with console.status("stopping…"):
        Stack(settings).down()
    console.print("stopped")
    return EXIT_OK


def status(settings: CtlSettings, args: argparse.Namespace) -> int:
    info = Stack(settings).status()
    if getattr(args, "json", False):
        out.print_json(json.dumps(info))
        return EXIT_OK
    table = Table(title=f"Tidzam in {info['home']}")
    for col in ("process", "pid", "state"):
        table.add_column(col)
    for proc in info["processes"]:
        colour = {"running": "green", "dead": "red"}.get(proc["state"], "yellow")
        table.add_row(proc["name"], str(proc["pid"] or "-"),
                      f"[{colour}]{proc['state']}[/{colour}]")
    out.print(table)
    for name, url in info["services"].items():
        out.print(f"{name}: {url}")
    dead = [p for p in info["processes"] if p["state"] == "dead"]
    return EXIT_ERROR if dead else EXIT_OK


def check(settings: CtlSettings, args: argparse.Namespace) -> int:
    stack = Stack(settings)
    if not stack.is_meant_up():
        console.print("the stack is not up (run `tidzam_ctl up`)")
        return EXIT_OK
    restarted = stack.check()
    console.print(f"restarted: {', '.join(restarted)}" if restarted else "all running")
    return EXIT_OK


def require_bus(stack: Stack) -> None:
    if stack.embedded_nats and stack.pid_of("nats") is None:
        raise CliError("NATS is not running: start the stack with `tidzam_ctl up`")


# ------------------------------------------------------------------- replay


def replay(settings: CtlSettings, args: argparse.Namespace) -> int:
    from producers.replay import plan

    stack = Stack(settings)
    try:
        start = parse_time(args.start) if args.start else None
        speed = None if args.speed == "max" else float(args.speed)
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE) from exc
    if speed is not None and speed <= 0:
        raise CliError("--speed must be positive or 'max'", EXIT_USAGE)
    missing = [str(p) for p in args.paths if not p.exists()]
    if missing:
        raise CliError(f"no such file or folder: {', '.join(missing)}", EXIT_USAGE)
    require_bus(stack)
    items = plan(args.paths, source=args.source, start=start)
    if not items:
        raise CliError("no audio files found in the given folders", EXIT_USAGE)
    reports = asyncio.run(_replay(stack, items, speed, args.wait, args.timeout))
    failed = [r for r in reports if r.errors]
    for report in reports:
        line = (f"{report.source}: {report.files} file(s), {report.channels} channel(s), "
                f"{report.audio_s:.1f} s of audio, {report.chunks} chunks")
        console.print(line)
        for err in report.errors:
            console.print(f"  [red]failed:[/red] {err}")
    if failed:
        return EXIT_PARTIAL if len(failed) < len(reports) else EXIT_ERROR
    return EXIT_OK


async def _replay(stack: Stack, items: list[Any], speed: float | None, wait: bool,
                  timeout: float) -> list[Any]:
    from audio.decode import AudioDecodeError, AudioStream
    from bus.backlog import pipeline_durables, wait_idle
    from bus.connect import connect, ensure_streams
    from bus.publisher import Publisher
    from producers.replay import Replayer

    total = 0.0
    for item in items:
        try:
            with AudioStream(item.path, stack.settings.sample_rate) as s:
                total += s.info.duration_s or 0.0
        except AudioDecodeError:
            pass  # reported by the replay itself
    nc = await connect(stack.nats_url, "tidzam_ctl-replay")
    try:
        await ensure_streams(nc.jetstream())
        with Progress(TextColumn("{task.description}"), BarColumn(),
                      TextColumn("{task.completed:.0f} s of audio"),
                      TimeElapsedColumn(), console=console) as bar:
            task = bar.add_task("replaying", total=total or None)
            replayer = Replayer(Publisher(nc.jetstream()), sample_rate=stack.settings.sample_rate,
                                chunk_s=stack.settings.chunk_s, speed=speed,
                                progress=lambda src, sec: bar.advance(task, sec))
            reports = await replayer.replay(items)
        if wait:
            with console.status("waiting for the classifier and the projections…"):
                model_id = _model_id(stack.settings.model_dir)
                if not await wait_idle(nc, pipeline_durables(model_id), timeout):
                    raise CliError(f"the pipeline did not catch up within {timeout:.0f} s "
                                   "(see `tidzam_ctl status` and the logs)")
        return reports
    finally:
        await nc.drain()


def _model_id(model_dir: Path) -> str:
    data = json.loads((model_dir / "model.json").read_text())
    return str(data["model_id"])


# -------------------------------------------------------------------- query


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


# -------------------------------------------------------------- projections


def projections(settings: CtlSettings, args: argparse.Namespace) -> int:
    stack = Stack(settings)
    require_bus(stack)
    with console.status("rebuilding the projections from the event streams…"):
        asyncio.run(_rebuild(stack))
    console.print("projections rebuilt")
    return EXIT_OK


async def _rebuild(stack: Stack) -> None:
    from nats.js.errors import NotFoundError
    from psycopg_pool import AsyncConnectionPool

    from bus.backlog import pipeline_durables, wait_idle
    from bus.connect import connect
    from projections.service import PROJECTION
    from projections.store import ProjectionStore

    was_running = stack.pid_of("projector") is not None
    stack.stop_process("projector")
    durables = pipeline_durables(_model_id(stack.settings.model_dir))[1:]
    nc = await connect(stack.nats_url, "tidzam_ctl-rebuild")
    try:
        for stream, durable in durables:
            with contextlib.suppress(NotFoundError):  # absent already: nothing to delete
                await nc.jetstream().delete_consumer(stream, durable)
        async with AsyncConnectionPool(stack.database_url, min_size=1, max_size=2,
                                       open=False) as pool:
            await ProjectionStore(pool).reset(PROJECTION)
        if was_running or stack.is_meant_up():
            stack.check()
            if not await wait_idle(nc, durables, timeout_s=3600):
                raise CliError("the rebuild did not finish within an hour")
    finally:
        await nc.drain()


# --------------------------------------------------------------------- psql


def psql(settings: CtlSettings, args: argparse.Namespace) -> int:
    import os
    import shutil
    from urllib.parse import unquote, urlsplit, urlunsplit

    url = Stack(settings).database_url
    if args.url:
        out.print(url, highlight=False)
        return EXIT_OK
    exe = shutil.which("psql")
    if exe is None:
        raise CliError("psql is not installed (Debian: postgresql-client); "
                       "`tidzam_ctl psql --url` prints the URL for another client")
    # The password goes through the environment, never the command line (ps shows it).
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    user = unquote(parts.username or "")
    env = dict(os.environ, PGPASSWORD=unquote(parts.password or ""), PGUSER=user)
    bare = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    os.execve(exe, [exe, bare, *args.psql_args], env)


# --------------------------------------------------------------------- demo


def source(settings: CtlSettings, args: argparse.Namespace) -> int:
    from tidzam_ctl.commands.source import source as run

    return run(settings, args)


def demo(settings: CtlSettings, args: argparse.Namespace) -> int:
    from tidzam_ctl.commands.demo import run_demo

    return run_demo(settings, stop_after=args.down)


__all__ = ["EXIT_ERROR", "EXIT_OK", "EXIT_PARTIAL", "EXIT_USAGE"]
