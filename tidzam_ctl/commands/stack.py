"""The stack commands of ``tidzam_ctl``: up, down, status, check, projections, psql,
and the entry points of ``demo`` and ``source``; ``require_bus`` for every command
that needs NATS. ``replay`` and ``query`` have their own modules; ``__main__`` only
parses."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from projections.roles import READER
from tidzam_ctl.commands import retention
from tidzam_ctl.errors import EXIT_ERROR, EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, CliError
from tidzam_ctl.settings import CtlSettings
from tidzam_ctl.stack.stack import Stack

console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)


# ------------------------------------------------------------------- the stack


def up(settings: CtlSettings, args: argparse.Namespace) -> int:
    from tidzam_ctl.commands.source import publish, sources_file

    if getattr(args, "icecast", False):
        settings = settings.model_copy(update={"icecast": True})
    if getattr(args, "jack", False):
        settings = settings.model_copy(update={"jack": True})
    privacy = {k: v for k in ("privacy", "privacy_archive")
               if (v := getattr(args, k, None)) is not None}
    if privacy:  # set here: the stack keeps it for later commands
        settings = settings.model_copy(update=privacy)
    stack = Stack(settings)
    wanted = sources_file(args.sources) if getattr(args, "sources", None) else []
    with console.status("starting the stack…"):
        try:
            stack.up()
        except Exception as exc:
            raise CliError(f"could not start the stack: {exc}") from exc
    token = stack.first_token()
    if token:
        console.print(f"the gateway's first control token (admin), shown once: {token}",
                      soft_wrap=True, highlight=False)
        console.print("keep it; `tidzam_ctl token` makes, lists and revokes tokens")
    if wanted:
        asyncio.run(publish(stack, list(wanted)))
        console.print(f"{len(wanted)} source(s) requested from {args.sources}")
    return status(settings, args)


def init(settings: CtlSettings, args: argparse.Namespace) -> int:
    if settings.nats_url is None or settings.database_url is None:
        raise CliError("init prepares servers Tidzam does not start (docker-compose): set "
                       "TIDZAM_NATS_URL and TIDZAM_DATABASE_URL; `up` prepares its own")
    with console.status("creating the streams, migrating, granting the roles…"):
        try:
            Stack(settings).prepare()
        except Exception as exc:
            raise CliError(f"could not prepare the servers: {exc}") from exc
    console.print("streams, tables and roles ready")
    return EXIT_OK


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
    for col in ("process", "pid", "state", "acked/s", "lag"):
        table.add_column(col, justify="right" if col in ("acked/s", "lag") else "left")
    for proc in info["processes"]:
        colour = {"running": "green", "dead": "red", "not answering": "red"}.get(
            proc["state"], "yellow")
        state = proc["state"] + (f" ({proc['problem']})" if proc.get("problem") else "")
        rate, lag = proc.get("acked_per_s"), proc.get("lag")
        table.add_row(proc["name"], str(proc["pid"] or "-"), f"[{colour}]{state}[/{colour}]",
                      "-" if rate is None else f"{rate:,.1f}", "-" if lag is None else f"{lag:,}")
    out.print(table)
    if info.get("consumers"):
        lags = Table(title="consumers (messages waiting for each)")
        for col in ("stream", "consumer", "pending", "unacked", "redelivered", "acked/s"):
            lags.add_column(col, justify="left" if col in ("stream", "consumer") else "right")
        for c in info["consumers"]:
            lags.add_row(c["stream"], c["consumer"], f"{c['pending']:,}", f"{c['unacked']:,}",
                         f"{c['redelivered']:,}", f"{c['acked_per_s']:,.1f}")
        out.print(lags)
    for proc in info["processes"]:
        if proc.get("last_error"):
            out.print(f"[red]{proc['name']}[/red] last error: {proc['last_error']}",
                      highlight=False)
    for name, url in info["services"].items():
        out.print(f"{name}: {url}")
    dead = [p for p in info["processes"] if p["state"] in ("dead", "not answering")]
    return EXIT_ERROR if dead else EXIT_OK


def check(settings: CtlSettings, args: argparse.Namespace) -> int:
    stack = Stack(settings)
    if not stack.is_meant_up():
        console.print("the stack is not up (run `tidzam_ctl up`)")
        return EXIT_OK
    restarted = stack.check()
    console.print(f"restarted: {', '.join(restarted)}" if restarted else "all running")
    if retention.configured(stack.settings):
        for line in retention.apply(stack, datetime.now(UTC)):
            console.print(f"retention: {line}")
    return EXIT_OK


def model_id_of(model_dir: Path) -> str:
    """The model id in ``model_dir/model.json``: the classifier's durable consumers carry it."""
    data = json.loads((model_dir / "model.json").read_text())
    return str(data["model_id"])


def require_bus(stack: Stack) -> None:
    if stack.embedded_nats and stack.pid_of("nats") is None:
        raise CliError("NATS is not running: start the stack with `tidzam_ctl up`")


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

    from bus.backlog import wait_processed
    from bus.connect import connect
    from bus_schemas.streams import PROJECTION, pipeline_durables
    from projections.pool import connection_pool
    from projections.store import ProjectionStore

    was_running = stack.pid_of("projector") is not None
    stack.stop_process("projector")
    durables = pipeline_durables(model_id_of(stack.settings.model_dir))[1:]
    nc = await connect(stack.nats_url, "tidzam_ctl-rebuild")
    try:
        for stream, durable in durables:
            with contextlib.suppress(NotFoundError):  # absent already: nothing to delete
                await nc.jetstream().delete_consumer(stream, durable)
        async with connection_pool(stack.database_url, max_size=2) as pool:
            await ProjectionStore(pool).reset(PROJECTION)
        if was_running or stack.is_meant_up():
            stack.check()
            if not await wait_processed(nc, durables, timeout_s=3600):
                raise CliError("the rebuild did not finish within an hour")
    finally:
        await nc.drain()


# --------------------------------------------------------------------- psql


def psql(settings: CtlSettings, args: argparse.Namespace) -> int:
    import os
    import shutil
    from urllib.parse import unquote, urlsplit, urlunsplit

    stack = Stack(settings)
    url = stack.database_url_as(READER) if args.reader else stack.database_url
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
