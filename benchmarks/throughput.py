"""Throughput of the whole pipeline on real audio: replay → bus → classifier → SQL.

    .venv/bin/python benchmarks/throughput.py --channels 32 --seconds 120

First the bus alone, on the same recording: a private nats-server, the same
replay, and one consumer process that decodes every chunk (as the classifier
receives them) and acks it, nothing else. Then the pipeline:

a private stack (embedded NATS + PostgreSQL + classifier(s) + projector) in
a temporary home, builds an N-channel recording from real corpus recordings (a
different one on each channel), replays it as fast as the bus takes it (or at
``--speed``), waits until every window is a committed SQL row, and prints:
the real-time factor (audio-seconds per wall-second), windows/s, the latency from
publishing a window's last chunk to its committed prediction row (p50/p99), and
CPU time and peak RSS per process, and the pipeline/bus ratio of real-time factors
(1.0: the pipeline is as fast as the bus lets anything be).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import wave
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import psutil

from audio.decode import decode_all
from bus.backlog import wait_idle
from bus.connect import connect, ensure_streams
from bus.process import stop_event_on_signals
from bus.publisher import Publisher
from bus.runner import Ack, ConsumerRunner, Delivery, Outcome
from bus_schemas import AudioChunk, ExtractionRule, ExtractionRulesSet, pcm
from bus_schemas.streams import (
    EXTRACTOR,
    GAIN_CONTROLLER,
    classifier_consumer,
    pipeline_durables,
)
from inference.modelfolder import ModelFolder
from inference.registry import DEFAULT_SELECTOR
from inference.windows import hop_samples
from learning.corpus.fetch import default_cache_dir, fetch_package
from learning.corpus.manifest import CorpusManifest
from producers.replay import Replayer, ReplayItem
from tidzam_ctl.settings import REPO_ROOT, CtlSettings
from tidzam_ctl.stack.nats import NatsServer
from tidzam_ctl.stack.stack import Stack

RATE = 48_000
START = datetime(2024, 1, 1, tzinfo=UTC)


def audio_windows(channels: int, seconds: float, model: Path, overlap: float) -> int:
    """The windows an N-channel recording of ``seconds`` holds on the model's grid."""
    window = ModelFolder.load(model).params.window_samples
    hop = hop_samples(window, overlap)
    n = int(seconds * RATE)
    return channels * (0 if n < window else (n - window) // hop + 1)


def build_recording(channels: int, seconds: float, out: Path, cache: Path,
                    offset: int = 0) -> Path:
    """An N-channel 16-bit WAV: each channel loops a different real corpus recording."""
    manifest = CorpusManifest.load(REPO_ROOT / "models" / "selector" / "corpus.json")
    files = sorted(manifest.files, key=lambda f: -(f.duration_s or 0.0))[:32]
    for package in sorted({f.package for f in files}):
        fetch_package(package, cache)
    n = int(seconds * RATE)
    data = np.zeros((n, channels), dtype=np.int16)
    for ch in range(channels):
        audio, _ = decode_all(cache / files[(ch + offset) % len(files)].local, RATE)
        mono = audio.mean(axis=0)
        looped = np.resize(mono, n)
        data[:, ch] = pcm.to_int16(looped)
    with wave.open(str(out), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(data.tobytes())
    return out


@dataclass
class ProcUsage:
    cpu_s: float = 0.0
    peak_rss: int = 0
    start_cpu: dict[int, float] = field(default_factory=dict)


class Sampler(threading.Thread):
    """CPU time and peak RSS of each stack process (PostgreSQL: with its backends).

    It runs in the benchmark's own process (the "replay" row): it samples every
    ``EVERY_S`` and walks the process trees (a scan of /proc) only every
    ``TREE_S``, so that measuring takes little of the CPU it measures."""

    EVERY_S = 0.5
    TREE_S = 2.0

    def __init__(self, pids: dict[str, int]) -> None:
        super().__init__(daemon=True)
        self.pids = pids
        self.usage = {name: ProcUsage() for name in pids}
        self.stop = threading.Event()
        self._trees: dict[str, list[psutil.Process]] = {}
        self._trees_at = -self.TREE_S

    def _procs(self, name: str) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.pids[name])
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def sample(self, final: bool = False) -> None:
        if final or time.monotonic() - self._trees_at >= self.TREE_S:
            self._trees = {name: self._procs(name) for name in self.usage}
            self._trees_at = time.monotonic()
        for name, usage in self.usage.items():
            rss, cpu = 0, 0.0
            for p in self._trees[name]:
                try:
                    t = p.cpu_times()
                    total = t.user + t.system
                    usage.start_cpu.setdefault(p.pid, total)
                    cpu += total - usage.start_cpu[p.pid]
                    rss += p.memory_info().rss
                except psutil.NoSuchProcess:
                    continue
            usage.cpu_s = max(usage.cpu_s, cpu)
            usage.peak_rss = max(usage.peak_rss, rss)

    def run(self) -> None:
        while not self.stop.is_set():
            self.sample()
            self.stop.wait(self.EVERY_S)
        self.sample(final=True)


def wait_started(pids: dict[str, int], timeout_s: float = 60.0) -> float:
    """Wait until the stack's processes are done starting (imports, model loads,
    consumers created): their CPU over a second below a tenth of a core. Steady state
    is what is measured, not start-up. Returns the seconds waited."""
    procs = []
    for pid in pids.values():
        try:
            root = psutil.Process(pid)
            procs += [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue

    def busy() -> float:
        total = 0.0
        for p in procs:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                continue
        return total

    started = time.monotonic()
    before = busy()
    while time.monotonic() - started < timeout_s:
        time.sleep(1.0)
        now = busy()
        if now - before < 0.1:
            break
        before = now
    return time.monotonic() - started


async def replay_and_wait(stack: Stack, wavs: list[Path], speed: float | None,
                          published: dict[tuple[str, int], float], classes: tuple[str, ...]
                          ) -> tuple[float, float, float]:
    """Replay every recording as its own source, all at once; wait for every row (and,
    when they run, for the extractor and the gain controller to have read everything).
    Returns when the replay started, ended, and when every consumer had caught up."""
    nc = await connect(stack.nats_url, "benchmark")
    await ensure_streams(nc.jetstream())
    durables = pipeline_durables("selector")
    if stack.settings.extractor:  # a rule that makes it work: samples of every class
        await Publisher(nc.jetstream()).publish_now(ExtractionRulesSet(
            rules=(ExtractionRule(classes=classes, rate="auto", cooldown_s=5.0),),
            at_ns=time.time_ns(), by="benchmark"))
        durables.append((EXTRACTOR.stream, EXTRACTOR.durable))
    if stack.settings.gain_control:
        durables.append((GAIN_CONTROLLER.stream, GAIN_CONTROLLER.durable))
    seqs: dict[str, int] = {}

    def on_chunk(source: str, _seconds: float) -> None:
        seq = seqs.get(source, 0)
        published[(source, seq)] = time.time()
        seqs[source] = seq + 1

    async def one(i: int, wav: Path) -> None:
        replayer = Replayer(Publisher(nc.jetstream()), sample_rate=RATE,
                            chunk_s=stack.settings.replay_chunk(speed), speed=speed,
                            progress=on_chunk)
        reports = await replayer.replay([ReplayItem(wav, f"bench{i}", START)])
        errors = [e for r in reports for e in r.errors]
        if errors:
            raise SystemExit(f"replay failed: {errors[0]}")

    t0 = time.time()
    await asyncio.gather(*(one(i, wav) for i, wav in enumerate(wavs)))
    t_pub = time.time()
    ok = await wait_idle(nc, durables, timeout_s=3600, settle_s=0.5)
    t_idle = time.time() - 0.5  # wait_idle saw every durable empty this long
    await nc.drain()
    if not ok:
        raise SystemExit("the pipeline did not catch up within an hour")
    return t0, t_pub, t_idle


async def latencies(stack: Stack, published: dict[tuple[str, int], float],
                    chunk_s: float) -> tuple[list[float], float, str]:
    """Per window: its committed row's time minus the publish time of the chunk holding
    the window's end; the time the last row was committed; what the loops did."""
    import psycopg

    async with await psycopg.AsyncConnection.connect(stack.database_url) as conn:
        cur = await conn.execute(
            "SELECT source, extract(epoch FROM end_time - %s::timestamptz), "
            "extract(epoch FROM projected_at) FROM predictions WHERE source LIKE 'bench%%'",
            (START,))
        rows = await cur.fetchall()
        cur = await conn.execute(
            "SELECT count(*), coalesce(sum(extract(epoch FROM end_time - time)), 0) "
            "FROM samples")
        n_samples, sample_s = await cur.fetchone() or (0, 0)
        cur = await conn.execute("SELECT kind, count(*) FROM mixer_log WHERE origin = 'auto' "
                                 "GROUP BY kind ORDER BY kind")
        mixer = ", ".join(f"{n} {kind}" for kind, n in await cur.fetchall()) or "none"
    loops = (f"samples extracted: {n_samples} ({float(sample_s):.0f} audio-s); "
             f"automatic mixer events: {mixer}")
    last_seq = {s: max(q for (src, q) in published if src == s) for s, _ in published}
    out = []
    last = 0.0
    for source, end_offset, projected in rows:
        chunk = min(int(float(end_offset) / chunk_s - 1e-9), last_seq[source])
        out.append(float(projected) - published[(source, chunk)])
        last = max(last, float(projected))
    return out, last, loops


async def consume_only(url: str) -> None:
    """The bus-alone consumer: decode and ack every chunk until SIGTERM, then print
    (on stdout, JSON) the chunks acked, the time of the last ack and the CPU used."""
    nc = await connect(url, "bench-bus-only")
    stop = stop_event_on_signals()
    last = [0.0, 0]

    async def handle(deliveries: Sequence[Delivery]) -> list[Outcome]:
        for d in deliveries:
            assert isinstance(d.event, AudioChunk)
            d.event.to_float32()
        last[0], last[1] = time.time(), last[1] + len(deliveries)
        return [Ack()] * len(deliveries)

    spec = classifier_consumer("bus-only")
    await ConsumerRunner(nc, spec, handle).run(stop)
    await nc.drain()
    cpu = sum(psutil.Process().cpu_times()[:2])
    print(json.dumps({"last_ack": last[0], "acked": last[1], "cpu_s": cpu}), flush=True)


def bus_alone(wavs: list[Path], tmp: Path, chunk_s: float) -> tuple[float, float, float]:
    """(seconds from the first publish to the last ack, replay CPU s, consumer CPU s)
    for the recordings through a private nats-server and a decode-and-ack consumer."""
    server = NatsServer.load_or_init(tmp / "bus-only")
    proc = server.spawn()
    try:
        server.wait_ready(proc)

        async def setup() -> None:
            nc = await connect(server.url, "bench-setup")
            await ensure_streams(nc.jetstream())
            await nc.drain()

        asyncio.run(setup())
        consumer = subprocess.Popen([sys.executable, __file__, "--consume-only", server.url],
                                    stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT)
        me = psutil.Process()
        cpu0 = sum(me.cpu_times()[:2])

        async def replay_all() -> tuple[float, int]:
            nc = await connect(server.url, "bench-replay")
            t0 = time.time()
            reports = await asyncio.gather(*(
                Replayer(Publisher(nc.jetstream()), sample_rate=RATE, chunk_s=chunk_s)
                .replay([ReplayItem(wav, f"bench{i}", START)]) for i, wav in enumerate(wavs)))
            ok = await wait_idle(nc, [("AUDIO", classifier_consumer("bus-only").durable)],
                                 timeout_s=3600,
                                 settle_s=0.5)
            await nc.drain()
            if not ok:
                raise SystemExit("the bus-only consumer did not catch up")
            return t0, sum(r.chunks for rs in reports for r in rs)

        t0, chunks = asyncio.run(replay_all())
        replay_cpu = sum(me.cpu_times()[:2]) - cpu0
        consumer.send_signal(signal.SIGTERM)
        out, _ = consumer.communicate(timeout=60)
        result = json.loads(out.strip().splitlines()[-1])
        if result["acked"] < chunks:
            raise SystemExit(f"the bus-only consumer acked {result['acked']} of {chunks}")
        return result["last_ack"] - t0, replay_cpu, result["cpu_s"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--consume-only":
        asyncio.run(consume_only(sys.argv[2]))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--channels", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--classifiers", type=int, default=1, help="classifier instances")
    ap.add_argument("--speed", default="max", help="N times real time, or max")
    ap.add_argument("--overlap", type=float, default=0.25)
    ap.add_argument("--model", type=Path, default=DEFAULT_SELECTOR,
                    help="the selector's model folder (default: the YAMNet-based one; "
                         "models/selector-fast is the distilled CNN, models/selector the "
                         "first log-mel selector)")
    ap.add_argument("--per-source", type=int, default=32,
                    help="channels per source (one stream each; at most 64)")
    ap.add_argument("--without-loops", action="store_true",
                    help="run neither the sample extractor nor the gain controller (by "
                    "default both run, the extractor with a rule saving samples of every "
                    "class at rate auto, 5 s cooldown)")
    ap.add_argument("--extract-classes", default="*", metavar="PATTERNS",
                    help="the extraction rule's classes, comma-separated (default '*': "
                    "every window a candidate, the heaviest load; 'unknown' is the "
                    "README's example rule)")
    ap.add_argument("--cache", type=Path, default=None,
                    help="where the corpus packages are (default: the home's corpus folder)")
    ap.add_argument("--min-ratio", type=float, default=None, metavar="R",
                    help="exit 1 if the pipeline/bus ratio is below R (CI runs a small "
                    "size with this: a regression shows as a ratio, whatever the host's "
                    "speed that day)")
    args = ap.parse_args()
    speed = None if args.speed == "max" else float(args.speed)
    with tempfile.TemporaryDirectory(prefix="tidzam-bench-") as tmp:
        home = Path(tmp) / "home"
        wavs = []  # sources of at most --per-source channels, like real microphone streams
        for i, first in enumerate(range(0, args.channels, args.per_source)):
            n = min(args.per_source, args.channels - first)
            wavs.append(build_recording(n, args.seconds, Path(tmp) / f"bench{i}.wav",
                                        args.cache or default_cache_dir(), offset=first))
        loops = not args.without_loops
        stack = Stack(CtlSettings(home=home, classifiers=args.classifiers,
                                  overlap=args.overlap, model_dir=args.model,
                                  extractor=loops, gain_control=loops))
        chunk_s = stack.settings.replay_chunk(speed)  # the bus alone carries the same chunks
        bus_wall, bus_replay_cpu, bus_consumer_cpu = bus_alone(wavs, Path(tmp), chunk_s)
        try:
            stack.up()
            names = ["nats", "postgres", *[p.name for p in stack.processes()]]
            pids = {n: stack.pid_of(n) for n in names if n != "postgres"}
            pg = stack.pg.status().pid if stack.pg else None
            if pg:
                pids["postgres"] = pg
            waited = wait_started({n: p for n, p in pids.items() if p})
            print(f"processes started and idle after {waited:.1f} s", file=sys.stderr)
            sampler = Sampler({n: p for n, p in pids.items() if p})
            sampler.start()
            published: dict[tuple[str, int], float] = {}
            me = psutil.Process()
            cpu0 = sum(me.cpu_times()[:2])
            t0, t_pub, t_idle = asyncio.run(replay_and_wait(
                stack, wavs, speed, published, tuple(args.extract_classes.split(","))))
            sampler.stop.set()
            sampler.join()
            replay_cpu = sum(me.cpu_times()[:2]) - cpu0
            lat, t_end, loops_done = asyncio.run(
                latencies(stack, published, chunk_s))
        finally:
            stack.down()
            log = stack.log_dir / "extractor.log"
            drained = [ln for ln in log.read_text().splitlines() if "drained" in ln] \
                if log.exists() else []
    if drained:
        print(drained[-1].split("] ", 1)[-1], file=sys.stderr)
    wall = t_end - t0
    audio_s = args.channels * args.seconds
    lat.sort()
    meta = ModelFolder.load(args.model).meta
    print(f"model {meta.model_id}@{meta.version} ({args.model})")
    print(f"channels={args.channels} in {len(wavs)} source(s) seconds={args.seconds} "
          f"classifiers={args.classifiers} "
          f"extractor+gain controller="
          f"{f'on (classes {args.extract_classes})' if not args.without_loops else 'off'} "
          f"overlap={args.overlap} speed={args.speed} chunk={chunk_s:g} s "
          f"cores={psutil.cpu_count()}")
    print(f"audio: {audio_s:.0f} channel-seconds; published in {t_pub - t0:.2f} s; "
          f"all rows committed after {wall:.2f} s")
    print(f"bus alone (replay → NATS → decode + ack): {bus_wall:.2f} s, "
          f"{audio_s / bus_wall:.1f}x real time; replay CPU {bus_replay_cpu:.1f} s, "
          f"consumer CPU {bus_consumer_cpu:.1f} s")
    print(f"real-time factor: {audio_s / wall:.1f} audio-s per wall-s "
          f"(pipeline/bus ratio {bus_wall / wall:.2f})")
    print(f"windows: {len(lat)} -> {len(lat) / wall:.0f} windows/s")
    if loops:
        print(f"{loops_done}; every consumer caught up after {t_idle - t0:.2f} s (the "
              "extractor gives way while the classifiers have a backlog)")
    if lat:
        p50 = statistics.median(lat)
        p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
        print(f"latency publish -> committed row: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms")
    print(f"{'process':<14}{'CPU s':>8}{'CPU %':>8}{'peak RSS MB':>13}"
          "   (CPU % of one core over the wall time above)")
    print(f"{'replay':<14}{replay_cpu:>8.1f}{100 * replay_cpu / wall:>8.0f}"
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:>13.0f}")
    for name, u in sampler.usage.items():
        print(f"{name:<14}{u.cpu_s:>8.1f}{100 * u.cpu_s / wall:>8.0f}{u.peak_rss / 2**20:>13.0f}")
    expected = audio_windows(args.channels, args.seconds, args.model, args.overlap)
    if len(lat) != expected:
        raise SystemExit(f"FAILED: {len(lat)} windows committed, {expected} expected")
    if args.min_ratio is not None and bus_wall / wall < args.min_ratio:
        raise SystemExit(f"FAILED: pipeline/bus ratio {bus_wall / wall:.2f} is below "
                         f"{args.min_ratio:g}")


if __name__ == "__main__":
    main()
