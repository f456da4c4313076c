"""The shared runner and publisher against a real nats-server with JetStream."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import msgpack
from nats.aio.client import Client

from bus.publisher import Publisher
from bus.runner import Ack, ConsumerRunner, Delivery, Outcome
from bus_schemas import Prediction, SourceUnloaded
from bus_schemas.codec import HEADER_TYPE, HEADER_VERSION
from bus_schemas.streams import DLQ_REASON, ConsumerSpec
from tests.waiting import wait_until


def _pred(i: int) -> Prediction:
    return Prediction(source="s", channel=0, window_start_ns=i * 10, window_end_ns=i * 10 + 5,
                      model_id="m", model_version="1", labels=("a",), scores=(1.0,),
                      result=("a",))


def _spec(**kw: object) -> ConsumerSpec:
    base: dict[str, object] = dict(durable="t", stream="EVENTS",
                                   filter_subjects=("tidzam.pred.>",), ack_wait_s=5.0,
                                   backoff_s=(0.05, 0.05, 0.05), max_deliver=10, batch=10)
    base.update(kw)
    return ConsumerSpec(**base)  # type: ignore[arg-type]


async def _run_until(runner: ConsumerRunner, cond: Callable[[], bool],
                     timeout: float = 15.0) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        await wait_until(cond, timeout, "the runner's work", poll_s=0.02)
    finally:
        stop.set()
        await task


async def test_publisher_dedupes_by_msg_id(nc: Client) -> None:
    pub = Publisher(nc.jetstream(), max_pending=4)
    await pub.publish_all([_pred(i) for i in range(20)])
    await pub.publish_all([_pred(i) for i in range(20)])
    info = await nc.jetstream().stream_info("EVENTS")
    assert info.state.messages == 20
    assert pub.duplicates == 20


async def test_malformed_messages_go_to_dlq_and_the_rest_flows(nc: Client) -> None:
    js = nc.jetstream()
    pub = Publisher(js)
    await pub.publish_all([_pred(i) for i in range(5)])
    await js.publish("tidzam.pred.s.0", b"\xc1garbage",
                     headers={HEADER_TYPE: "Prediction", HEADER_VERSION: "1"})
    await js.publish("tidzam.pred.s.0", msgpack.packb({"x": 1}),
                     headers={HEADER_TYPE: "Nope"})
    await pub.publish_all([_pred(i) for i in range(5, 10)])
    seen: list[int] = []

    async def handler(ds: Sequence[Delivery]) -> list[Outcome]:
        seen.extend(d.event.window_start_ns for d in ds)  # type: ignore[attr-defined]
        return [Ack()] * len(ds)

    runner = ConsumerRunner(nc, _spec(), handler)
    await _run_until(runner, lambda: len(seen) == 10 and runner.stats.dead_lettered == 2)
    assert sorted(seen) == [i * 10 for i in range(10)]
    sub = await js.pull_subscribe("tidzam.dlq.>", stream="DLQ")
    dead = await sub.fetch(2, timeout=2)
    reasons = sorted(m.headers[DLQ_REASON] for m in dead if m.headers)
    assert reasons[0].startswith("body is not msgpack")
    assert reasons[1] == "unknown event type 'Nope'"
    assert dead[0].subject == "tidzam.dlq.pred.s.0"


async def test_a_body_on_another_sources_subject_is_dead_lettered(nc: Client) -> None:
    """A prediction of source ``s`` channel 0 published on source ``x``'s subject, or
    on channel 1's, is a forgery: it never reaches a handler."""
    from bus_schemas import encode

    js = nc.jetstream()
    headers, body = encode(_pred(1))
    await js.publish("tidzam.pred.x.0", body, headers={**headers, "Nats-Msg-Id": "f1"})
    await js.publish("tidzam.pred.s.1", body, headers={**headers, "Nats-Msg-Id": "f2"})
    await Publisher(js).publish_all([_pred(2)])
    seen: list[str] = []

    async def handler(ds: Sequence[Delivery]) -> list[Outcome]:
        seen.extend(d.subject for d in ds)
        return [Ack()] * len(ds)

    runner = ConsumerRunner(nc, _spec(), handler)
    await _run_until(runner, lambda: len(seen) == 1 and runner.stats.dead_lettered == 2)
    assert seen == ["tidzam.pred.s.0"]
    sub = await js.pull_subscribe("tidzam.dlq.>", stream="DLQ")
    dead = await sub.fetch(2, timeout=2)
    assert sorted(m.headers[DLQ_REASON] for m in dead if m.headers) == [
        "the body belongs on tidzam.pred.s.0, not tidzam.pred.s.1",
        "the body belongs on tidzam.pred.s.0, not tidzam.pred.x.0"]


async def test_a_poison_event_is_isolated_and_dead_lettered(nc: Client) -> None:
    pub = Publisher(nc.jetstream())
    await pub.publish_all([_pred(i) for i in range(8)])
    done: set[int] = set()

    async def handler(ds: Sequence[Delivery]) -> list[Outcome]:
        for d in ds:
            if d.event.window_start_ns == 30:  # type: ignore[attr-defined]
                raise ValueError("cannot handle window 30")
        done.update(d.event.window_start_ns for d in ds)  # type: ignore[attr-defined]
        return [Ack()] * len(ds)

    runner = ConsumerRunner(nc, _spec(), handler, poison_after=3)
    await _run_until(runner, lambda: runner.stats.dead_lettered == 1 and len(done) == 7)
    assert 30 not in done
    info = await nc.jetstream().stream_info("DLQ")
    assert info.state.messages == 1


async def test_ordered_runner_stops_the_batch_at_a_failure(nc: Client) -> None:
    pub = Publisher(nc.jetstream())
    await pub.publish_all([_pred(i) for i in range(6)])
    committed: list[int] = []
    failures = {20: 2}

    async def handler(ds: Sequence[Delivery]) -> list[Outcome]:
        batch = [d.event.window_start_ns for d in ds]  # type: ignore[attr-defined]
        for t in batch:
            if failures.get(t, 0) > 0:
                failures[t] -= 1
                raise ValueError("flaky")
        committed.extend(batch)
        return [Ack()] * len(ds)

    runner = ConsumerRunner(nc, _spec(max_ack_pending=6), handler, ordered=True,
                            poison_after=10)
    await _run_until(runner, lambda: len(committed) == 6)
    assert committed == sorted(committed)  # never committed past an uncommitted one


async def test_other_event_types_decode(nc: Client) -> None:
    pub = Publisher(nc.jetstream())
    await pub.publish_now(SourceUnloaded(source="s", reason="bye", at_ns=1))
    info = await nc.jetstream().stream_info("CONTROL")
    assert info.state.messages == 1
