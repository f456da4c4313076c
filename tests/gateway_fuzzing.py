"""The fuzz test's tools (``tests/test_gateway_fuzz.py``): malformed values of every kind,
deterministic from a seeded ``random.Random``, the well-formed requests they spoil, the
answers each event may give, and the harness that throws them and checks the gateway
still serves."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import psutil
import socketio

from projections.gateway.seed import MAX_RULES
from tests.gateway_served import Served

GROUP = 64  # requests in flight at once
CALL_TIMEOUT = 15.0

NAN, INF = float("nan"), float("inf")

# ------------------------------------------------------------------ the junk


BAD_STRINGS: list[str] = [
    "", " ", "\x00", "a\x00b", "pond\x00", "pond\n", "pond\r\n", "\n", "\t", "\ud800",
    "pond\ud800", "é", "漢字", "🐦", "\u202epond", "\ufeff", "Ｐｏｎｄ", "²", "١٢",
    "../x", "../../etc", "../../etc/passwd", "..", ".", "/etc", "/etc/passwd",
    "..\\..\\windows", "a/b", "a\\b", "a b", "a:b", "a.b", "%2e%2e%2f", "-x", "_x",
    "x" * 65, "x" * 4096, "x" * 100_000, "file:///etc/passwd", "http://127.0.0.1:22",
    "javascript:alert(1)", "<script>alert(1)</script>", "'; DROP TABLE sources; --",
    "${jndi:ldap://x}", "{{7*7}}", "%s%s%n",
]
BAD_NUMBERS: list[Any] = [0, -1, 7, 1024, 4096, 2**31, 2**63, 2**64, 10**30, -(10**30),
                          1.5, -0.0, 1e308, NAN, INF, -INF]
BAD_DATES: list[Any] = [
    "2025-13-45-99-99-99", "yesterday", "tomorrow", 10**30, "2025-06-15",
    "2025-06-15T12:00:00Z", "0000-00-00-00-00-00", "1969-12-31-23-59-59",
    "9999-12-31-23-59-59", "2262-04-12-00-00-00", "2025-02-30-00-00-00",
    "2025-06-15-12-00-00\x00", "2025-06-15-12-00-60", "２０２５-06-15-12-00-00", -1, 1.5,
    NAN, INF, True, [], {}, ["2025-06-15-12-00-00"],
]
BAD_ISO_TIMES: list[Any] = [
    "2025-13-45-99-99-99", "yesterday", 10**30, -(10**30), NAN, INF, "soon", "",
    "2025-06-15T25:00:00Z", "0000-01-01T00:00:00Z", "10000-01-01T00:00:00Z",
    "2025-06-15T12:00:00+99:00", "\x00", "2025-06-15\x00", [], {}, True, 1e308,
]
BAD_URLS: list[Any] = [
    "file:///etc/passwd", "file://localhost/etc/passwd", "../../etc", "/etc/passwd",
    "javascript:alert(1)", "data:text/plain,hi", "ftp://h/x", "gopher://h/x",
    "http://", "http:///x", "http://[::1", "http://[zz]/x", "https://[::1]:99999/",
    "http://a\uff03b@c/x", "http://\x00/x", "http://h\ud800/x", "ldap://h", "\\\\host\\share",
    "http:" + "/" * 3000, "http://h/" + "x" * 3000, "rtsp:", "icecast", 7, 1.5, True, [1],
    ["http://h/s"], {"url": "http://h/s"}, NAN,
]
URL_SAFE_STRINGS = [s for s in BAD_STRINGS
                    if len(s) < 5000 and "\ud800" not in s]  # what a URL can carry
SQLISH = ["' OR 1=1 --", "\"; SELECT pg_sleep(5); --", "%", "_", "\\", "\x00", "\ud800"]


def nested(rng: random.Random, depth: int) -> Any:
    value: Any = rng.choice([None, 1, "x", True])
    for _ in range(depth):
        value = [value] if rng.random() < 0.5 else {"k": value}
    return value


def depth_of(value: Any) -> int:
    deepest, todo = 0, [(value, 0)]
    while todo:
        item, level = todo.pop()
        deepest = max(deepest, level)
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            todo.extend((v, level + 1) for v in item)
    return deepest


def shallow_junk(rng: random.Random) -> Any:
    """Junk the socket.io client itself can encode in a handshake (its connect runs
    deep in its own stack: no 500 levels of nesting there)."""
    while True:
        value = junk(rng)
        if depth_of(value) < 20:
            return value


def junk(rng: random.Random, depth: int = 0) -> Any:
    """A value of a random wrong kind (sometimes a right kind with a wrong value)."""
    roll = rng.random()
    if roll < 0.25:
        return rng.choice(BAD_STRINGS)
    if roll < 0.45:
        return rng.choice(BAD_NUMBERS)
    if roll < 0.55:
        return rng.choice([None, True, False])
    if roll < 0.62:
        return rng.choice(BAD_URLS)
    if roll < 0.68:
        return rng.choice(BAD_DATES)
    if roll < 0.76 and depth < 3:
        return [junk(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    if roll < 0.86 and depth < 3:
        return {rng.choice([*KEYS, *BAD_STRINGS[:30]]): junk(rng, depth + 1)
                for _ in range(rng.randint(0, 4))}
    if roll < 0.9:
        return nested(rng, rng.choice([8, 50, 200, 300]))
    return rng.choice([[], {}, "", 0, [None], {"": None}])


KEYS = ["name", "url", "database", "date", "channels", "is_permanent", "format", "sys",
        "loadsource", "unloadsource", "rules", "set", "get", "token", "source", "channel",
        "what", "since", "until", "label", "limit", "buffer", "samplerate", "all",
        "rate", "classes", "length", "before_s", "after_s", "centred", "cooldown_s",
        "destination", "__proto__", "constructor", "$where"]

# --------------------------------------------------- control requests, always malformed

GOOD_LOAD = {"name": "marsh", "url": "http://radio.example.org/marsh.ogg",
             "database": "pond", "date": "2025-06-15-12-00-01", "channels": "0,1",
             "is_permanent": True, "format": "ogg"}
BAD_NAMES: list[Any] = [*BAD_STRINGS, None, 0, 7, -1, 1.5, NAN, True, False, [], ["pond"],
                        {}, {"name": "pond"}]
BAD_CHANNELS: list[Any] = ["1,a", "-1", "1024", "1,,2", "0x1", "1 2", "²", "١", "1" * 5000,
                           "9" * 400, "1;2", "0,1\x00", 7, -1, 1.5, True, {"a": 1}, [1.5],
                           [-1], [None], [[1]], ["a"], [10**30], NAN]
BAD_DATABASES: list[Any] = ["../../etc", "/etc", "..", "nonexistent", "pond/../..",
                            "pond\x00", "pond\n", "x" * 65, 7, [1], {"a": 1}, True, NAN]


def bad_load_body(rng: random.Random) -> Any:
    """A ``loadsource`` body that must be refused, whatever else it carries."""
    if rng.random() < 0.08:
        return rng.choice([None, "pond", 7, [], [GOOD_LOAD], True, NAN])
    body: dict[str, Any] = {}
    for key, value in GOOD_LOAD.items():  # some good fields, some junk
        roll = rng.random()
        if roll < 0.5:
            body[key] = value
        elif roll < 0.75:
            body[key] = junk(rng)
    for _ in range(rng.randint(0, 2)):  # unknown keys
        body[rng.choice([*KEYS, "path", "exec", "cmd", "\x00", "é"])] = junk(rng)
    poison = rng.choice(["name", "url", "date", "channels", "is_permanent", "format",
                         "database", "neither"])
    if poison == "name":
        body["name"] = rng.choice(BAD_NAMES)
    elif poison == "url":
        body["url"] = rng.choice(BAD_URLS)
    elif poison == "date":
        body["date"] = rng.choice(BAD_DATES)
    elif poison == "channels":
        body["channels"] = rng.choice(BAD_CHANNELS)
    elif poison == "is_permanent":
        body["is_permanent"] = rng.choice(["yes", 1, 0, None, "true", [], NAN])
    elif poison == "format":
        body["format"] = rng.choice(["mp3", "OGG", "../x", 7, True, ["ogg"], {"a": 1}])
    elif poison == "database":
        body["database"] = rng.choice(BAD_DATABASES)
        body.pop("url", None)
    else:
        body["url"] = rng.choice(["", None, 0, False])
        body["database"] = rng.choice(["", None, 0, False])
    return body


def bad_unload_body(rng: random.Random) -> Any:
    if rng.random() < 0.15:
        return rng.choice([None, "pond", 7, [], ["pond"], True])
    return {"name": rng.choice(BAD_NAMES)}


def good_rule() -> dict[str, Any]:
    return {"rate": "auto", "classes": "birds-*,unknown", "length": 1.5, "before_s": 0.5,
            "after_s": 0.5, "centred": False, "cooldown_s": 5.0, "destination": "samples"}


BAD_RULE_KEYS: list[str] = ["", "../etc", "a b", "x" * 65, "pond:1,a", "pond:²", "pond:١",
                            "pond:" + "1" * 5000, "pond:5000", "pond:-1", "pond:1,1",
                            "pond\n", "pond\x00", "\ud800", "é", "pond:1:2", "/etc/passwd",
                            "pond;rm", ":1"]
BAD_RULE_FIELDS: dict[str, list[Any]] = {
    "rate": [7, -1, 1.0001, NAN, INF, -INF, "often", "0.5", "", None, [], {}, 10**30],
    "classes": ["birds-[", "", " ", "a b", "../x", [], [1], [None], ["birds\n"], "\x00",
                "a," * 200_000 + "a", ["birds"] * 100_000, {"a": 1}, 7, None],
    "length": [0, -1, 61, NAN, INF, "x", [], 10**30],
    "before_s": [-1, 61, NAN, INF, "x", None, []],
    "after_s": [-0.1, 1e9, NAN, "one", None],
    "centred": ["maybe", 2, [], {}, None, 1.5],
    "cooldown_s": [-1, 86_401, NAN, INF, "x", None],
    "destination": ["", "../x", "a b", "/etc", "x" * 65, "samples\n", "samples\x00", 7,
                    None, []],
}


def bad_rules(rng: random.Random) -> Any:
    """A rule set (``rules``) that must be refused."""
    roll = rng.random()
    if roll < 0.08:
        return rng.choice([None, "pond", 7, [], [good_rule()], True, NAN, ""])
    if roll < 0.12:
        return {f"s{k}": {"rate": "auto"} for k in range(MAX_RULES + 1 + rng.randint(0, 5))}
    rules: dict[str, Any] = {f"ok{k}": good_rule() for k in range(rng.randint(0, 3))}
    poison = rng.choice(["key", "spec", "unknown", *BAD_RULE_FIELDS])
    if poison == "key":
        rules[rng.choice(BAD_RULE_KEYS)] = good_rule()
    elif poison == "spec":
        rules["pond"] = rng.choice([None, "auto", 7, [], ["rate"], True, NAN])
    elif poison == "unknown":
        rules["pond"] = {**good_rule(), rng.choice(["path", "exec", "", "\x00", "é",
                                                    "__class__", "source"]): junk(rng)}
    else:
        rules["pond"] = {**good_rule(), poison: rng.choice(BAD_RULE_FIELDS[poison])}
    keys = list(rules)
    rng.shuffle(keys)
    return {k: rules[k] for k in keys}


# ------------------------------------------------------------------ the served gateway




def rest_body(rng: random.Random, value: Any) -> dict[str, Any]:
    """A request body: the value as JSON, or bad JSON, or the wrong content type."""
    roll = rng.random()
    if roll < 0.7:
        return {"data": json.dumps(value).encode(),
                "headers": {"Content-Type": "application/json"}}
    if roll < 0.85:
        return {"data": rng.choice([b"{", b"{'name': 'x'}", b"NaN", b"nul", b"\xff\xfe\x00",
                                    b'{"name": "x",}', b"[1, 2", b"", b"{\"a\": 1e99999}",
                                    b'"\\ud800"', b"\x00" * 64, b"<xml/>", b"1" * 5000]),
                "headers": {"Content-Type": "application/json"}}
    return {"data": json.dumps(value).encode(),
            "headers": {"Content-Type": rng.choice(["text/plain", "application/x-www-form-"
                                                    "urlencoded", "multipart/form-data",
                                                    "application/json; charset=latin-1"])}}


class Errors(logging.Handler):
    """Every record at ERROR or above, and every record with an exception."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or record.exc_info:
            self.records.append(record)

    def texts(self) -> list[str]:
        return [f"{r.name}: {r.getMessage()[:300]}"
                + (f" [{r.exc_info[0].__name__}: {str(r.exc_info[1])[:200]}]"
                   if r.exc_info and r.exc_info[0] else "") for r in self.records]


