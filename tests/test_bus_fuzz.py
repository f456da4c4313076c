"""Malformed messages on every subject family, into a whole running stack (issue 14):
the forged and absurd events of items 1-4 and a few thousand random ones per family.
No process crashes or stalls, every bad message is in the DLQ once per durable
consumer that reads its subject, with the reason, no row names a fuzzed source, and
good audio is classified and projected afterwards."""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import psycopg
from nats.js.api import AckPolicy, ConsumerConfig

from bus.connect import connect
from bus_schemas import DecodeError, Event, decode
from bus_schemas.codec import HEADER_TYPE, HEADER_VERSION, encode
from bus_schemas.streams import (
    AUDIO,
    CONTROL,
    DLQ,
    DLQ_CONSUMER,
    DLQ_REASON,
    DLQ_STREAM_SEQ,
    EVENTS,
)
from bus_schemas.subjects import DLQ_ALL, subject_for
from tests.audio_files import write_wav
from tests.golden_events import EXAMPLES
from tests.stack_helpers import ctl, running_stack, wait_for
from tidzam_ctl.stack.stack import Stack

PER_FAMILY = 2_000
SEED = 20261207
# (msgpack holds integers from -2**63 to 2**64 - 1: the extremes are those)
BAD_VALUES: list[Any] = [None, math.nan, math.inf, -math.inf, 2**64 - 1, -(2**63), "",
                         "x" * 3008, "a\x00b", [], {}, b"\xff\xfe", True, 1e308, -1, 1e100,
                         "2100-01-01", [math.nan], {"k": None}, 4_102_444_800 * 10**9]


def _family(event: Event) -> str:
    """``pred``, ``audio``, ``ctl.source``, ``mixer.cmd``...: the subject's kind."""
    parts = subject_for(event).split(".")
    return parts[1] + (f".{parts[2]}" if parts[1] in ("ctl", "mixer") else "")


FAMILIES = sorted({_family(e) for e in EXAMPLES})


def _renamed(event: Event, name: str) -> Event:
    """The event with the fuzz's source name (if it names a source)."""
    return event.model_copy(update={"source": name}) if hasattr(event, "source") else event


def _forged() -> Iterator[tuple[str, dict[str, str], bytes]]:
    """Items 1-4 of issue 14, as a hostile publisher sends them."""
    pred = next(e for e in EXAMPLES if type(e).__name__ == "Prediction")
    chunk = next(e for e in EXAMPLES if type(e).__name__ == "AudioChunk")
    for change in ({"scores": [math.nan] * len(pred.scores)},  # type: ignore[attr-defined]
                   {"scores": [math.inf] * len(pred.scores)},  # type: ignore[attr-defined]
                   {"window_start_ns": 4_200_000_000 * 10**9,
                    "window_end_ns": 4_200_000_001 * 10**9},
                   {"labels": ["a\x00b"] * len(pred.labels)},  # type: ignore[attr-defined]
                   {"labels": ["x" * 3008] * len(pred.labels)},  # type: ignore[attr-defined]
                   {"source": "fz-other"}):
        headers, _ = encode(pred)
        body = {**pred.model_dump(mode="python"), "source": "fz-item", **change}
        yield "tidzam.pred.fz-item.0", headers, msgpack.packb(body, use_bin_type=True)
    headers, _ = encode(chunk)
    body = {**chunk.model_dump(mode="python"), "source": "fz-item", "start_ns": 2**64 - 5}
    yield "tidzam.audio.fz-item.0", headers, msgpack.packb(body, use_bin_type=True)


def _random(rng: random.Random) -> Iterator[tuple[str, dict[str, str], bytes]]:
    """``PER_FAMILY`` malformed messages per subject family, each refused by ``decode``
    (a mutation that happens to stay valid is drawn again)."""
    for family in FAMILIES:
        examples = [e for e in EXAMPLES if _family(e) == family]
        made = 0
        while made < PER_FAMILY:
            event = _renamed(rng.choice(examples), f"fz{rng.randrange(50)}")
            headers, body = encode(event)
            headers = dict(headers)
            subject = subject_for(event)
            fields = event.model_dump(mode="python")
            kind = rng.randrange(6)
            if kind == 0:
                body = rng.randbytes(rng.randrange(0, 300))
            elif kind == 1:
                body = msgpack.packb(fields, use_bin_type=True)[:rng.randrange(1, 40)]
            elif kind == 2:
                fields[rng.choice(list(fields))] = rng.choice(BAD_VALUES)
                body = msgpack.packb(fields, use_bin_type=True)
            elif kind == 3:
                del fields[rng.choice(list(fields))]
                body = msgpack.packb(fields, use_bin_type=True)
            elif kind == 4:
                headers[rng.choice([HEADER_TYPE, HEADER_VERSION])] = rng.choice(
                    ["", "999", "abc", "Prediction", "AudioChunk", "Nope", "-1"])
                body = msgpack.packb(fields, use_bin_type=True)
            else:
                other = _renamed(rng.choice([e for e in EXAMPLES if _family(e) != family]),
                                 f"fz{rng.randrange(50)}")
                headers, body = encode(other)  # a valid event of another family
                headers = dict(headers)
            headers.pop("Nats-Msg-Id", None)
            try:
                decoded = decode(headers, body)
            except DecodeError:
                decoded = None
            if decoded is not None and subject_for(decoded) == subject:
                continue  # still a good message: not what this test sends
            made += 1
            yield subject, headers, body


