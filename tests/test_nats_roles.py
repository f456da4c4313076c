"""NATS users per process role (``tidzam_ctl.stack.nats``): each role is refused what
it has no business doing, on a real nats-server with the stack's configuration."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js.api import AckPolicy

from bus.connect import ensure_streams, stream_config
from bus_schemas.streams import ARCHIVER, AUDIO, CONTROL, EVENTS, SOURCE_MANAGER
from bus_schemas.subjects import SOURCE_ALL
from tidzam_ctl.stack.nats import ONLY, ROLES, NatsServer, role_of


async def _as(server: NatsServer, role: str, problems: list[str]) -> Client:
    async def error_cb(exc: Exception) -> None:
        problems.append(str(exc))

    return await nats.connect(server.url_for(role), error_cb=error_cb,
                              allow_reconnect=False)


async def _stored(nc: Client, subject: str, wait_s: float) -> bool:
    """Publish through JetStream as a process would; True if the stream stored it
    (a refused publish gets no answer: ``wait_s`` is how long to wait for one)."""
    try:
        await nc.jetstream().publish(subject, b"x", timeout=wait_s)
    except (NatsError, TimeoutError):
        return False
    return True


async def test_each_role_publishes_only_its_own_families(nc: Client,
                                                         nats_server: NatsServer) -> None:
    families = {"tidzam.audio.>": "tidzam.audio.s.0", "tidzam.pred.>": "tidzam.pred.s.0",
                "tidzam.ctl.model.>": "tidzam.ctl.model.selector",
                "tidzam.ctl.source.>": "tidzam.ctl.source.s"}

    async def check(role: str) -> None:
        problems: list[str] = []
        client = await _as(nats_server, role, problems)
        try:
            for family, subject in families.items():
                allowed = role in ONLY[family]
                wait_s = 5.0 if allowed else 0.5  # a wrongly stored one answers at once
                assert await _stored(client, subject, wait_s) is allowed, (role, subject)
            assert await _stored(client, "tidzam.mixer.cmd.s.0", 5.0)  # every role may
        finally:
            await client.close()
        refused = [p for p in problems if "permissions violation for publish" in p.lower()]
        assert len(refused) == sum(role not in r for r in ONLY.values()), (role, problems)

    await asyncio.gather(*(check(role) for role in ROLES))


async def test_no_role_deletes_or_purges_a_stream(nc: Client, nats_server: NatsServer) -> None:
    await nc.jetstream().publish("tidzam.audio.s.0", b"kept")

    async def check(role: str) -> None:
        problems: list[str] = []
        client = await _as(nats_server, role, problems)
        js = client.jetstream()
        try:
            for attempt in (js.delete_stream(AUDIO.name), js.purge_stream(AUDIO.name),
                            js.delete_msg(AUDIO.name, 1)):
                with pytest.raises((NatsError, TimeoutError)):
                    await asyncio.wait_for(attempt, 1)
            assert (await js.stream_info(EVENTS.name)).config.name == EVENTS.name  # reads
        finally:
            await client.close()
        assert any("permissions violation" in p.lower() for p in problems), role

    await asyncio.gather(*(check(role) for role in ("gateway", "projector", "sink",
                                                    "classifier")))
    assert (await nc.jetstream().stream_info(AUDIO.name)).state.messages == 1


async def test_a_role_needs_its_own_password(nats_server: NatsServer) -> None:
    wrong = nats_server.url_for("gateway").replace(nats_server.roles["gateway"], "guess")
    with pytest.raises(NatsError, match=r"[Aa]uthorization"):
        await nats.connect(wrong, allow_reconnect=False, max_reconnect_attempts=0)
    assert role_of("classifier-3") == "classifier" and role_of("sink-mqtt") == "sink"


async def _refused(attempt: Coroutine[Any, Any, object]) -> bool:
    try:
        await asyncio.wait_for(attempt, 1)
    except (NatsError, TimeoutError):
        return True
    return False


async def test_only_the_source_manager_consumes_source_commands(
        nc: Client, nats_server: NatsServer) -> None:
    js = nc.jetstream()
    await js.add_consumer(CONTROL.name, durable_name=SOURCE_MANAGER.durable,
                          filter_subject=SOURCE_ALL, ack_policy=AckPolicy.EXPLICIT)
    await js.publish("tidzam.ctl.source.pond", b"add")

    async def check(role: str) -> None:
        problems: list[str] = []
        client = await _as(nats_server, role, problems)
        theirs = client.jetstream()
        try:
            sub = await theirs.pull_subscribe_bind(SOURCE_MANAGER.durable, CONTROL.name)
            assert await _refused(sub.fetch(1, timeout=0.5)), role  # takes nothing
            assert await _refused(theirs.add_consumer(
                CONTROL.name, durable_name=SOURCE_MANAGER.durable, filter_subject=">")), role
            assert await _refused(theirs.delete_consumer(CONTROL.name,
                                                         SOURCE_MANAGER.durable)), role
            # what every role may: read the history through an ephemeral, ordered consumer
            got: asyncio.Queue[bytes] = asyncio.Queue()

            async def on_msg(msg: Msg) -> None:
                await got.put(msg.data)

            ordered = await theirs.subscribe(SOURCE_ALL, stream=CONTROL.name, cb=on_msg,
                                             ordered_consumer=True)
            assert await asyncio.wait_for(got.get(), 5) == b"add", role
            await ordered.unsubscribe()
        finally:
            await client.close()
        assert sum("permissions violation" in p.lower() for p in problems) >= 3, (role,
                                                                                  problems)

    await asyncio.gather(*(check(role) for role in ROLES if role != "sources"))
    info = await js.consumer_info(CONTROL.name, SOURCE_MANAGER.durable)
    assert info.num_pending == 1 and info.num_ack_pending == 0  # nobody took it
    client = await _as(nats_server, "sources", [])
    try:
        sub = await client.jetstream().pull_subscribe_bind(SOURCE_MANAGER.durable,
                                                           CONTROL.name)
        [msg] = await sub.fetch(1, timeout=5)
        assert msg.data == b"add"
        await msg.ack_sync()
    finally:
        await client.close()
    assert (await js.consumer_info(CONTROL.name, SOURCE_MANAGER.durable)).num_pending == 0


async def test_the_classifier_uses_its_model_durables_not_the_archivers(
        nc: Client, nats_server: NatsServer) -> None:
    js = nc.jetstream()
    await js.add_consumer(AUDIO.name, durable_name=ARCHIVER.durable,
                          ack_policy=AckPolicy.EXPLICIT)
    await js.publish("tidzam.audio.s.0", b"chunk")
    problems: list[str] = []
    client = await _as(nats_server, "classifier", problems)
    theirs = client.jetstream()
    try:
        await theirs.add_consumer(AUDIO.name, durable_name="classifier-any-model",
                                  ack_policy=AckPolicy.EXPLICIT)
        [msg] = await (await theirs.pull_subscribe_bind("classifier-any-model", AUDIO.name)
                       ).fetch(1, timeout=5)
        await msg.ack_sync()
        sub = await theirs.pull_subscribe_bind(ARCHIVER.durable, AUDIO.name)
        assert await _refused(sub.fetch(1, timeout=0.5))
        assert await _refused(theirs.delete_consumer(AUDIO.name, ARCHIVER.durable))
    finally:
        await client.close()
    assert (await js.consumer_info(AUDIO.name, ARCHIVER.durable)).num_pending == 1


async def test_no_role_updates_a_stream_or_creates_another(
        nc: Client, nats_server: NatsServer) -> None:
    problems: list[str] = []
    client = await _as(nats_server, "gateway", problems)
    theirs = client.jetstream()
    try:
        shorter = stream_config(AUDIO)
        shorter.max_age = 1.0
        assert await _refused(theirs.update_stream(shorter))
        assert await _refused(theirs.add_stream(name="MINE", subjects=["mine.>"]))
        await ensure_streams(theirs)  # what a process runs at start: all there, no update
    finally:
        await client.close()
    assert len(problems) == 2, problems
    assert (await nc.jetstream().stream_info(AUDIO.name)).config.max_age != 1.0
