"""``tidzam_ctl backup DIR`` / ``restore DIR``: what a site cannot rebuild from the bus.

A backup holds:

- ``postgres.dump``: the projections database (``pg_dump`` custom format);
- ``control.msgpack``: every message of the CONTROL stream (sources, rules, deploys,
  reviews, mixer settings: the site's configuration history), headers and all;
- ``models/``: the model registry; ``samples/``: the extracted samples and their
  sidecars;
- ``backup.json``: what is in it, with the sha256 of every file.

Audio and predictions on the bus are not kept (the database holds their projection;
archive files are the audio's backup). ``restore`` goes into a fresh home whose stack
is up (an empty CONTROL): it checks every file's sha256, stops the projector and the
gateway, replaces the fresh database's tables by the backup's (the roles' rights
given again), copies the models and
the samples, publishes CONTROL's messages again with their ids, and sets the
projections' checkpoints to the restored streams (CONTROL: projected already; the
other streams start empty), then starts what it stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import msgpack
from nats.js import JetStreamContext
from rich.console import Console

from bus_schemas.streams import CONTROL
from tidzam_ctl.errors import EXIT_OK, EXIT_USAGE, CliError
from tidzam_ctl.settings import CtlSettings
from tidzam_ctl.stack.postgres_binaries import find_bin_dir
from tidzam_ctl.stack.stack import Stack

console = Console(stderr=True, soft_wrap=True)
FORMAT = 1
MANIFEST = "backup.json"
SKIPPED_SAMPLES = {".extractor.json"}  # the extractor's place in the old EVENTS stream


def backup(settings: CtlSettings, args: argparse.Namespace) -> int:
    stack = Stack(settings)
    target: Path = args.dir.expanduser().absolute()
    if target.exists() and any(target.iterdir()):
        raise CliError(f"{target} is not empty: back up into a new folder", EXIT_USAGE)
    target.mkdir(parents=True, exist_ok=True)
    console.print(f"backing up {stack.home} into {target}")
    _pg(stack, "pg_dump", "--format=custom", "--no-owner", "--no-privileges",
        f"--file={target / 'postgres.dump'}")
    console.print(f"  database: {_size(target / 'postgres.dump')}")
    messages = asyncio.run(_read_control(stack))
    (target / "control.msgpack").write_bytes(msgpack.packb(messages, use_bin_type=True))
    console.print(f"  CONTROL: {len(messages)} message(s)")
    for name, source in (("models", stack.home / "models"),
                         ("samples", stack.settings.samples_root)):
        if source.is_dir():
            shutil.copytree(source, target / name, symlinks=False,
                            ignore=lambda _d, names: [n for n in names if n in SKIPPED_SAMPLES])
            console.print(f"  {name}: {sum(1 for p in (target / name).rglob('*') if p.is_file())}"
                          " file(s)")
    manifest = {"format": FORMAT, "created": time.time(), "home": str(stack.home),
                "control_messages": len(messages), "files": _digests(target)}
    (target / MANIFEST).write_text(json.dumps(manifest, indent=1))
    console.print(f"done: `tidzam_ctl restore {target}` in a fresh home brings it back")
    return EXIT_OK


def restore(settings: CtlSettings, args: argparse.Namespace) -> int:
    stack = Stack(settings)
    source: Path = args.dir.expanduser().absolute()
    manifest = _checked(source)
    if not stack.is_meant_up():
        raise CliError("the stack is not up: `tidzam_ctl up` in the fresh home first",
                       EXIT_USAGE)
    held = asyncio.run(_control_count(stack))
    if held:
        raise CliError(f"CONTROL already holds {held} message(s): restore into a fresh "
                       "home (TIDZAM_HOME=/new/home tidzam_ctl up; then restore)", EXIT_USAGE)
    stopped = [n for n in ("projector", "gateway") if stack.pid_of(n) is not None]
    for name in stopped:
        stack.stop_process(name)
    console.print(f"restoring {source} into {stack.home}")
    asyncio.run(_empty_schema(stack))  # pg_restore --clean trips on partitions' keys
    _pg(stack, "pg_restore", "--no-owner", "--no-privileges", "--single-transaction",
        str(source / "postgres.dump"))
    for name, dest in (("models", stack.home / "models"),
                       ("samples", stack.settings.samples_root)):
        if (source / name).is_dir():
            shutil.copytree(source / name, dest, dirs_exist_ok=True)
    messages = msgpack.unpackb((source / "control.msgpack").read_bytes(), raw=False)
    last = asyncio.run(_republish(stack, messages))
    asyncio.run(_reset_checkpoints(stack, last))
    console.print(f"  database, {len(messages)} CONTROL message(s), models and samples "
                  f"restored (backup of {manifest['home']})")
    stack.up()  # migrations, the roles' rights, and what was stopped
    console.print("done")
    return EXIT_OK


# ------------------------------------------------------------------ pieces


async def _empty_schema(stack: Stack) -> None:
    """The fresh home's tables go: the backup's come in their place."""
    import psycopg

    async with await psycopg.AsyncConnection.connect(stack.database_url,
                                                     autocommit=True) as conn:
        await conn.execute("DROP SCHEMA public CASCADE")
        await conn.execute("CREATE SCHEMA public")


def _pg(stack: Stack, tool: str, *args: str) -> None:
    """Run pg_dump or pg_restore on the stack's database; the password goes through
    the environment, never the command line."""
    parts = urlsplit(stack.database_url)
    env = dict(os.environ, PGPASSWORD=unquote(parts.password or ""),
               PGUSER=unquote(parts.username or ""))
    bare = urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]))
    done = subprocess.run([str(find_bin_dir() / tool), f"--dbname={bare}", *args], env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise CliError(f"{tool} failed: {done.stderr.strip()[-2000:]}")


@contextlib.asynccontextmanager
async def _bus(stack: Stack) -> AsyncIterator[JetStreamContext]:
    from bus.connect import connect, ensure_streams

    nc = await connect(stack.nats_url, "tidzam_ctl-backup")
    try:
        await ensure_streams(nc.jetstream(), retention=stack.settings)
        yield nc.jetstream()
    finally:
        await nc.drain()


async def _read_control(stack: Stack) -> list[dict[str, Any]]:
    from nats.js.errors import NotFoundError

    messages: list[dict[str, Any]] = []
    seq = 0
    async with _bus(stack) as js:
        while True:
            try:
                raw = await js.get_msg(CONTROL.name, seq=seq + 1, subject=">", next=True)
            except NotFoundError:
                return messages
            seq = raw.seq or seq + 1
            messages.append({"seq": seq, "subject": raw.subject,
                             "headers": dict(raw.headers or {}), "data": raw.data or b""})


async def _control_count(stack: Stack) -> int:
    async with _bus(stack) as js:
        return int((await js.stream_info(CONTROL.name)).state.messages)


async def _republish(stack: Stack, messages: list[dict[str, Any]]) -> int:
    """Publish the messages again, in order, with their headers (their ids): the last
    sequence of CONTROL after them."""
    last = 0
    async with _bus(stack) as js:
        for m in messages:
            ack = await js.publish(m["subject"], m["data"], headers=m["headers"] or None,
                                   stream=CONTROL.name, timeout=10)
            last = ack.seq
    return last


async def _reset_checkpoints(stack: Stack, control_seq: int) -> None:
    """The restored checkpoints point into the old streams: CONTROL's now ends at
    ``control_seq`` (its messages are projected already); the others start empty."""
    import psycopg

    async with await psycopg.AsyncConnection.connect(stack.database_url) as conn:
        await conn.execute("DELETE FROM projection_checkpoints WHERE stream <> %s",
                           (CONTROL.name,))
        # a checkpoint never moves backwards by UPDATE: the row is written anew
        await conn.execute("WITH old AS (DELETE FROM projection_checkpoints WHERE stream = %s"
                           " RETURNING projection, stream, tables)"
                           " INSERT INTO projection_checkpoints (projection, stream, last_seq,"
                           " tables) SELECT projection, stream, %s, tables FROM old",
                           (CONTROL.name, control_seq))


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST}


def _checked(folder: Path) -> dict[str, Any]:
    try:
        manifest: dict[str, Any] = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise CliError(f"{folder} is not a Tidzam backup ({MANIFEST}: {exc})", EXIT_USAGE) \
            from exc
    if manifest.get("format") != FORMAT:
        raise CliError(f"{folder}: backup format {manifest.get('format')}, this Tidzam reads "
                       f"{FORMAT}", EXIT_USAGE)
    found = _digests(folder)
    bad = sorted(n for n, d in manifest["files"].items() if found.get(n) != d)
    if bad or set(found) != set(manifest["files"]):
        extra = sorted(set(found) - set(manifest["files"]))
        raise CliError(f"{folder} is damaged: {', '.join(bad + extra)[:500]} differ from "
                       f"{MANIFEST}", EXIT_USAGE)
    return manifest


def _size(path: Path) -> str:
    return f"{path.stat().st_size / 1e6:.1f} MB"