@contextlib.contextmanager
def errors_logged() -> Iterator[Errors]:
    handler = Errors()
    names = ["", "uvicorn"]  # the others propagate to these
    loggers = [logging.getLogger(n) for n in names]
    for lg in loggers:
        lg.addHandler(handler)
    try:
        yield handler
    finally:
        for lg in loggers:
            lg.removeHandler(handler)


def is_error(reply: Any) -> bool:
    return (isinstance(reply, dict) and set(reply) == {"error"}
            and isinstance(reply["error"], str) and reply["error"].strip() != "")


def sys_answer(reply: Any) -> bool:
    if not (isinstance(reply, dict) and set(reply) == {"sys"} and isinstance(reply["sys"],
                                                                            dict)):
        return False
    body = reply["sys"]
    if set(body) == {"classifier"} and isinstance(body["classifier"], dict) and set(
            body["classifier"]) == {"models"}:  # a read of the (empty) registry
        return isinstance(body["classifier"]["models"], list)
    return body == {"classifier": {"list": []}} or (
        set(body) == {"database"} and set(body["database"]) == {"pond"})


def rules_answer(reply: Any) -> bool:
    return reply in ({"rules": {}}, {"database_info": []})


def rooms_answer(reply: Any) -> bool:
    return (isinstance(reply, dict) and set(reply) == {"rooms"}
            and isinstance(reply["rooms"], list)
            and all(isinstance(r, str) for r in reply["rooms"]))


