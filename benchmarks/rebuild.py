"""How fast ``tidzam_ctl projections rebuild`` replays predictions into PostgreSQL.

    .venv/bin/python -m benchmarks.rebuild --predictions 1000000

A private stack (embedded NATS + PostgreSQL + projector; no classifier, extractor or
gain controller) in a temporary home. The EVENTS stream is filled with ``Prediction``
events as the default model writes them (its 10 labels, every score, a decision that
holds for runs of windows, a quarter of the windows ``unknown``), 32 channels on the
default window grid. The projector projects them once; then ``tidzam_ctl projections
rebuild`` runs as a user would run it, timed from the command's start to its exit
(it truncates the tables, replays the stream and waits until the projector is idle).
It prints predictions/s of the whole command and of its steady part (checkpoint
progress sampled every second), the rows written, and the projector's and
PostgreSQL's CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil

from bus.backlog import wait_idle
from bus.connect import connect, ensure_streams
from bus.publisher import Publisher
from bus_schemas import Prediction
from bus_schemas.streams import pipeline_durables
from inference.modelfolder import ModelFolder
from inference.registry import DEFAULT_SELECTOR
from tidzam_ctl.commands.stack import model_id_of
from tidzam_ctl.settings import REPO_ROOT, CtlSettings
from tidzam_ctl.stack.stack import Stack

START_NS = 1_704_067_200 * 10**9  # 2024-01-01
WINDOW_NS = 1_950_000_000
HOP_NS = int(WINDOW_NS * 0.75)


# the projector alone: nothing else consumes the predictions (the command too)
ENV = {"TIDZAM_CLASSIFIERS": "0", "TIDZAM_EXTRACTOR": "false", "TIDZAM_GAIN_CONTROL": "false"}


def predictions(n: int, channels: int, seed: int = 7) -> Iterator[Prediction]:
    """``n`` predictions of the default model, channel-interleaved like a replay."""
    meta = ModelFolder.load(DEFAULT_SELECTOR).meta
    labels = tuple(meta.labels)
    rng = np.random.default_rng(seed)
    decided = rng.integers(-3, len(labels), size=channels)  # <0: unknown
    for i in range(n):
        channel, step = i % channels, i // channels
        if rng.random() < 0.1:  # a new run starts on this channel
            decided[channel] = rng.integers(-3, len(labels))
        scores = rng.random(len(labels)).astype(np.float32) * 0.4
        label = int(decided[channel])
        if label >= 0:
            scores[label] = 0.6 + 0.4 * scores[label]
        start = START_NS + step * HOP_NS
        yield Prediction(source="bench", channel=channel, window_start_ns=start,
                         window_end_ns=start + WINDOW_NS, model_id=meta.model_id,
                         model_version=meta.version, labels=labels,
                         scores=tuple(float(s) for s in scores),
                         result=(labels[label],) if label >= 0 else ("unknown",),
                         origin_ns=START_NS)


async def fill(stack: Stack, n: int, channels: int) -> float:
    """Publish ``n`` predictions; wait until the projector has them all; seconds taken."""
    nc = await connect(stack.nats_url, "bench-rebuild")
    try:
        js = nc.jetstream()
        await ensure_streams(js)
        publisher = Publisher(js)
        t0 = time.monotonic()
        batch: list[Prediction] = []
        for i, event in enumerate(predictions(n, channels), 1):
            batch.append(event)
            if len(batch) == 2000:
                await publisher.publish_all(batch)
                batch.clear()
            if i % 100_000 == 0:
                print(f"published {i:,} predictions", file=sys.stderr)
        await publisher.publish_all(batch)
        durables = pipeline_durables(model_id_of(stack.settings.model_dir))[1:]
        if not await wait_idle(nc, durables, timeout_s=3600):
            raise SystemExit("the first projection did not finish within an hour")
        return time.monotonic() - t0
    finally:
        await nc.drain()


def count_rows(stack: Stack) -> dict[str, int]:
    import psycopg

    with psycopg.connect(stack.database_url) as conn:
        counts = {}
        for table in ("predictions", "detections", "detection_events"):
            row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
            counts[table] = int(row[0]) if row else 0
        return counts


class Progress(threading.Thread):
    """Samples the projector's EVENTS checkpoint and CPU every second."""

    def __init__(self, stack: Stack) -> None:
        super().__init__(daemon=True)
        self.stack = stack
        self.samples: list[tuple[float, int]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        import psycopg

        async with await psycopg.AsyncConnection.connect(self.stack.database_url,
                                                         autocommit=True) as conn:
            while not self.stop.is_set():
                cur = await conn.execute(
                    "SELECT coalesce(max(last_seq), 0) FROM projection_checkpoints"
                    " WHERE stream = 'EVENTS'")
                row = await cur.fetchone()
                self.samples.append((time.monotonic(), int(row[0]) if row else 0))
                await asyncio.sleep(1.0)


def cpu_of(pid: int | None) -> float:
    """CPU seconds of a process and all its children, those ended included."""
    if pid is None:
        return 0.0
    try:
        proc = psutil.Process(pid)
        times = proc.cpu_times()
        living = sum(sum(p.cpu_times()[:2]) for p in proc.children(recursive=True))
        return times.user + times.system + times.children_user + times.children_system + living
    except psutil.NoSuchProcess:
        return 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--predictions", type=int, default=1_000_000)
    ap.add_argument("--channels", type=int, default=32)
    args = ap.parse_args()
    os.environ.update(ENV)
    with tempfile.TemporaryDirectory(prefix="tidzam-bench-") as tmp:
        home = Path(tmp) / "home"
        stack = Stack(CtlSettings(home=home))  # the stack of ENV
        try:
            stack.up()
            filled = asyncio.run(fill(stack, args.predictions, args.channels))
            print(f"published and projected once in {filled:.1f} s", file=sys.stderr)
            pg = stack.pg.status().pid if stack.pg else None
            progress = Progress(stack)
            progress.start()
            projector_pid = stack.pid_of("projector")
            cpu_before = cpu_of(pg)
            t0 = time.monotonic()
            done = subprocess.run([sys.executable, "-m", "tidzam_ctl", "projections", "rebuild"],
                                  env={**os.environ, **ENV, "TIDZAM_HOME": str(home)},
                                  cwd=REPO_ROOT, capture_output=True, text=True)
            wall = time.monotonic() - t0
            progress.stop.set()
            progress.join()
            if done.returncode != 0:
                raise SystemExit(f"rebuild failed:\n{done.stderr}")
            pg_cpu = cpu_of(pg) - cpu_before
            new_pid = stack.pid_of("projector")
            projector_cpu = cpu_of(new_pid) if new_pid != projector_pid else float("nan")
            rows = count_rows(stack)
        finally:
            stack.down()
    n = args.predictions
    moving = [(t, s) for t, s in progress.samples if 0 < s < n]
    steady = ((moving[-1][1] - moving[0][1]) / (moving[-1][0] - moving[0][0])
              if len(moving) >= 2 and moving[-1][0] > moving[0][0] else float("nan"))
    print(f"predictions: {n:,} on {args.channels} channels; cores={psutil.cpu_count()}")
    print(f"tidzam_ctl projections rebuild: {wall:.1f} s -> {n / wall:,.0f} predictions/s "
          f"(whole command); steady {steady:,.0f} predictions/s")
    print("rows: " + ", ".join(f"{t} {c:,}" for t, c in rows.items()))
    print(f"CPU during the rebuild: projector {projector_cpu:.1f} s, "
          f"PostgreSQL {pg_cpu:.1f} s")


if __name__ == "__main__":
    main()
