"""Backpressure: a bus slower than the source slows the decoder; memory stays bounded."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path

import pytest
from nats.aio.client import Client

from bus.publisher import Publisher
from bus_schemas import Event
from producers import player as player_module
from producers.chunker import Chunker
from producers.player import Player, Session
from tests.audio_files import write_wav
from tests.waiting import wait_until


class SlowBus(Publisher):
    """The real publisher behind a bus that takes 30 ms to store each set of chunks."""

    sets = 0

    async def publish_all(self, events: Iterable[Event]) -> None:
        await asyncio.sleep(0.03)
        await super().publish_all(events)
        self.sets += 1


async def test_a_slow_bus_holds_the_decoder_back(nc: Client, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    decoded = [0]

    class CountingChunker(Chunker):
        def push(self, block):  # type: ignore[no-untyped-def]
            for chunk_set in super().push(block):
                decoded[0] += 1
                yield chunk_set

    monkeypatch.setattr(player_module, "Chunker", CountingChunker)
    wav = write_wav(tmp_path / "long.wav", seconds=300, channels=2)
    bus = SlowBus(nc.jetstream())
    player = Player(bus, chunk_s=1.0, queue_sets=8)  # speed None: as fast as the bus
    stop = asyncio.Event()
    task = asyncio.create_task(player.play(Session("slow", str(wav), 0), stop))
    await wait_until(lambda: bus.sets >= 40, 30, "40 sets on the bus", poll_s=0.01)
    ahead = decoded[0] - bus.sets
    stop.set()
    result = await task
    # 300 one-second sets decode in a blink; the decoder may only run as far ahead of
    # the bus as its queue (8 sets) plus the set in hand and one decoded block.
    assert ahead <= 8 + 2 + 2, f"the decoder ran {ahead} sets ahead of a slow bus"
    assert result.stopped and 40 <= result.chunks // 2 < 60
