"""How many socket.io clients one gateway process serves the live predictions of 32
channels to, with p99 delivery latency ≤ 250 ms.

    .venv/bin/python benchmarks/gateway.py --clients 10,100,250,500,1000 --seconds 20

Real parts, each its own process: a private nats-server with JetStream, an embedded
PostgreSQL (the gateway opens its pool at start; nothing is queried), the gateway
(``python -m projections.gateway.service``, ``TIDZAM_*`` environment), and the
clients: N ``socketio.AsyncClient`` (websocket transport) spread over ``--workers``
processes, each one asyncio loop, so the gateway's CPU is its own.

Load: this process publishes, with ``bus.publisher.Publisher``, one
``bus_schemas.Prediction`` per channel (``--channels``, default 32, one source)
every ``--hop`` seconds (1.4625 s, the default window grid: a 1.95 s window,
overlap 0.25), over the default model's labels, all channels of a hop at once
(as a classifier's batch). Each window's ``window_start_ns`` is the wall clock just
before it is published, so the ``analysis.time`` a client receives (UTC, ms) is its
publish time: latency = receive time − publish time, on the same clock (to 1 ms:
the broadcast's time has ms resolution). It includes the JetStream store, the core
NATS delivery to the gateway, its gathering (0.1 s) and the websocket.

Steps: for each ``--clients`` count, fresh worker processes connect the clients
(all in room ``all``: every window of every channel); after a settling second the
windows published during ``--seconds`` are measured: each client should get every
one; one still missing ``--grace`` seconds after the step is counted lost. Per step:
clients connected, windows per client (min / mean / max of the expected), lost
deliveries, latency p50 / p99 / max, the gateway's CPU (% of one core) and RSS
(peak), and the busiest client process's CPU % and p99 event-loop lag (a 10 ms
timer's lateness: a lag near the latency means the clients, not the gateway, limit
the figures; give them more ``--workers``). Then the largest step whose clients all
connected, lost nothing and had p99 ≤ ``--p99-ms``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from bus.connect import connect, ensure_streams
from bus.publisher import Publisher
from bus_schemas import Prediction
from inference.modelfolder import ModelFolder
from inference.registry import DEFAULT_SELECTOR
from tidzam_ctl.settings import REPO_ROOT
from tidzam_ctl.stack.nats import NatsServer
from tidzam_ctl.stack.ports import free_port
from tidzam_ctl.stack.postgres import EmbeddedPostgres

SOURCE = "bench"
WINDOW_NS = 1_950_000_000
FAST_PG = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
CONNECTING = 20  # connections a worker opens at once


# ------------------------------------------------------------------ the clients


def _epoch_ms(seed_time: str) -> int:
    """``YYYY-MM-DD-HH-MM-SS.mmm`` (UTC, the broadcast's time) → ms since the epoch."""
    head, ms = seed_time.rsplit(".", 1)
    t = datetime.strptime(head, "%Y-%m-%d-%H-%M-%S").replace(tzinfo=UTC)
    return int(t.timestamp()) * 1000 + int(ms)


async def worker(url: str, n: int) -> None:
    """N clients; stdin lines drive it: ``start`` (record from now), ``stop T0 T1``
    (report, as one JSON line on stdout, the windows published in [T0, T1) ms)."""
    import socketio

    times: dict[str, int] = {}  # every client gets the same strings: parse each once
    recording = False
    got: list[list[tuple[int, float]]] = [[] for _ in range(n)]
    dropped = [0]

    def client(i: int) -> Any:
        sio = socketio.AsyncClient(reconnection=False, handle_sigint=False)

        async def on_sys(data: Any) -> None:
            now_ms = time.time_ns() / 1e6
            if not recording or not isinstance(data, list):
                return
            for item in data:
                stamp = item["analysis"]["time"]
                pub = times.get(stamp)
                if pub is None:
                    pub = times[stamp] = _epoch_ms(stamp)
                got[i].append((pub, now_ms - pub))

        async def on_disconnect(*_: Any) -> None:
            if recording:
                dropped[0] += 1

        sio.on("sys", on_sys)
        sio.on("disconnect", on_disconnect)
        return sio

    clients = [client(i) for i in range(n)]
    gate = asyncio.Semaphore(CONNECTING)
    errors: list[str] = []

    async def connect_one(sio: Any) -> bool:
        async with gate:
            try:
                await sio.connect(url, transports=["websocket"], wait_timeout=30)
                return True
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                return False

    t = time.monotonic()
    ok = await asyncio.gather(*(connect_one(c) for c in clients))
    print(json.dumps({"connected": sum(ok), "connect_s": time.monotonic() - t,
                      "errors": errors[:3]}), flush=True)
    lags: list[float] = []

    async def probe() -> None:  # how late this loop runs a 10 ms timer: its backlog
        while True:
            t = time.monotonic()
            await asyncio.sleep(0.01)
            if recording:
                lags.append(time.monotonic() - t - 0.01)

    probing = asyncio.create_task(probe())
    me = psutil.Process()
    cpu0 = wall0 = 0.0
    commands = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(commands), sys.stdin)
    while line := await commands.readline():  # EOF: the benchmark is gone, so go too
        words = line.decode().split()
        if words[0] == "start":
            recording = True
            cpu0, wall0 = sum(me.cpu_times()[:2]), time.monotonic()
        elif words[0] == "stop":
            recording = False
            t0, t1 = int(words[1]), int(words[2])
            cpu = sum(me.cpu_times()[:2]) - cpu0
            hist: Counter[int] = Counter()
            counts = []
            for deliveries in (g for g, up in zip(got, ok, strict=True) if up):
                kept = [lat for pub, lat in deliveries if t0 <= pub < t1]
                counts.append(len(kept))
                hist.update(round(lat) for lat in kept)
            lags.sort()
            print(json.dumps({"counts": counts, "hist": hist, "dropped": dropped[0],
                              "cpu_pct": 100 * cpu / (time.monotonic() - wall0),
                              "lag_ms": 1000 * lags[int(0.99 * len(lags))] if lags else 0.0}),
                  flush=True)
            break
    probing.cancel()
    await asyncio.gather(*(c.disconnect() for c, up in zip(clients, ok, strict=True) if up),
                         return_exceptions=True)


