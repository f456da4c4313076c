"""``tidzam_ctl replay``: recordings through the pipeline, as live audio is
(``producers.replay``), under a progress bar; ``--wait`` until the classifier and
the projections have caught up.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from tidzam_ctl.commands.stack import model_id_of, require_bus
from tidzam_ctl.errors import EXIT_ERROR, EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, CliError
from tidzam_ctl.settings import CtlSettings
from tidzam_ctl.stack.stack import Stack
from tidzam_ctl.timeparse import parse_time

console = Console(stderr=True, soft_wrap=True)
# how long a replay waits for an unreachable bus before it gives up (ids are
# deterministic: running it again resumes without storing a chunk twice)
OUTAGE_S = 600.0


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
    from bus.publisher import PublishError

    try:
        reports = asyncio.run(run_replay(stack, items, speed, args.wait, args.timeout))
    except PublishError as exc:
        again = " ".join(shlex.quote(a) for a in sys.argv[1:])
        raise CliError(
            f"the bus did not store the audio ({exc}; a bus that stores nothing is waited "
            f"for {OUTAGE_S / 60:.0f} minutes); once `tidzam_ctl status` shows NATS "
            "running, run the same command again: chunks already stored are not stored "
            f"twice (tidzam_ctl {again})") from exc
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


async def run_replay(stack: Stack, items: list[Any], speed: float | None, wait: bool,
                  timeout: float) -> list[Any]:
    from audio.decode import AudioDecodeError, AudioStream
    from bus.backlog import wait_processed
    from bus.connect import connect, ensure_streams
    from bus.publisher import Publisher
    from bus_schemas.streams import pipeline_durables
    from producers.gain import GainStage
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
        gain = GainStage()  # archived audio is heard as the mixer had it then
        await gain.follow(nc)
        with Progress(TextColumn("{task.description}"), BarColumn(),
                      TextColumn("{task.completed:.0f} s of audio"),
                      TimeElapsedColumn(), console=console) as bar:
            task = bar.add_task("replaying", total=total or None)
            replayer = Replayer(Publisher(nc.jetstream(), outage_s=OUTAGE_S),
                                sample_rate=stack.settings.sample_rate,
                                chunk_s=stack.settings.replay_chunk(speed), speed=speed,
                                progress=lambda src, sec: bar.advance(task, sec),
                                mixer=gain.state)
            reports = await replayer.replay(items)
        await gain.close()
        if wait:
            # the windows of this replay, not an idle bus: a live source never idles
            with console.status("waiting for the classifier and the projections…"):
                model_id = model_id_of(stack.settings.model_dir)
                if not await wait_processed(nc, pipeline_durables(model_id), timeout):
                    raise CliError(f"the pipeline did not catch up within {timeout:.0f} s "
                                   "(see `tidzam_ctl status` and the logs)")
        return reports
    finally:
        await nc.drain()