async def _publish(stack: Stack, messages: list[tuple[str, dict[str, str], bytes]]
                   ) -> list[tuple[str, int, str]]:
    """Publish them all: (stream, sequence, subject) of each."""
    nc = await connect(stack.nats_url, "test-fuzzer")
    js = nc.jetstream()
    stored = []
    try:
        for subject, headers, body in messages:
            ack = await js.publish(subject, body, headers=headers, timeout=10)
            stored.append((ack.stream, ack.seq, subject))
    finally:
        await nc.drain()
    return stored


def _matches(pattern: str, subject: str) -> bool:
    p, s = pattern.split("."), subject.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(s) > i
        if i >= len(s) or (token != "*" and token != s[i]):
            return False
    return len(p) == len(s)


async def _durables(stack: Stack) -> dict[str, list[tuple[str, list[str]]]]:
    """stream → (durable, filter subjects) of every durable consumer."""
    nc = await connect(stack.nats_url, "test-fuzzer")
    try:
        found: dict[str, list[tuple[str, list[str]]]] = {}
        for stream in (AUDIO.name, EVENTS.name, CONTROL.name):
            for info in await nc.jetstream().consumers_info(stream):
                c = info.config
                if c.durable_name:
                    filters = list(c.filter_subjects or []) or [c.filter_subject or ">"]
                    found.setdefault(stream, []).append((c.durable_name, filters))
        return found
    finally:
        await nc.drain()


async def _idle(stack: Stack) -> bool:
    nc = await connect(stack.nats_url, "test-fuzzer")
    try:
        for stream in (AUDIO.name, EVENTS.name, CONTROL.name):
            for info in await nc.jetstream().consumers_info(stream):
                if info.config.durable_name and (info.num_pending or info.num_ack_pending):
                    return False
        return True
    finally:
        await nc.drain()


async def _dead_letters(stack: Stack) -> dict[tuple[str, int], str]:
    """(consumer, original stream sequence) → reason, for every DLQ message."""
    nc = await connect(stack.nats_url, "test-fuzzer")
    js = nc.jetstream()
    found: dict[tuple[str, int], str] = {}
    try:
        sub = await js.pull_subscribe(DLQ_ALL, stream=DLQ.name,
                                      config=ConsumerConfig(ack_policy=AckPolicy.NONE))
        while True:
            try:
                batch = await sub.fetch(1000, timeout=2)
            except TimeoutError:
                return found
            for msg in batch:
                h = msg.headers or {}
                found[h[DLQ_CONSUMER], int(h[DLQ_STREAM_SEQ])] = h.get(DLQ_REASON, "")
    finally:
        await nc.drain()


def test_malformed_messages_on_every_subject_family(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    messages = list(_forged()) + list(_random(rng))
    assert len(FAMILIES) >= 10 and len(messages) >= 10 * PER_FAMILY
    with running_stack(tmp_path / "home") as stack:
        pids = {p["name"]: p["pid"] for p in stack.status()["processes"]}
        stored = asyncio.run(_publish(stack, messages))
        wait_for(lambda: asyncio.run(_idle(stack)), 300, "every consumer through the fuzz")
        durables = asyncio.run(_durables(stack))
        expected = {(durable, seq) for stream, seq, subject in stored
                    for durable, filters in durables.get(stream, [])
                    if any(_matches(f, subject) for f in filters)}
        assert len(expected) >= len(messages)
        dead = asyncio.run(_dead_letters(stack))
        missing = expected - set(dead)
        assert not missing, f"{len(missing)} bad messages not dead-lettered: " \
            f"{sorted(missing)[:10]}"
        assert all(dead[k] for k in expected), "a dead letter without its reason"
        # nothing crashed or restarted
        after = {p["name"]: p["pid"] for p in stack.status()["processes"]}
        assert after == pids
        with psycopg.connect(stack.database_url) as conn:
            for table in ("predictions", "detections", "detection_events", "channel_health",
                          "sources", "samples", "mixer_log"):
                column = "name" if table == "sources" else "source"
                row = conn.execute(f"SELECT count(*) FROM {table} WHERE {column} LIKE 'fz%%'"
                                   ).fetchone()
                assert row == (0,), table
            models = conn.execute("SELECT DISTINCT model_id FROM models").fetchall()
            assert all(not m.startswith("fz") for (m,) in models)
        # the pipeline still works: real audio is classified and projected
        wav = write_wav(tmp_path / "after.wav", seconds=3.0, channels=1)
        done = ctl(stack.home, "replay", str(wav), "--source", "after", "--wait")
        assert done.returncode == 0, done.stderr
        with psycopg.connect(stack.database_url) as conn:
            row = conn.execute("SELECT count(*) FROM predictions WHERE source = 'after'"
                               ).fetchone()
            assert row is not None and row[0] > 0
