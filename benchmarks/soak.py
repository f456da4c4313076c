"""Soak: a whole stack under live load for many minutes; does anything grow?

    .venv/bin/python -m benchmarks.soak --minutes 20 --channels 32

A private stack (embedded NATS + PostgreSQL + every process of a default ``up``: the
classifier, the projector, the extractor with a rule, the gain controller, the
gateway...) in a temporary home; ``--channels`` channels of real corpus recordings
replayed at real time (a live site: a recording of ``--loop-s`` seconds, replayed
again and again with its clock going on). Every ``--every`` seconds it samples the
RSS of every process (PostgreSQL with its backends) and every durable consumer's lag
(pending + unacked messages), and prints a line. At the end, per process: RSS after
the warm-up, at the end, and its slope (least squares over the samples after the
warm-up, in MB per hour), and the largest lag seen after the warm-up.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

import psutil

from benchmarks.throughput import RATE, START, build_recording, wait_started
from bus.connect import connect, ensure_streams
from bus.publisher import Publisher
from bus_schemas import ExtractionRule, ExtractionRulesSet
from learning.corpus.fetch import default_cache_dir
from producers.replay import Replayer, ReplayItem
from tidzam_ctl.settings import CtlSettings
from tidzam_ctl.stack.stack import Stack


def tree_rss(pid: int) -> int:
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


async def lags(stack: Stack) -> dict[str, int]:
    """Pending + unacked messages of every durable consumer."""
    nc = await connect(stack.nats_url, "soak")
    try:
        found = {}
        for stream in ("AUDIO", "EVENTS", "CONTROL"):
            for info in await nc.jetstream().consumers_info(stream):
                if info.config.durable_name:
                    found[info.config.durable_name] = int((info.num_pending or 0)
                                                          + (info.num_ack_pending or 0))
        return found
    finally:
        await nc.close()


async def live_load(stack: Stack, wav: Path, loop_s: float, stop: threading.Event) -> int:
    """Replay ``wav`` at real time, again and again, its clock going on: loops done."""
    nc = await connect(stack.nats_url, "soak-load")
    await ensure_streams(nc.jetstream())
    await Publisher(nc.jetstream()).publish_now(ExtractionRulesSet(
        rules=(ExtractionRule(classes=("unknown",), rate="auto", cooldown_s=5.0),),
        at_ns=time.time_ns(), by="soak"))
    loops = 0
    try:
        while not stop.is_set():
            replayer = Replayer(Publisher(nc.jetstream()), sample_rate=RATE,
                                chunk_s=stack.settings.chunk_s, speed=1.0)
            start = START + timedelta(seconds=loops * loop_s)
            reports = await replayer.replay([ReplayItem(wav, "soak", start)])
            errors = [e for r in reports for e in r.errors]
            if errors:
                raise SystemExit(f"replay failed: {errors[0]}")
            loops += 1
    finally:
        await nc.drain()
    return loops


def slope_mb_per_h(points: list[tuple[float, int]]) -> float:
    xs = [t / 3600 for t, _ in points]
    ys = [r / 2**20 for _, r in points]
    if len(xs) < 2 or max(xs) == min(xs):
        return 0.0
    return float(statistics.linear_regression(xs, ys).slope)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--minutes", type=float, default=20.0, help="how long the load runs")
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--every", type=float, default=30.0, help="seconds between samples")
    ap.add_argument("--warmup", type=float, default=3.0,
                    help="minutes left out of the slope (start-up, first allocations)")
    ap.add_argument("--loop-s", type=float, default=60.0,
                    help="seconds of the recording replayed again and again")
    ap.add_argument("--cache", type=Path, default=None,
                    help="where the corpus packages are (default: the home's corpus folder)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="tidzam-soak-") as tmp:
        wav = build_recording(args.channels, args.loop_s, Path(tmp) / "soak.wav",
                              args.cache or default_cache_dir())
        stack = Stack(CtlSettings(home=Path(tmp) / "home"))
        stack.up()
        try:
            names = ["nats", *[p.name for p in stack.processes()]]
            pids = {n: pid for n in names if (pid := stack.pid_of(n)) is not None}
            if stack.pg is not None and (pg := stack.pg.status().pid):
                pids["postgres"] = pg
            print(f"started; idle after {wait_started(pids):.1f} s", file=sys.stderr)
            stop = threading.Event()
            done: list[int] = []
            load = threading.Thread(target=lambda: done.append(asyncio.run(
                live_load(stack, wav, args.loop_s, stop))), daemon=True)
            t0 = time.monotonic()
            load.start()
            rss: dict[str, list[tuple[float, int]]] = {n: [] for n in pids}
            lag_seen: dict[str, list[tuple[float, int]]] = {}
            print(f"{'min':>6} " + " ".join(f"{n[:12]:>12}" for n in pids) + "   max lag")
            while time.monotonic() - t0 < args.minutes * 60:
                time.sleep(min(args.every, max(0.0, args.minutes * 60
                                               - (time.monotonic() - t0))))
                t = time.monotonic() - t0
                for name, pid in pids.items():
                    rss[name].append((t, tree_rss(pid)))
                now = asyncio.run(lags(stack))
                for durable, n in now.items():
                    lag_seen.setdefault(durable, []).append((t, n))
                worst = max(now.items(), key=lambda kv: kv[1], default=("-", 0))
                print(f"{t / 60:>6.1f} " + " ".join(f"{rss[n][-1][1] / 2**20:>10.0f}MB"
                                                    for n in pids)
                      + f"   {worst[1]} ({worst[0]})", flush=True)
            stop.set()
            load.join(timeout=120)
            dead = [n for n, pid in pids.items() if not psutil.pid_exists(pid)]
        finally:
            stack.down()
    warm = args.warmup * 60
    print(f"\nsoak: {args.channels} live channels, {args.minutes:g} min, samples every "
          f"{args.every:g} s, slope after {args.warmup:g} min of warm-up; "
          f"{done[0] if done else '?'} loops of {args.loop_s:g} s replayed; "
          f"cores={psutil.cpu_count()}")
    print(f"{'process':<16}{'RSS warm MB':>12}{'RSS end MB':>12}{'slope MB/h':>12}")
    for name, points in rss.items():
        after = [p for p in points if p[0] >= warm] or points
        print(f"{name:<16}{after[0][1] / 2**20:>12.0f}{after[-1][1] / 2**20:>12.0f}"
              f"{slope_mb_per_h(after):>12.1f}")
    print(f"{'consumer':<32}{'max lag after warm-up':>22}{'at the end':>12}")
    for durable, points in sorted(lag_seen.items()):
        after = [n for t, n in points if t >= warm] or [0]
        print(f"{durable:<32}{max(after):>22}{points[-1][1]:>12}")
    if dead:
        raise SystemExit(f"FAILED: processes died during the soak: {', '.join(dead)}")


if __name__ == "__main__":
    main()