def history_answer(reply: Any) -> bool:
    return reply in ({"detections": []}, {"hourly": []}, {"health": []})


def never(reply: Any) -> bool:
    return False


# ------------------------------------------------------------------ the fuzz itself


class Fuzz:
    def __init__(self, served: Served, rng: random.Random) -> None:
        self.served, self.rng = served, rng
        self.thrown: Counter[str] = Counter()
        self.failures: list[str] = []

    def fail(self, what: str) -> None:
        if len(self.failures) < 40:
            self.failures.append(what[:600])

    async def bounded(self, jobs: list[Callable[[], Awaitable[None]]]) -> None:
        for start in range(0, len(jobs), GROUP):
            await asyncio.gather(*(job() for job in jobs[start:start + GROUP]))

    def sio_job(self, client: socketio.AsyncClient, family: str, event: str, data: Any,
                ok: Callable[[Any], bool]) -> Callable[[], Awaitable[None]]:
        async def job() -> None:
            self.thrown[family] += 1
            try:
                reply = await client.call(event, data, timeout=CALL_TIMEOUT)
            except Exception as exc:  # a timeout: the handler died or the server hung
                self.fail(f"{family}: {event} {short(data)} -> {type(exc).__name__}: {exc}")
                return
            if not (is_error(reply) or ok(reply)):
                self.fail(f"{family}: {event} {short(data)} -> {short(reply)}")
        return job

    def rest_job(self, http: aiohttp.ClientSession, family: str, method: str, path: str,
                 ok_2xx: Callable[[Any], bool], **kw: Any) -> Callable[[], Awaitable[None]]:
        async def job() -> None:
            self.thrown[family] += 1
            try:
                async with http.request(method, path, **kw) as r:
                    raw = await r.read()
                    status = r.status
            except Exception as exc:
                self.fail(f"{family}: {method} {path[:200]} {short(kw)} -> "
                          f"{type(exc).__name__}: {exc}")
                return
            try:
                body = json.loads(raw)
            except ValueError:
                self.fail(f"{family}: {method} {path[:200]} {short(kw)} -> {status} "
                          f"not JSON: {raw[:200]!r}")
                return
            if 400 <= status < 500:
                detail = body.get("detail") if isinstance(body, dict) else None
                if not detail or not isinstance(detail, str | list):
                    self.fail(f"{family}: {method} {path[:200]} -> {status} {short(body)}")
            elif not (200 <= status < 300 and ok_2xx(body)):
                self.fail(f"{family}: {method} {path[:200]} {short(kw)} -> {status} "
                          f"{short(body)}")
        return job


def short(value: Any, size: int = 240) -> str:
    text = repr(value)
    return text if len(text) < size else text[:size] + f"...({len(text)} chars)"


async def still_serving(served: Served, clients: list[socketio.AsyncClient],
                        http: aiohttp.ClientSession, errors: Errors, after: str) -> None:
    """The gateway answers a good request on socket.io and REST, every fuzzing client is
    still connected, and nothing was logged as an error."""
    print(f"  RSS after {after}: {rss() / 2**20:.1f} MiB")
    assert all(c.connected for c in clients), f"a client was disconnected by {after}"
    good = await clients[0].call("sys", {"sys": {"classifier": {"list": ""}}}, timeout=10)
    assert good == {"sys": {"classifier": {"list": []}}}, after
    async with http.get("/api/status") as r:
        assert r.status == 200, after
        status = await r.json()
        assert status["bus"] is True, after
    async with http.get("/api/rules") as r:
        rules = await r.json()
        assert r.status == 200 and rules == {}, f"rules set by {after}: {short(rules, 2000)}"
    assert served.gateway._nc.is_connected, after
    assert errors.texts() == [], f"errors logged during {after}: {errors.texts()[:10]}"


def rss() -> int:
    gc.collect()
    return int(psutil.Process().memory_info().rss)
