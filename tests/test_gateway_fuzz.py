"""The gateway under fuzz: well over 10,000 malformed requests, deterministic (a seeded
``random.Random``), at every socket.io event, the connection's ``auth`` and every REST
route of one gateway served by uvicorn on a real port, with a real nats-server and
PostgreSQL.

Asserted: no crash (after each burst the gateway answers a good request, the clients are
still connected, nothing was logged at ERROR, no handler raised), no effect (nothing on
the CONTROL stream, read back with ``read_subject``, even for control requests sent with a
control token; no source, rule or row appears), clear errors (a socket.io answer is
``{"error": <non-empty text>}`` or, for a request that happens to be harmless and valid,
an answer of the right shape; a REST answer is a 4xx with a JSON ``detail``, or a 2xx of
the right shape for a harmless read) and bounded memory (the RSS of this process, where
the gateway runs, grows by less than ``RSS_BOUND`` bytes; both figures are printed)."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
import socketio
from nats.aio.client import Client
from psycopg_pool import AsyncConnectionPool

from bus.history import read_subject
from bus_schemas import Event
from bus_schemas import subjects as subj
from bus_schemas.live import MAX_BUFFER_SAMPLES
from bus_schemas.streams import CONTROL
from consumers.classifier.model_requests import ModelRequests
from inference.registry import ModelRegistry
from projections.gateway.seed import MAX_RULES
from tests.gateway_fuzzing import (
    BAD_ISO_TIMES,
    BAD_NAMES,
    BAD_NUMBERS,
    BAD_STRINGS,
    CALL_TIMEOUT,
    GOOD_LOAD,
    INF,
    KEYS,
    NAN,
    SQLISH,
    URL_SAFE_STRINGS,
    Fuzz,
    bad_load_body,
    bad_rules,
    bad_unload_body,
    errors_logged,
    good_rule,
    history_answer,
    junk,
    nested,
    never,
    rest_body,
    rooms_answer,
    rss,
    rules_answer,
    shallow_junk,
    short,
    still_serving,
    sys_answer,
)
from tests.gateway_served import Served, serve
from tests.test_model_registry import SELECTOR

SEED = 0x7D2A_2025
RSS_BOUND = 100 * 1024 * 1024  # bytes the process may grow by over the whole fuzz
SIO_MAX = 1_000_000  # socket.io's max message (the gateway's max_http_buffer_size)

@pytest.fixture
async def fuzzed(nc: Client, pg_pool: AsyncConnectionPool[Any], pg_dsn: str,
                 tmp_path: Path) -> AsyncIterator[Served]:
    # a classifier's model requests answer too, over an empty registry: nothing can deploy
    requests = ModelRequests(nc, ModelRegistry(tmp_path / "models", builtin_root=None),
                             SELECTOR)
    await requests.start()
    try:
        async with serve(nc, pg_pool, pg_dsn, tmp_path, archive_s=1.0) as gateway:
            yield gateway
    finally:
        await requests.stop()


# ------------------------------------------------------------------ what answers may be


async def test_the_gateway_survives_fuzzing(fuzzed: Served, nc: Client,
                                             pg_pool: AsyncConnectionPool[Any]) -> None:
    rng = random.Random(SEED)
    served = fuzzed
    started = time.monotonic()
    anyone = await served.client()
    reader = await served.client(served.reader)
    admin = await served.client(served.control)
    clients = [anyone, reader, admin]
    fuzz = Fuzz(served, rng)
    headers_control = {"Authorization": f"Bearer {served.control}"}
    headers_read = {"Authorization": f"Bearer {served.reader}"}
    async with aiohttp.ClientSession(served.url) as http:
        with errors_logged() as errors:
            await still_serving(served, clients, http, errors, "the start")
            # warm-up: a few 1 MB messages raise the allocator's high-water mark once; the
            # growth measured after it is what the fuzz leaves behind
            for warm in ("x" * 900_000, ["x"] * 150_000, {f"k{k}": k for k in range(50_000)}):
                await anyone.call("history", warm, timeout=CALL_TIMEOUT)
            before = rss()

            # 1. control requests over socket.io: with a control token (must be refused
            #    as malformed), with no token and with a read token (refused for that)
            jobs = []
            for _ in range(1800):
                roll = rng.random()
                if roll < 0.55:
                    data: Any = {"sys": {"loadsource": bad_load_body(rng)}}
                elif roll < 0.75:
                    data = {"sys": {"unloadsource": bad_unload_body(rng)}}
                else:
                    data = {"sys": {"loadsource": {"name": rng.choice(BAD_NAMES)}}}
                if rng.random() < 0.1:
                    data["token"] = rng.choice([served.control, junk(rng)])
                jobs.append(fuzz.sio_job(admin, "sys control, control token", "sys", data,
                                         never))
                if rng.random() < 0.35:
                    who = rng.choice([anyone, reader])
                    jobs.append(fuzz.sio_job(who, "sys control, no/read token", "sys",
                                             data, never))
            for _ in range(400):  # even well-formed control requests, without the token
                data = {"sys": {"loadsource": dict(GOOD_LOAD)}} if rng.random() < 0.5 \
                    else {"sys": {"unloadsource": {"name": "pond"}}}
                if rng.random() < 0.5:
                    data["token"] = junk(rng)
                jobs.append(fuzz.sio_job(rng.choice([anyone, reader]),
                                         "sys control well-formed, no/read token", "sys",
                                         data, never))
            for _ in range(600):  # the whole request at every level
                roll = rng.random()
                if roll < 0.3:
                    data = junk(rng)
                elif roll < 0.6:
                    data = {"sys": junk(rng)}
                else:
                    data = {"sys": {rng.choice([*KEYS, "classifier", "database",
                                                "del_livestream", "add_livestream",
                                                "Classifier", ""]): junk(rng)}}
                # (no control token: a junk dict might spell a valid unload by chance)
                jobs.append(fuzz.sio_job(rng.choice([anyone, reader]), "sys shapes", "sys",
                                         data, sys_answer))
            await fuzz.bounded(jobs)
            await still_serving(served, clients, http, errors, "sys")

            # 2. SampleExtractionRules
            jobs = []
            for _ in range(1300):
                data = {"set": "rules", "rules": bad_rules(rng)}
                if rng.random() < 0.1:
                    data["token"] = rng.choice([served.control, junk(rng)])
                jobs.append(fuzz.sio_job(admin, "rules set, control token",
                                         "SampleExtractionRules", data, never))
                if rng.random() < 0.3:
                    jobs.append(fuzz.sio_job(rng.choice([anyone, reader]),
                                             "rules set, no/read token",
                                             "SampleExtractionRules", data, never))
            for _ in range(300):
                data = {"set": "rules", "rules": rng.choice([{}, {"pond": good_rule()}])}
                if rng.random() < 0.5:
                    data["token"] = junk(rng)
                jobs.append(fuzz.sio_job(rng.choice([anyone, reader]),
                                         "rules set well-formed, no/read token",
                                         "SampleExtractionRules", data, never))
            for _ in range(500):
                roll = rng.random()
                if roll < 0.35:
                    data = junk(rng)
                elif roll < 0.7:
                    data = {rng.choice(["get", "set", "Get", ""]): junk(rng)}
                else:
                    data = {"set": junk(rng), "rules": junk(rng), "get": junk(rng)}
                    if data["set"] == "rules":
                        data["set"] = "nope"
                jobs.append(fuzz.sio_job(rng.choice(clients), "rules shapes",
                                         "SampleExtractionRules", data, rules_answer))
            await fuzz.bounded(jobs)
            await still_serving(served, clients, http, errors, "SampleExtractionRules")

            # 3. subscribe / unsubscribe / history
            jobs = []
            for _ in range(1000):
                event = rng.choice(["subscribe", "unsubscribe"])
                roll = rng.random()
                if roll < 0.3:
                    data = junk(rng)
                else:
                    data = {"source": rng.choice([*BAD_NAMES, "pond", junk(rng)]),
                            "channel": rng.choice([None, -1, 1024, 10**30, 1.5, "1", True,
                                                   NAN, [], 0, junk(rng)])}
                    if rng.random() < 0.2:
                        data["all"] = junk(rng)
                jobs.append(fuzz.sio_job(rng.choice(clients), "subscribe/unsubscribe",
                                         event, data, rooms_answer))
            for _ in range(1300):
                roll = rng.random()
                if roll < 0.15:
                    data = junk(rng)
                else:
                    data = {}
                    for key, values in (
                            ("what", ["detections", "hourly", "health", "passwords", None,
                                      "", 7, [], "DETECTIONS"]),
                            ("source", [*BAD_NAMES, "mic", None]),
                            ("channel", [*BAD_NUMBERS, "1", True, None, [], 1]),
                            ("label", [*BAD_STRINGS, *SQLISH, None, 7, [], {}]),
                            ("since", [*BAD_ISO_TIMES, None, "2025-06-15T12:00:00Z"]),
                            ("until", [*BAD_ISO_TIMES, None]),
                            ("limit", [*BAD_NUMBERS, 10**9, "10", None, True, 1])):
                        if rng.random() < 0.6:
                            data[key] = rng.choice(values)
                    if rng.random() < 0.2:
                        data[rng.choice(["token", "where", "order", "$gt", "\x00"])] = \
                            junk(rng)
                jobs.append(fuzz.sio_job(rng.choice(clients), "history", "history", data,
                                         history_answer))
            await fuzz.bounded(jobs)
            await still_serving(served, clients, http, errors, "subscribe and history")

            # 4. audio (no live producer here: every answer is an error)
            jobs = []
            for _ in range(700):
                roll = rng.random()
                if roll < 0.25:
                    data = junk(rng)
                else:
                    data = {"buffer": rng.choice([None, b"", b"\x00" * 7, b"\xff" * 3,
                                                  [0, 1, -1], [1.5], [10**30], [2**63],
                                                  [NAN], ["a"], [None], [[1]], [True],
                                                  "AAAA", 7, {}, junk(rng)]),
                            "samplerate": rng.choice([48_000, 16_000, 0, -1, 7, NAN, INF,
                                                      1.5, 10**30, 2**63, 2**64, "48000",
                                                      None, True, []])}
                    if rng.random() < 0.2:
                        data[rng.choice(["op", "client", "reason", "token"])] = junk(rng)
                jobs.append(fuzz.sio_job(rng.choice(clients), "audio", "audio", data, never))
            await fuzz.bounded(jobs)
            # near and over the live limit (bytes and lists), under socket.io's
            big = [
                {"buffer": b"\x00" * (2 * MAX_BUFFER_SAMPLES), "samplerate": 48_000},
                {"buffer": b"\x00" * (2 * MAX_BUFFER_SAMPLES + 1), "samplerate": 48_000},
                {"buffer": b"\x01" * (2 * MAX_BUFFER_SAMPLES + 2), "samplerate": 10**30},
                {"buffer": [0] * MAX_BUFFER_SAMPLES, "samplerate": 48_000},
                {"buffer": [0] * (MAX_BUFFER_SAMPLES + 1), "samplerate": 48_000},
                {"buffer": [1] * (MAX_BUFFER_SAMPLES - 1) + [10**30], "samplerate": 8000},
                {"buffer": [0] * 1000 + [2**64], "samplerate": 8000},
                {"buffer": b"\x00" * 999_000, "samplerate": 48_000},
            ]
            await fuzz.bounded([fuzz.sio_job(anyone, "audio huge", "audio", d, never)
                                for d in big])
            await still_serving(served, clients, http, errors, "audio")

            # 5. huge and deep payloads on every event, under socket.io's limit
            jobs = []
            for event, ok in (("sys", sys_answer), ("SampleExtractionRules", rules_answer),
                              ("subscribe", rooms_answer), ("unsubscribe", rooms_answer),
                              ("history", history_answer), ("audio", never)):
                for payload in (
                        "x" * 900_000, ["x"] * 150_000, {"k" + str(k): k for k in
                                                         range(50_000)},
                        {"source": "x" * 900_000, "label": "y" * 50_000},
                        {"sys": {"loadsource": {"name": "x" * 900_000}}},
                        {"sys": {"loadsource": {"name": "pond", "url": "http://h/"
                                                + "x" * 900_000}}},
                        {"set": "rules", "rules": {"pond": {"classes": "a," * 400_000
                                                            + "a"}}},
                        {"set": "rules", "rules": {f"p{k}": {"classes": "a," * 1500 + "a"}
                                                   for k in range(MAX_RULES)}},
                        nested(rng, 250), nested(rng, 350)):
                    jobs.append(fuzz.sio_job(admin, "huge/deep payloads", event, payload,
                                             ok))
            for job in jobs:  # one at a time: each is up to 1 MB
                await job()
            await still_serving(served, clients, http, errors, "huge payloads")

            # 6. over socket.io's limit: the gateway closes that connection, nothing more
            for payload in (b"\x00" * (SIO_MAX + 10), "x" * (SIO_MAX + 10),
                            {"buffer": [0] * (SIO_MAX // 2 + 10), "samplerate": 48_000}):
                fuzz.thrown["over socket.io's limit"] += 1
                victim = await served.client(served.control)
                await victim.emit("audio", payload)
                for _ in range(200):
                    if not victim.connected:
                        break
                    await asyncio.sleep(0.05)
                assert not victim.connected, "a message over the limit was taken"
                await victim.disconnect()
            await still_serving(served, clients, http, errors, "over the limit")

            # 7. the connection's auth
            connected = 0
            for _ in range(150):
                fuzz.thrown["connect auth"] += 1
                roll = rng.random()
                if roll < 0.3:
                    auth: Any = shallow_junk(rng)
                elif roll < 0.6:
                    auth = {"token": rng.choice([shallow_junk(rng), "x" * 300, "\ud800" * 10,
                                                 served.control + "\x00", ""])}
                else:
                    auth = {"token": rng.choice([None, shallow_junk(rng)]),
                            "subscribe": rng.choice([shallow_junk(rng), [shallow_junk(rng) for _ in
                                                                 range(rng.randint(0, 80))],
                                                     [{"source": rng.choice(BAD_NAMES),
                                                       "channel": shallow_junk(rng)}] * 70])}
                if not isinstance(auth, dict) and auth is not None:
                    auth = {"token": auth}  # the client sends only dicts (or nothing)
                try:
                    client = await served.client(auth=auth)
                except socketio.exceptions.ConnectionError as exc:
                    fuzz.fail(f"connect auth {short(auth)} refused: {exc}")
                    continue
                connected += 1
                reply = await client.call("subscribe", {"all": True}, timeout=10)
                if not rooms_answer(reply):
                    fuzz.fail(f"connect auth {short(auth)}: then {reply}")
                await client.disconnect()
            await still_serving(served, clients, http, errors, "connections")

            # 8. REST: every route
            jobs = []
            reads = {"/api/classifiers": lambda b: b == [], "/api/sources": lambda b: b == [],
                     "/api/databases": lambda b: set(b) == {"pond"},
                     "/api/rules": lambda b: b == {}, "/api/samples/info": lambda b: b == [],
                     "/api/mixer": lambda b: b == [],
                     "/api/status": lambda b: isinstance(b, dict) and b["bus"] is True,
                     "/api/detections": lambda b: b == [],
                     "/api/detections/hourly": lambda b: b == [],
                     "/api/health": lambda b: b == [],
                     "/api/models": lambda b: isinstance(b, list),
                     "/api/health/latest": lambda b: b == [],
                     "/api/windows/latest": lambda b: b == [],
                     "/api/site": lambda b: b == {"lat": None, "lon": None, "icecast": None},
                     "/api/channels/hourly": lambda b: b == []}
            for _ in range(2200):
                path = rng.choice(list(reads))
                params: dict[str, str] = {}
                for key in rng.sample(["source", "channel", "label", "since", "until",
                                       "limit", "what", "token", "\x00", "é"],
                                      rng.randint(0, 5)):
                    value = rng.choice([*URL_SAFE_STRINGS, *SQLISH[:-1], *map(str, BAD_NUMBERS),
                                        *map(str, BAD_ISO_TIMES), "x" * 3000, "1", "mic",
                                        "2025-06-15T12:00:00Z"])
                    params[key] = value
                headers = rng.choice([{}, headers_read, headers_control,
                                      {"Authorization": rng.choice(
                                          ["Bearer ", "Bearer x", "Basic YTpi", "x" * 300,
                                           "Bearer " + "y" * 5000, "bearer abc"])}])
                query = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}"
                                 for k, v in params.items())
                jobs.append(fuzz.rest_job(http, "REST reads", "GET",
                                          path + ("?" + query if query else ""),
                                          reads[path], headers=headers))
            for _ in range(800):
                kw = rest_body(rng, bad_load_body(rng))
                jobs.append(fuzz.rest_job(http, "REST POST /api/sources, control token",
                                          "POST", "/api/sources", never,
                                          headers={**kw.pop("headers"), **headers_control},
                                          **kw))
                if rng.random() < 0.3:
                    kw = rest_body(rng, rng.choice([GOOD_LOAD, bad_load_body(rng)]))
                    jobs.append(fuzz.rest_job(
                        http, "REST POST /api/sources, no/read token", "POST",
                        "/api/sources", never,
                        headers={**kw.pop("headers"), **rng.choice([{}, headers_read])},
                        **kw))
            for _ in range(800):
                kw = rest_body(rng, bad_rules(rng))
                jobs.append(fuzz.rest_job(http, "REST PUT /api/rules, control token", "PUT",
                                          "/api/rules", never,
                                          headers={**kw.pop("headers"), **headers_control},
                                          **kw))
                if rng.random() < 0.3:
                    kw = rest_body(rng, rng.choice([{"pond": good_rule()}, {},
                                                    bad_rules(rng)]))
                    jobs.append(fuzz.rest_job(
                        http, "REST PUT /api/rules, no/read token", "PUT", "/api/rules",
                        never, headers={**kw.pop("headers"), **rng.choice([{},
                                                                           headers_read])},
                        **kw))
            for _ in range(600):
                name = rng.choice([n for n in URL_SAFE_STRINGS if n not in ("", ".", "..")])
                path = "/api/sources/" + quote(name, safe="")  # raw, the client trims it
                jobs.append(fuzz.rest_job(http, "REST DELETE /api/sources/{name}, control",
                                          "DELETE", path, never, headers=headers_control))
                if rng.random() < 0.3:
                    jobs.append(fuzz.rest_job(
                        http, "REST DELETE /api/sources/{name}, no/read token", "DELETE",
                        "/api/sources/" + rng.choice(["pond", quote(name, safe="")]),
                        never, headers=rng.choice([{}, headers_read])))
            for _ in range(700):  # models, spectrograms, listening, sample files
                name = quote(rng.choice([n for n in URL_SAFE_STRINGS if n not in ("", ".",
                                                                                  "..")]),
                             safe="")
                roll = rng.random()
                if roll < 0.3:
                    kw = rest_body(rng, rng.choice([junk(rng), {"model": junk(rng)},
                                                    {"model": rng.choice(BAD_NAMES)},
                                                    {"model": "selector",
                                                     "new_windowing": junk(rng)}]))
                    jobs.append(fuzz.rest_job(
                        http, "REST POST /api/models/deploy", "POST", "/api/models/deploy",
                        never, headers={**kw.pop("headers"),
                                        **rng.choice([headers_control, headers_read, {}])},
                        **kw))
                elif roll < 0.45:
                    jobs.append(fuzz.rest_job(
                        http, "REST POST /api/models/{name}/rollback", "POST",
                        f"/api/models/{name}/rollback", never,
                        headers=rng.choice([headers_control, headers_read, {}]),
                        data=rng.choice([b"", b"{}", b'{"new_windowing": 7}', b"[1]"])))
                else:
                    path = rng.choice([f"/api/spectrogram/{name}/{rng.choice(['0', '-1', 'x'])}",
                                       f"/api/listen/{name}/0?seconds=" + rng.choice(
                                           ["1", "0", "-5", "nan", "1e9", "61"]),
                                       f"/api/samples/{name}/audio",
                                       f"/api/samples/{name}/spectrogram?width=" + rng.choice(
                                           ["300", "0", "99999", "x"])])
                    jobs.append(fuzz.rest_job(http, "REST audio reads", "GET", path, never,
                                              headers=rng.choice([{}, headers_read])))
            for _ in range(150):  # wrong methods, unknown routes
                method = rng.choice(["PATCH", "PUT", "POST", "DELETE", "GET"])
                path = rng.choice(["/api/sources/pond/x", "/api/rules/x", "/api/../etc",
                                   "/api/%2e%2e/etc/passwd", "/api/detections/x",
                                   "/api/status", "/api/classifiers", "/api/x" * 50])
                ok2 = (reads.get(path, never) if method == "GET" else never)
                jobs.append(fuzz.rest_job(http, "REST wrong methods/routes", method, path,
                                          ok2, headers=headers_control, data=b"{}"))
            await fuzz.bounded(jobs)
            # huge bodies, one at a time
            for path, method in (("/api/sources", "POST"), ("/api/rules", "PUT")):
                for raw in (b"{" * 100_000, b"[" * 5_000 + b"]" * 5_000,
                            json.dumps({"name": "x" * 2_000_000}).encode(),
                            json.dumps({"pond": {"classes": "a," * 1_000_000 + "a"}}).encode(),
                            json.dumps({f"p{k}": {"classes": "a," * 4000 + "a"}
                                        for k in range(MAX_RULES)}).encode(),
                            b'{"a": ' + b"9" * 50_000 + b"}", b"\x00" * 3_000_000):
                    await fuzz.rest_job(http, "REST huge bodies", method, path, never,
                                        headers={**headers_control,
                                                 "Content-Type": "application/json"},
                                        data=raw)()
            await still_serving(served, clients, http, errors, "REST")

            after = rss()
        for client in clients:
            await client.disconnect()

    elapsed = time.monotonic() - started
    total = sum(fuzz.thrown.values())
    print(f"\nfuzz: {total} requests in {elapsed:.1f} s; RSS before {before / 2**20:.1f} MiB,"
          f" after {after / 2**20:.1f} MiB (+{(after - before) / 2**20:.1f} MiB,"
          f" bound {RSS_BOUND / 2**20:.0f} MiB)")
    for family, count in sorted(fuzz.thrown.items()):
        print(f"  {count:6d}  {family}")
    assert fuzz.failures == [], "\n".join(fuzz.failures)
    assert total >= 10_000

    # no effect: nothing on CONTROL, no source, rule or row
    events, _ = await read_subject(nc.jetstream(), CONTROL.name, subj.CTL_ALL, Event)  # type: ignore[type-abstract]
    assert events == []
    info = await nc.jetstream().stream_info(CONTROL.name)
    assert info.state.messages == 0
    async with pg_pool.connection() as conn:
        for table in ("sources", "detections", "channel_health", "samples_info",
                      "mixer_state", "models"):
            cur = await conn.execute(f"SELECT count(*) FROM {table}")  # fixed names
            row = await cur.fetchone()
            assert row is not None and row[0] == 0, table
    assert after - before < RSS_BOUND, (before, after)

