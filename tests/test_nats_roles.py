"""NATS users per process role (``tidzam_ctl.stack.nats``): each role is refused what
it has no business doing, on a real nats-server with the stack's configuration."""

from __future__ import annotations

import asyncio

import nats
import pytest
from nats.aio.client import Client
from nats.errors import Error as NatsError

from bus_schemas.streams import AUDIO, EVENTS
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
    for role in ROLES:
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


async def test_no_role_deletes_or_purges_a_stream(nc: Client, nats_server: NatsServer) -> None:
    await nc.jetstream().publish("tidzam.audio.s.0", b"kept")
    for role in ("gateway", "projector", "sink", "classifier"):
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
    assert (await nc.jetstream().stream_info(AUDIO.name)).state.messages == 1


async def test_a_role_needs_its_own_password(nats_server: NatsServer) -> None:
    wrong = nats_server.url_for("gateway").replace(nats_server.roles["gateway"], "guess")
    with pytest.raises(NatsError, match=r"[Aa]uthorization"):
        await nats.connect(wrong, allow_reconnect=False, max_reconnect_attempts=0)
    assert role_of("classifier-3") == "classifier" and role_of("sink-mqtt") == "sink"
