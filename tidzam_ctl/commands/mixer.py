"""``tidzam_ctl mixer set | ls | log``: each channel's gain and mute.

A setting is a manual ``MixerCommand``: it pins the channel (the gain controller's
automatic commands no longer reach it) until ``--auto`` releases it. The gain stage
where the audio enters applies it from the next chunk; what is analysed, relayed to
Icecast and played on JACK hears it, the archive keeps the raw audio.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import time
import uuid
from typing import Any

from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from bus_schemas import MixerCommand
from bus_schemas.pcm import GAIN_DB_MAX, GAIN_DB_MIN
from tidzam_ctl.errors import EXIT_OK, EXIT_USAGE, CliError
from tidzam_ctl.settings import CtlSettings
from tidzam_ctl.stack.stack import Stack

console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)


def add_mixer_parser(sub: Any) -> None:
    p = sub.add_parser("mixer", help="each channel's gain and mute: set, ls, log",
                       description="The mixer of every channel. The gain controller turns "
                       "down clipping or noisy channels and mutes dead or crackling ones; a "
                       "person's setting wins until released with --auto.")
    msub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    s = msub.add_parser("set", help="set a channel's gain or mute (pins it), or --auto")
    s.add_argument("source", metavar="SOURCE")
    s.add_argument("channel", type=int, metavar="CHANNEL")
    what = s.add_mutually_exclusive_group(required=True)
    what.add_argument("--gain-db", type=float, metavar="DB",
                      help=f"gain in dB, {GAIN_DB_MIN:g} to {GAIN_DB_MAX:+g}")
    what.add_argument("--mute", action="store_true")
    what.add_argument("--unmute", action="store_true")
    what.add_argument("--auto", action="store_true",
                      help="release the channel to the gain controller")
    s.add_argument("--reason", default="", help="why (shown by mixer ls and log)")
    ls = msub.add_parser("ls", help="every channel's gain and mute, who set it and why, "
                         "how many windows privacy silenced as speech")
    ls.add_argument("--json", action="store_true")
    lg = msub.add_parser("log", help="the mixer's history: commands, applied states and "
                         "windows masked as speech")
    lg.add_argument("--source")
    lg.add_argument("--limit", type=int, default=50, help="the newest N (default 50)")
    lg.add_argument("--json", action="store_true")


def mixer(settings: CtlSettings, args: argparse.Namespace) -> int:
    stack = Stack(settings)
    if args.action == "set":
        return _set(stack, args)
    if args.action == "ls":
        rows = asyncio.run(_rows(stack, "SELECT source, channel, gain_db, muted, origin, reason,"
                                 " by, from_time, pinned, last_action, last_origin,"
                                 " last_reason, last_by, last_at, masked, last_masked"
                                 " FROM mixer_state"
                                 " ORDER BY source, channel", ()))
        if args.json:
            out.print_json(json.dumps([{k: _plain(v) for k, v in r.items()} for r in rows]))
            return EXIT_OK
        table = Table(title=f"{len(rows)} channel(s) with a mixer history")
        for col in ("source", "ch", "gain", "muted", "set by", "why", "pinned", "last command",
                    "speech masked"):
            table.add_column(col)
        for r in rows:
            table.add_row(r["source"], str(r["channel"]), f"{r['gain_db']:+.1f} dB",
                          "MUTED" if r["muted"] else "-",
                          r["by"] or r["origin"] or "-", r["reason"] or "-",
                          "yes" if r["pinned"] else "no",
                          f"{r['last_action']} ({r['last_by'] or r['last_origin']})"
                          if r["last_action"] else "-",
                          f"{r['masked']} (last {r['last_masked']:%Y-%m-%d %H:%M:%S})"
                          if r["masked"] else "0")
        out.print(table if rows else "no mixer command yet: every channel at 0 dB")
        return EXIT_OK
    if args.limit < 1:
        raise CliError("--limit must be at least 1", EXIT_USAGE)
    where, params = ("WHERE source = %s", (args.source,)) if args.source else ("", ())
    rows = asyncio.run(_rows(stack, "SELECT kind, at, from_time, source, channel, action,"
                             " gain_db, muted, origin, reason, by FROM mixer_log "
                             f"{where} ORDER BY at DESC LIMIT {int(args.limit)}", params))
    if args.json:
        out.print_json(json.dumps([{k: _plain(v) for k, v in r.items()} for r in rows]))
        return EXIT_OK
    table = Table(title=f"mixer log ({len(rows)} newest)")
    for col in ("at (UTC)", "source", "ch", "what", "by", "why"):
        table.add_column(col)
    for r in rows:
        what = (r["action"] + (f" {r['gain_db']:+.1f} dB" if r["action"] == "gain" else "")
                if r["kind"] == "command" else
                f"speech masked from {r['from_time']:%H:%M:%S}" if r["kind"] == "masked" else
                f"applied {r['gain_db']:+.1f} dB{' muted' if r['muted'] else ''} from "
                f"{r['from_time']:%H:%M:%S}")
        table.add_row(f"{r['at']:%Y-%m-%d %H:%M:%S}", r["source"], str(r["channel"]), what,
                      r["by"] or r["origin"] or "-", r["reason"] or "-")
    out.print(table)
    return EXIT_OK


def _set(stack: Stack, args: argparse.Namespace) -> int:
    action = ("gain" if args.gain_db is not None else "mute" if args.mute else
              "unmute" if args.unmute else "auto")
    try:
        cmd = MixerCommand(command_id=f"manual-{uuid.uuid4().hex}", source=args.source,
                           channel=args.channel, action=action,
                           gain_db=args.gain_db if args.gain_db is not None else 0.0,
                           reason=args.reason, origin="manual", by=getpass.getuser(),
                           at_ns=time.time_ns())
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "command"
        raise CliError(f"bad mixer setting: {where}: {first['msg']}", EXIT_USAGE) from None
    asyncio.run(_check_channel(stack, args.source, args.channel))
    asyncio.run(_publish(stack, cmd))
    what = {"gain": f"gain {cmd.gain_db:+g} dB", "mute": "muted", "unmute": "unmuted",
            "auto": "released to the gain controller"}[action]
    console.print(f"{args.source} channel {args.channel}: {what}"
                  + ("" if action == "auto" else " (pinned until `--auto`)"))
    return EXIT_OK


async def _check_channel(stack: Stack, source: str, channel: int) -> None:
    import psycopg

    from projections import queries

    async with await psycopg.AsyncConnection.connect(stack.database_url) as conn:
        known = {row.name: row for row in await queries.sources(conn)}
    if source not in known:
        raise CliError(f"no source named {source!r} (tidzam_ctl source ls lists them)",
                       EXIT_USAGE)
    channels = known[source].channels
    if channels and channel not in channels:
        raise CliError(f"{source} has channels {','.join(map(str, channels))}, not {channel}",
                       EXIT_USAGE)


async def _publish(stack: Stack, cmd: MixerCommand) -> None:
    from bus.connect import connect, ensure_streams
    from bus.publisher import Publisher

    nc = await connect(stack.nats_url, "tidzam_ctl-mixer")
    try:
        await ensure_streams(nc.jetstream())
        await Publisher(nc.jetstream()).publish_now(cmd)
    finally:
        await nc.drain()


async def _rows(stack: Stack, query: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
    import psycopg
    from psycopg.rows import dict_row

    async with await psycopg.AsyncConnection.connect(stack.database_url,
                                                     row_factory=dict_row) as conn:
        cur = await conn.execute(query.encode(), params)
        return list(await cur.fetchall())


def _plain(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value
