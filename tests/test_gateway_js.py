"""The gateway driven by the JavaScript ``socket.io-client`` from npm, run by Node, as
the original's browser pages and phone apps talk to it: every request of the seed's API
(``sys``, ``SampleExtractionRules``, ``audio``), the rooms and the per-window broadcasts,
and who may do what, against a real gateway (uvicorn on a real port), a real nats-server,
PostgreSQL and the live producer (``producers.live_service``) behind the bus.

``tests/js/seed_client.mjs`` prints one JSON line per result; this test publishes the
windows when it says ``ready`` and judges every line. The npm packages are installed
from ``tests/js/package-lock.json`` (``npm ci``) into ``~/.cache/tidzam/npm/<hash>``,
outside the repository, and reused while the lock is the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from nats.aio.client import Client
from nats.errors import NoRespondersError
from psycopg_pool import AsyncConnectionPool
from pydantic import SecretStr

from audio.decode import decode_all
from audio.resample import PcmResampler
from bus.history import read_rule_sets, read_subject
from bus.publisher import Publisher
from bus_schemas import (
    AudioChunk,
    LiveStreamClosed,
    LiveStreamOpened,
    ModelDeployed,
    SourceAdded,
    SourceRemoved,
)
from bus_schemas import subjects as subj
from bus_schemas.live import LiveRequest
from bus_schemas.requests import pack_request
from bus_schemas.streams import AUDIO, CONTROL
from producers.live_service import LiveSettings
from producers.live_service import run as run_live
from tests.fixtures_pg import LABELS, prediction
from tests.gateway_served import Served, serve
from tests.real_audio import MEGAGLEST, RAIN, real_file
from tidzam_ctl.stack.nats import NatsServer

JS = Path(__file__).parent / "js"
SCRIPT = JS / "seed_client.mjs"
T0_NS = int(datetime(2025, 6, 15, 12, 0, tzinfo=UTC).timestamp() * 1e9)
PHONE_RATE = 44_100
NODE_TIMEOUT_S = 30.0
BUFFER_SAMPLES = 4096  # what the script sends per `audio` request

# the windows published at each `ready` of the script: (start, channel)
BATCHES = {1: [(T0_NS + k * 500_000_000, k % 2) for k in range(6)],
           2: [(T0_NS + 100 * 10**9 + k * 500_000_000, k % 2) for k in range(4)],
           3: [(T0_NS + 200 * 10**9, 0), (T0_NS + 200 * 10**9, 1)]}


# ------------------------------------------------------------------- node and npm


def _tool(name: str) -> str:
    found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists()
                                   else None)
    if found is None:
        pytest.fail(f"`{name}` is not installed: this test runs the JavaScript socket.io "
                    "client with Node (Debian: apt-get install nodejs npm)")
    return found


def node_modules() -> Path:
    """``node_modules`` of ``tests/js`` installed by ``npm ci`` in a cache outside the
    repository, keyed by the hash of package.json and package-lock.json; reused."""
    digest = hashlib.sha256()
    for name in ("package.json", "package-lock.json"):
        digest.update((JS / name).read_bytes())
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    home = cache / "tidzam" / "npm" / digest.hexdigest()[:16]
    modules = home / "node_modules"
    if (modules / "socket.io-client" / "package.json").is_file():
        return modules
    npm = _tool("npm")
    home.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=home.parent, prefix=".install-"))
    try:
        for name in ("package.json", "package-lock.json"):
            shutil.copy(JS / name, work / name)
        done = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
                              cwd=work, capture_output=True, text=True, timeout=300,
                              check=False)
        if done.returncode != 0:
            pytest.fail(f"npm ci of tests/js failed:\n{done.stdout}\n{done.stderr}")
        with contextlib.suppress(OSError):  # another run installed it meanwhile: same files
            work.rename(home)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not (modules / "socket.io-client" / "package.json").is_file():
        pytest.fail(f"npm ci left no socket.io-client in {modules}")
    return modules


# --------------------------------------------------------------------- the servers


@pytest.fixture
async def served(nc: Client, nats_server: NatsServer, pg_pool: AsyncConnectionPool[Any],
                 pg_dsn: str, tmp_path: Path) -> AsyncIterator[Served]:
    """The gateway on a real port, following the bus, with the live producer behind it."""
    stop = asyncio.Event()
    live = asyncio.create_task(run_live(LiveSettings(nats_url=SecretStr(nats_server.url)),
                                        stop))
    try:
        async with serve(nc, pg_pool, pg_dsn, tmp_path) as gateway:
            for _ in range(200):
                if await _live_answers(nc):
                    break
                assert not live.done(), live
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the live producer did not start")
            yield gateway
    finally:
        stop.set()
        await asyncio.wait_for(live, 20)


async def _live_answers(nc: Client) -> bool:
    """Whether the live producer answers (an ``open`` has no effect on the bus)."""
    try:
        await nc.request(subj.LIVE_IN, pack_request(LiveRequest(op="open", client="probe:x")),
                         timeout=1)
    except (NoRespondersError, TimeoutError):
        return False
    return True


# ---------------------------------------------------------------------- the client


def phone_pcm(path: Path) -> np.ndarray[Any, np.dtype[np.int16]]:
    """3 s of a real recording (a storm), mono PCM16 at 44.1 kHz, as a phone sends it."""
    rain, _ = decode_all(real_file(MEGAGLEST, RAIN), PHONE_RATE)
    pcm = (rain[0, : 3 * PHONE_RATE] * 32767).astype("<i2")
    path.write_bytes(pcm.tobytes())
    return pcm


def said(log: Path) -> str:
    """What the Node script wrote on stderr (a few lines at most)."""
    return log.read_text(errors="replace")[-4000:]


async def run_client(config: dict[str, Any], nc: Client,
                     log: Path) -> dict[str, list[dict[str, Any]]]:
    """Run the Node script (its stderr to ``log``); its lines by step (in order),
    publishing each batch of windows when it is ready for them."""
    publisher = Publisher(nc.jetstream())
    steps: dict[str, list[dict[str, Any]]] = {}
    with log.open("wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            _tool("node"), str(SCRIPT), json.dumps(config), stdout=asyncio.subprocess.PIPE,
            stderr=stderr)

    async def read() -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            line = json.loads(raw)
            steps.setdefault(line["step"], []).append(line)
            if line["step"] == "ready":
                await publisher.publish_all([prediction(start, channel=channel)
                                             for start, channel in BATCHES[line["batch"]]])

    try:
        await asyncio.wait_for(asyncio.gather(read(), proc.wait()), NODE_TIMEOUT_S)
    except TimeoutError:
        raise AssertionError(f"the Node client ran past {NODE_TIMEOUT_S} s after "
                             f"{sorted(steps)}: {said(log)}") from None
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, f"node exited {proc.returncode}: {said(log)}"
    assert "done" in steps, said(log)
    return steps


def reply(steps: dict[str, list[dict[str, Any]]], step: str) -> Any:
    [line] = steps[step]
    return line["reply"]


def portname(sid: str) -> str:
    """The live producer's name for a client's stream (``LiveInputs.portname``)."""
    return "live-" + re.sub(r"[^A-Za-z0-9]", "", sid)[:12]


def window(start_ns: int, channel: int) -> dict[str, Any]:
    """A published window as the seed's clients must receive it."""
    time = datetime.fromtimestamp(start_ns // 1_000_000 / 1000, UTC)
    scores = dict(zip(LABELS, (0.9, 0.05, 0.02, 0.02, 0.01), strict=True))
    return {"chan": channel, "source": "mic",
            "analysis": {"time": time.strftime("%Y-%m-%d-%H-%M-%S.")
                         + f"{time.microsecond // 1000:03d}",
                         "result": ["birds"], "predicitions": scores, "predictions": scores,
                         "model": "selector@1"}}


def windows(batch: int, channels: tuple[int, ...] = (0, 1)) -> list[dict[str, Any]]:
    return [window(start, channel) for start, channel in sorted(BATCHES[batch])
            if channel in channels]


def heard(clients: dict[str, list[dict[str, Any]]]) -> dict[str, list[tuple[int, str]]]:
    """(channel, time) of the windows each client heard, for a readable difference."""
    return {name: [(w["chan"], w["analysis"]["time"][11:]) for w in got]
            for name, got in clients.items()}


# -------------------------------------------------------------------------- the test


async def test_the_javascript_client_speaks_the_seeds_api(served: Served, nc: Client,
                                                          tmp_path: Path) -> None:
    _tool("node")  # missing: a failure that says so, before anything else
    modules = await asyncio.to_thread(node_modules)
    js = nc.jetstream()
    await Publisher(js).publish_now(ModelDeployed(
        model_id="selector", model_version="2.0.0", sha256="0" * 64,
        path="models/x", labels=LABELS,
        feature_params={}, at_ns=T0_NS))
    pcm = phone_pcm(tmp_path / "phone.pcm")
    steps = await run_client({"url": served.url, "control": served.control,
                              "reader": served.reader, "pcm": str(tmp_path / "phone.pcm"),
                              "samplerate": PHONE_RATE, "modules": str(modules)}, nc,
                             tmp_path / "node.log")

    [connected] = steps["connected"]
    assert connected["version"] == json.loads((JS / "package.json").read_text())[
        "dependencies"]["socket.io-client"]
    # `anon` came by long-polling (a browser's default) and was upgraded; the others
    # asked for a websocket (a phone app's way)
    assert connected["transports"] == ["polling", "websocket", "websocket"]
    assert steps["upgraded"][0]["transport"] == "websocket"

    # ------------------------------------------------------------------ sys
    assert reply(steps, "classifier_list") == {"sys": {"classifier": {"list": [
        {"name": "selector", "version": "2.0.0", "labels": list(LABELS)}]}}}
    assert reply(steps, "database") == {"sys": {"database": {"pond": {
        "nb_channels": 2,
        "database": [["2025-06-15T12:00:00+00:00", "2025-06-15T12:00:03+00:00"]]}}}}
    refused = {"error": "loading or unloading a source needs a control token"}
    assert reply(steps, "loadsource_anonymous") == refused
    assert reply(steps, "loadsource_reader") == refused
    assert reply(steps, "loadsource_control") == {"sys": {"loadsource": "marsh"}}
    assert reply(steps, "unload_seed_spelling") == {"sys": {"unloadsource": "marsh"}}
    assert reply(steps, "unloadsource") == {"sys": {"unloadsource": "marsh"}}
    assert reply(steps, "loadsource_local_file")["error"].startswith(
        "url must be a network stream")
    assert reply(steps, "not_a_json") == {"error": "request must be a JSON."}
    assert reply(steps, "unknown_sys") == {"error": "unknown request ['reboot']"}
    # each answer also came as a `sys` event, in order
    assert steps["sys_events"][0]["heard"] == [
        reply(steps, step) for step in ("classifier_list", "database", "loadsource_anonymous",
                                        "not_a_json", "unknown_sys")]
    added, _ = await read_subject(js, CONTROL.name, subj.CTL_ALL, SourceAdded)
    removed, _ = await read_subject(js, CONTROL.name, subj.CTL_ALL, SourceRemoved)
    assert [(e.source, e.kind, e.location, e.channels, e.permanent, e.database, e.date_ns,
             e.format) for _, e in added] == [
        ("marsh", "archive", "http://radio.example.org/marsh.ogg", (0, 1), True,
         str(served.archive / "pond"), T0_NS + 1_000_000_000, "ogg")]
    assert [e.source for _, e in removed] == ["marsh", "marsh"]  # the refused published none

    # ------------------------------------------------ SampleExtractionRules
    assert reply(steps, "get_rules_before") == {"rules": {}}
    assert reply(steps, "set_rules_anonymous") == {
        "error": "setting rules needs a control token"}
    first = reply(steps, "set_rules_control")["rules"]
    assert sorted(first) == ["marsh:2,3", "pond"]
    assert (first["pond"]["rate"], first["pond"]["classes"]) == ("auto", "birds-*,unknown")
    assert (first["marsh:2,3"]["rate"], first["marsh:2,3"]["classes"],
            first["marsh:2,3"]["length_s"]) == (0.25, "birds-*", 1.5)
    second = reply(steps, "set_rules_token_in_request")["rules"]
    assert (second["pond"]["rate"], second["pond"]["classes"]) == (0.5, "*")
    assert second["marsh:2,3"] == first["marsh:2,3"]
    assert reply(steps, "get_rules_after") == {"rules": second}
    assert reply(steps, "database_info") == {"database_info": []}
    assert steps["rules_events"][0]["heard"] == [  # and as `SampleExtractionRules` events
        reply(steps, step) for step in ("get_rules_before", "set_rules_anonymous",
                                        "set_rules_token_in_request", "database_info")]
    rule_sets, _ = await read_rule_sets(js)
    assert [sorted((r.source, r.channels, r.rate) for r in s.rules) for _, s in rule_sets] == [
        [("marsh", (2, 3), 0.25), ("pond", (), "auto")],
        [("marsh", (2, 3), 0.25), ("pond", (), 0.5)]]

    # ----------------------------------------------------------------- live
    [opened] = steps["add_livestream"]
    name = portname(opened["sid"])
    assert opened["reply"] == {"sys": {"portname": name, "samplerate": 48_000}}
    [audio] = steps["audio"]
    buffers = -(-pcm.size // BUFFER_SAMPLES)
    assert audio == {"step": "audio", "replies": {'{"ok":true}': buffers},
                     "buffers": buffers, "bytes": 2 * pcm.size}
    odd = {"error": "buffer has an odd number of bytes: PCM16 needs 2 per sample"}
    assert reply(steps, "audio_odd_bytes") == odd
    assert steps["audio_odd_bytes_on_sys"][0]["heard"] == [odd]  # and on `sys`
    assert reply(steps, "del_livestream") == {"sys": {"del_livestream": name}}
    opens, _ = await read_subject(js, CONTROL.name, subj.CTL_ALL, LiveStreamOpened)
    closes, _ = await read_subject(js, CONTROL.name, subj.CTL_ALL, LiveStreamClosed)
    assert [(e.source, e.sample_rate, e.client.endswith(":" + opened["sid"]))
            for _, e in opens] == [(name, PHONE_RATE, True)]
    assert [(e.source, e.reason) for _, e in closes] == [(name, "closed by the client")]
    chunks = [c for _, c in (await read_subject(js, AUDIO.name, subj.audio(name, 0),
                                                AudioChunk))[0]]
    assert [c.seq for c in chunks] == list(range(len(chunks)))
    assert [c.final for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert {c.sample_rate for c in chunks} == {48_000}
    samples = np.concatenate([c.to_float32() for c in chunks])
    resampler = PcmResampler(PHONE_RATE, 48_000)  # the same buffers, resampled here
    expected = np.concatenate([resampler.push(pcm[i:i + BUFFER_SAMPLES])
                               for i in range(0, pcm.size, BUFFER_SAMPLES)]
                              + [resampler.flush()])
    assert samples.size == expected.size
    assert float(np.max(np.abs(samples - expected))) < 2 / 32767  # PCM16 rounding only
    assert float(np.sqrt(np.mean(samples ** 2))) > 0.01  # the storm, not silence

    # ---------------------------------------------------------------- rooms
    assert reply(steps, "subscribe_channel") == {"rooms": ["channel:mic:1"]}
    assert reply(steps, "subscribe_bad")["error"].startswith("source must be 1-64 letters")
    assert [line["batch"] for line in steps["ready"]] == [1, 2, 3]
    heard_by = {line["batch"]: line["windows"] for line in steps["broadcast"]}
    # everything to the room `all`; channel 1 only to `one`; channel 0 only to `zero`,
    # which asked for it in its handshake
    expected_1 = {"anon": windows(1), "admin": windows(1),
                  "one": windows(1, (1,)), "zero": windows(1, (0,))}
    assert heard(heard_by[1]) == heard(expected_1)
    assert heard_by[1] == expected_1
    assert reply(steps, "unsubscribe_channel") == {"rooms": []}
    assert reply(steps, "subscribe_source") == {"rooms": ["channel:mic:0", "source:mic"]}
    # `one` left its only room; `zero` hears the whole source, each window once
    expected_2 = {"anon": windows(2), "admin": windows(2), "one": [],
                  "zero": windows(2)}
    assert heard(heard_by[2]) == heard(expected_2)
    assert heard_by[2] == expected_2
    assert reply(steps, "subscribe_all") == {"rooms": ["all"]}
    assert reply(steps, "unsubscribe_all") == {"rooms": []}
    expected_3 = {"anon": windows(3), "admin": [], "one": windows(3),
                  "zero": windows(3)}
    assert heard(heard_by[3]) == heard(expected_3)
    assert heard_by[3] == expected_3