# ----------------------------------------------------------------- the load


class Load:
    """Predictions of every channel each hop, on an absolute schedule (no drift)."""

    def __init__(self, url: str, channels: int, hop_s: float) -> None:
        self.url, self.channels, self.hop_s = url, channels, hop_s
        meta = ModelFolder.load(DEFAULT_SELECTOR).meta
        self.model_id, self.version, self.labels = meta.model_id, meta.version, meta.labels
        self.published_ms: list[int] = []  # each window's publish time (its analysis.time)
        self.late = 0  # hops that started more than a hop late (this process too slow)

    def prediction(self, channel: int, rng: random.Random) -> Prediction:
        raw = [rng.random() ** 4 for _ in self.labels]
        total = sum(raw)
        scores = tuple(round(s / total, 6) for s in raw)
        best = max(range(len(scores)), key=scores.__getitem__)
        now = time.time_ns()
        return Prediction(
            source=SOURCE, channel=channel, window_start_ns=now, window_end_ns=now + WINDOW_NS,
            model_id=self.model_id, model_version=self.version, labels=tuple(self.labels),
            scores=scores, result=(self.labels[best] if scores[best] > 0.5 else "unknown",),
            origin_ns=now)

    async def run(self, stop: asyncio.Event) -> None:
        nc = await connect(self.url, "bench-gateway-load")
        publisher = Publisher(nc.jetstream())
        rng = random.Random(7)
        start = time.monotonic()
        k = 0
        try:
            while not stop.is_set():
                delay = start + k * self.hop_s - time.monotonic()
                if delay < -self.hop_s:
                    self.late += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), max(0.0, delay))
                if stop.is_set():
                    break
                for ch in range(self.channels):
                    event = self.prediction(ch, rng)
                    self.published_ms.append(event.window_start_ns // 1_000_000)
                    await publisher.publish(event)
                k += 1
            await publisher.flush()
        finally:
            await nc.drain()


# ----------------------------------------------------------------- the steps


@dataclass
class Step:
    clients: int
    connected: int
    connect_s: float
    expected: int
    counts: list[int]
    hist: Counter[int]
    dropped: int
    gw_cpu_pct: float
    gw_rss: int
    worker_cpu_pct: float
    worker_lag_ms: float

    @property
    def lost(self) -> int:
        return sum(max(0, self.expected - c) for c in self.counts) \
            + self.expected * (self.clients - self.connected)

    def percentile(self, q: float) -> float:
        total = sum(self.hist.values())
        if not total:
            return float("nan")
        rank, seen = q * (total - 1), 0
        for ms in sorted(self.hist):
            seen += self.hist[ms]
            if seen > rank:
                return float(ms)
        return float(max(self.hist))

    def passes(self, p99_ms: float) -> bool:
        return self.connected == self.clients and self.lost == 0 \
            and self.percentile(0.99) <= p99_ms


async def step(url: str, gateway: psutil.Process, load: Load, clients: int, workers: int,
               seconds: float, grace: float) -> Step:
    shares = [clients // workers + (i < clients % workers) for i in range(workers)]
    procs = [await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--worker", url, str(n), cwd=REPO_ROOT,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE) for n in shares if n]
    try:
        async def line(p: asyncio.subprocess.Process, timeout: float) -> dict[str, Any]:
            assert p.stdout is not None
            raw = await asyncio.wait_for(p.stdout.readline(), timeout)
            if not raw:
                raise SystemExit(f"a client worker exited (rc {await p.wait()})")
            result: dict[str, Any] = json.loads(raw)
            return result

        async def say(text: str) -> None:
            for p in procs:
                assert p.stdin is not None
                p.stdin.write(text.encode() + b"\n")
                await p.stdin.drain()

        ready = await asyncio.gather(*(line(p, 120 + clients * 0.1) for p in procs))
        for r in ready:
            for error in r["errors"]:
                print(f"  connect failed: {error}", file=sys.stderr)
        await asyncio.sleep(1.0)  # the last handshakes and room joins settle
        await say("start")
        await asyncio.sleep(0.5)
        t0 = time.time_ns() // 1_000_000
        cpu0 = sum(gateway.cpu_times()[:2])
        rss = 0
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            rss = max(rss, gateway.memory_info().rss)
            await asyncio.sleep(min(0.5, left))
        t1 = time.time_ns() // 1_000_000
        gw_cpu = 100 * (sum(gateway.cpu_times()[:2]) - cpu0) / seconds
        rss = max(rss, gateway.memory_info().rss)
        await asyncio.sleep(grace)
        await say(f"stop {t0} {t1}")
        results = await asyncio.gather(*(line(p, 60) for p in procs))
        await asyncio.gather(*(asyncio.wait_for(p.wait(), 60) for p in procs))
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
    hist: Counter[int] = Counter()
    for r in results:
        hist.update({int(k): v for k, v in r["hist"].items()})
    return Step(
        clients=clients, connected=sum(r["connected"] for r in ready),
        connect_s=max(r["connect_s"] for r in ready),
        expected=sum(1 for ms in load.published_ms if t0 <= ms < t1),
        counts=[c for r in results for c in r["counts"]], hist=hist,
        dropped=sum(r["dropped"] for r in results), gw_cpu_pct=gw_cpu, gw_rss=rss,
        worker_cpu_pct=max(r["cpu_pct"] for r in results),
        worker_lag_ms=max(r["lag_ms"] for r in results))


def report(s: Step) -> None:
    counts = s.counts or [0]
    print(f"{s.clients:>8}{s.connected:>10}{s.connect_s:>8.1f}"
          f"{min(counts):>8}{sum(counts) / len(counts):>7.1f}{max(counts):>6}/{s.expected:<5}"
          f"{s.lost:>8}{s.percentile(0.5):>7.0f}{s.percentile(0.99):>7.0f}"
          f"{max(s.hist, default=float('nan')):>7.0f}"
          f"{s.gw_cpu_pct:>8.0f}{s.gw_rss / 2**20:>8.0f}"
          f"{s.worker_cpu_pct:>9.0f}{s.worker_lag_ms:>8.0f}", flush=True)
    if s.dropped:
        print(f"         {s.dropped} client(s) disconnected during the step", flush=True)


HEADER = (f"{'clients':>8}{'connected':>10}{'conn s':>8}"
          f"{'win min':>8}{'mean':>7}{'max':>6}/{'exp':<5}{'lost':>8}"
          f"{'p50 ms':>7}{'p99 ms':>7}{'max ms':>7}{'gw CPU%':>8}{'gw MB':>8}"
          f"{'cli CPU%':>9}{'cli lag':>8}")


# ------------------------------------------------------------ the processes


def raise_fd_limit() -> None:
    """Children inherit it: the gateway holds a socket per client."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65_536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def start_gateway(home: Path, nats_url: str, dsn: str, port: int
                  ) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDZAM_")}
    env.update(TIDZAM_NATS_URL=nats_url, TIDZAM_DATABASE_URL=dsn, TIDZAM_HOME=str(home),
               TIDZAM_GATEWAY_HOST="127.0.0.1", TIDZAM_GATEWAY_PORT=str(port),
               TIDZAM_GATEWAY_PUBLIC_READ="true")
    log = open(home / "gateway.log", "ab")  # noqa: SIM115 - handed to the child
    return subprocess.Popen([sys.executable, "-m", "projections.gateway.service"],
                            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_gateway(proc: subprocess.Popen[bytes], home: Path, port: int,
                 timeout_s: float = 60) -> None:
    import socket

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    tail = (home / "gateway.log").read_text(errors="replace")[-3000:]
    raise SystemExit(f"the gateway did not start on port {port}:\n{tail}")


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 20) -> int | None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
            return None
    return proc.returncode


async def bench(args: argparse.Namespace, nats: NatsServer, gateway: psutil.Process,
                port: int) -> list[Step]:
    nc = await connect(nats.url, "bench-setup")
    await ensure_streams(nc.jetstream())
    await nc.drain()
    load = Load(nats.url, args.channels, args.hop)
    stop = asyncio.Event()
    publishing = asyncio.create_task(load.run(stop))
    steps: list[Step] = []
    try:
        await asyncio.sleep(2 * args.hop)  # the gateway is receiving before clients come
        print(HEADER, flush=True)
        for n in args.clients:
            s = await step(f"http://127.0.0.1:{port}", gateway, load, n,
                           min(args.workers, n), args.seconds, args.grace)
            steps.append(s)
            report(s)
            if gateway.status() == psutil.STATUS_ZOMBIE:
                raise SystemExit("the gateway exited during the step")
            await asyncio.sleep(1.0)  # the gateway forgets the last step's clients
    finally:
        stop.set()
        await publishing
    if load.late:
        print(f"warning: {load.late} hop(s) published late (this process was starved)")
    return steps


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is the benchmark's to handle
        asyncio.run(worker(sys.argv[2], int(sys.argv[3])))
        return
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--clients", default="10,100,250,500,1000",
                    help="client counts of the steps, comma-separated (default %(default)s)")
    ap.add_argument("--seconds", type=float, default=20.0,
                    help="measured seconds per step, after every client connected "
                         "(default %(default)s)")
    ap.add_argument("--channels", type=int, default=32,
                    help="channels of the one source (default %(default)s)")
    ap.add_argument("--hop", type=float, default=1.4625,
                    help="seconds between a channel's windows (default %(default)s: "
                         "real time at the default window grid)")
    cores = psutil.cpu_count() or 2
    ap.add_argument("--workers", type=int, default=4 if cores >= 8 else 2,
                    help="client processes the clients are spread over (default 4 on 8+ "
                         "cores, else 2; here %(default)s)")
    ap.add_argument("--grace", type=float, default=3.0,
                    help="seconds after a step a window may still arrive before it counts "
                         "lost (default %(default)s)")
    ap.add_argument("--p99-ms", type=float, default=250.0,
                    help="the latency budget of a served step (default %(default)s)")
    args = ap.parse_args()
    args.clients = [int(c) for c in args.clients.split(",") if c.strip()]
    raise_fd_limit()
    with tempfile.TemporaryDirectory(prefix="tidzam-bench-gw-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        nats = NatsServer.load_or_init(Path(tmp) / "nats")
        nats_proc = nats.spawn()
        pg = EmbeddedPostgres(Path(tmp) / "postgres")
        gw_proc: subprocess.Popen[bytes] | None = None
        steps: list[Step] | None
        try:
            nats.wait_ready(nats_proc)
            pg.init(settings=FAST_PG)
            pg.start()
            port = free_port()
            gw_proc = start_gateway(home, nats.url, pg.url, port)
            wait_gateway(gw_proc, home, port)
            print(f"gateway pid {gw_proc.pid} on port {port}; {args.channels} channels every "
                  f"{args.hop} s ({args.channels / args.hop:.1f} windows/s); "
                  f"{args.workers} client processes; {cores} cores", flush=True)
            steps = asyncio.run(bench(args, nats, psutil.Process(gw_proc.pid), port))
        except KeyboardInterrupt:
            print("interrupted: stopping every process", file=sys.stderr)
            steps = None
        finally:
            rc = stop_process(gw_proc) if gw_proc is not None else 0
            if rc not in (0, -signal.SIGTERM):
                tail = (home / "gateway.log").read_text(errors="replace")[-2000:]
                print(f"the gateway exited with {rc}:\n{tail}", file=sys.stderr)
            pg.stop()
            nats_proc.terminate()
            try:
                nats_proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                nats_proc.kill()
    if steps is None:
        raise SystemExit(130)
    served = [s for s in steps if s.passes(args.p99_ms)]
    print("latency: publish → a client's handler (ms); windows: per client, of the "
          "expected; lost: deliveries missing; gw CPU: % of one core; cli CPU, cli lag: "
          "the busiest client process's CPU and p99 event-loop lag (ms)")
    if served:
        best = max(served, key=lambda s: s.clients)
        print(f"largest step served (all connected, nothing lost, p99 ≤ {args.p99_ms:.0f} ms): "
              f"{best.clients} clients (p99 {best.percentile(0.99):.0f} ms)")
    else:
        print(f"no step served (all connected, nothing lost, p99 ≤ {args.p99_ms:.0f} ms)")
    for s in steps:
        if s.clients in (100, 500):
            print(f"at {s.clients} clients: p50 {s.percentile(0.5):.0f} ms, "
                  f"p99 {s.percentile(0.99):.0f} ms")


if __name__ == "__main__":
    main()
