"""``status``'s view of the bus (``tidzam_ctl.stack.probe``): each consumer's lag and
the messages it acks per second, summed per process by its NATS role's durables."""

from __future__ import annotations

import asyncio

from nats.aio.client import Client
from nats.js.api import AckPolicy

from bus_schemas.streams import AUDIO, EVENTS, EXTRACTOR, SOURCE_MANAGER
from tidzam_ctl.stack import probe
from tidzam_ctl.stack.nats import NatsServer


async def test_a_consumer_acking_shows_its_rate_and_one_waiting_its_lag(
        nc: Client, nats_server: NatsServer) -> None:
    js = nc.jetstream()
    for i in range(400):
        await js.publish(f"tidzam.audio.s.{i % 4}", b"chunk")
    await js.publish("tidzam.pred.s.0", b"window")
    await js.add_consumer(AUDIO.name, durable_name="classifier-m",
                          ack_policy=AckPolicy.EXPLICIT)
    await js.add_consumer(EVENTS.name, durable_name=EXTRACTOR.durable,
                          ack_policy=AckPolicy.EXPLICIT, filter_subject="tidzam.pred.>")
    sub = await js.pull_subscribe_bind("classifier-m", AUDIO.name)
    stop = asyncio.Event()

    async def work() -> int:  # about 100 messages a second, as a slow classifier
        done = 0
        while not stop.is_set() and done < 400:
            for msg in await sub.fetch(10, timeout=5):
                await msg.ack()
                done += 1
            await asyncio.sleep(0.1)
        return done

    worker = asyncio.create_task(work())
    await asyncio.sleep(0.5)
    lags = await asyncio.to_thread(probe.consumer_lags, nats_server.url, 1.0)
    stop.set()
    await worker
    assert lags is not None
    by_name = {c["consumer"]: c for c in lags}
    assert 40 <= float(by_name["classifier-m"]["acked_per_s"]) <= 200  # type: ignore[arg-type]
    assert by_name[EXTRACTOR.durable] == {"stream": EVENTS.name, "consumer": EXTRACTOR.durable,
                                          "pending": 1, "unacked": 0, "redelivered": 0,
                                          "acked_per_s": 0.0}
    # per process: a classifier instance shows its model's durable, the extractor its own
    classifier = probe.throughput("classifier-1", lags)
    assert classifier["acked_per_s"] == by_name["classifier-m"]["acked_per_s"]
    assert probe.throughput("extractor", lags) == {"acked_per_s": 0.0, "lag": 1}
    assert probe.throughput("sources", lags) == {}  # no durable of its own yet
    assert probe.throughput("postgres", lags) == {}  # a server
    source_manager = {"stream": SOURCE_MANAGER.stream, "consumer": SOURCE_MANAGER.durable,
                      "pending": 3, "unacked": 2, "redelivered": 0, "acked_per_s": 1.5}
    assert probe.throughput("sources", [*lags, source_manager]) == {"acked_per_s": 1.5,
                                                                    "lag": 5}
    assert probe.throughput("classifier-0", [source_manager]) == {}


def test_nats_not_answering_gives_no_lags() -> None:
    assert probe.consumer_lags("nats://127.0.0.1:9", 0.1) is None
