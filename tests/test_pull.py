"""``bus.pull.Puller`` against a real nats-server: batches, waiting, and old requests."""

from __future__ import annotations

import asyncio
import time

from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

from bus.pull import Puller


async def _setup(nc: Client, name: str) -> Puller:
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name=name, subjects=[f"{name}.>"]))
    await js.add_consumer(name, ConsumerConfig(durable_name="d", ack_policy=AckPolicy.EXPLICIT,
                                               max_ack_pending=1000))
    puller = Puller(nc, name, "d")
    await puller.start()
    return puller


async def test_batches_come_whole_in_order_and_once(nc: Client) -> None:
    puller = await _setup(nc, "PULL1")
    js = nc.jetstream()
    for i in range(250):
        await js.publish(f"PULL1.{i}", str(i).encode())
    got: list[bytes] = []
    while len(got) < 250:
        batch = await puller.fetch(100, 1.0)
        assert 0 < len(batch) <= 100
        got += [m.data for m in batch]
        for m in batch:
            await m.ack()
    assert got == [str(i).encode() for i in range(250)]
    t0 = time.monotonic()
    assert await puller.fetch(100, 0.3) == []  # nothing left: empty after the timeout
    assert 0.25 < time.monotonic() - t0 < 1.5
    await puller.stop()


async def test_a_fetch_waits_for_what_is_published_later(nc: Client) -> None:
    puller = await _setup(nc, "PULL2")
    js = nc.jetstream()

    async def later() -> None:
        await asyncio.sleep(0.3)
        await js.publish("PULL2.x", b"late")

    task = asyncio.create_task(later())
    batch = await puller.fetch(10, 3.0)
    await task
    assert [m.data for m in batch] == [b"late"]
    # an expired request's end (its 408) does not cut the next request short
    assert await puller.fetch(10, 0.2) == []
    await js.publish("PULL2.y", b"next")
    assert [m.data for m in await puller.fetch(10, 2.0)] == [b"next"]
    await puller.stop()
