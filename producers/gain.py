"""The gain stage where audio enters: each chunk stamped with its channel's mixer state.

``GainStage`` keeps the mixer board (``bus_schemas.mixer``) of a producer process up
to date from the ``MixerCommand`` events of the EVENTS stream: it reads them all at
start, then, woken by each new one, reads on from where it stopped (so commands apply
in stream order, none skipped). ``state(source, channel, t_ns)`` is what the
``Chunker`` stamps on a chunk starting at ``t_ns``:

- audio from before the last state this channel was given (``MixerApplied.from_ns``:
  archived audio played again) gets the state it had then, so a replay of archived
  audio with the same mixer history is heard, and classified, as it was;
- newer audio (live) gets the board's current state.

The raw samples are never changed: consumers apply the stamp (``heard_samples``), the
archive keeps the raw audio, and ``MixerApplied`` records every change.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import threading
from typing import Any

from nats.aio.client import Client
from nats.aio.subscription import Subscription

from bus.history import read_subject, settle_read
from bus_schemas import MixerApplied, MixerCommand
from bus_schemas import subjects as subj
from bus_schemas.mixer import DEFAULT, Board, ChannelState
from bus_schemas.streams import EVENTS

log = logging.getLogger(__name__)

STAGE = "producer"


class GainStage:
    def __init__(self) -> None:
        self.board = Board()
        self._history: dict[tuple[str, int], tuple[list[int], list[ChannelState]]] = {}
        self._cmd_seq = 0
        self._applied_seq = 0
        self._wake = asyncio.Event()
        self._subs: list[Subscription] = []
        self._task: asyncio.Task[None] | None = None
        self._lock = threading.Lock()  # chunkers ask from their decoding threads

    async def follow(self, nc: Client) -> None:
        """Read every command and applied state, then keep reading new ones."""
        async def wake(_msg: Any) -> None:
            self._wake.set()

        for subject in (subj.MIXER_CMD_ALL, subj.MIXER_APPLIED_ALL):
            self._subs.append(await nc.subscribe(subject, cb=wake))  # before reading
        await self.catch_up(nc)
        self._task = asyncio.create_task(self._keep_up(nc))

    async def _keep_up(self, nc: Client) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await settle_read(lambda: self.catch_up(nc))  # heard before it is stored
            except Exception as exc:  # the bus is away: the next wake-up retries
                log.warning("mixer commands not read: %s", exc)
                await asyncio.sleep(1.0)
                self._wake.set()

    async def catch_up(self, nc: Client) -> bool:
        """Read the commands and applied states stored since the last read; whether there
        were any."""
        js = nc.jetstream()
        commands, self._cmd_seq = await read_subject(js, EVENTS.name, subj.MIXER_CMD_ALL,
                                                     MixerCommand, self._cmd_seq)
        for _, cmd in commands:
            with self._lock:
                new = self.board.apply(cmd)
            if new:
                log.info("mixer %s/%d: %s %s (%s %s)", cmd.source, cmd.channel, cmd.action,
                         cmd.gain_db if cmd.action == "gain" else "", cmd.origin,
                         cmd.reason)
        applied, self._applied_seq = await read_subject(
            js, EVENTS.name, subj.MIXER_APPLIED_ALL, MixerApplied, self._applied_seq)
        for _, event in applied:
            self.record(event)
        return bool(commands or applied)

    def record(self, event: MixerApplied) -> None:
        """Remember a state a channel was given from ``from_ns`` on (audio time)."""
        state = ChannelState(event.gain_db, event.muted, event.origin, event.command_id,
                             event.reason, event.by)
        with self._lock:
            times, states = self._history.setdefault((event.source, event.channel), ([], []))
            i = bisect.bisect_left(times, event.from_ns)
            if i < len(times) and times[i] == event.from_ns:
                states[i] = state
            else:
                times.insert(i, event.from_ns)
                states.insert(i, state)

    def state(self, source: str, channel: int, t_ns: int) -> ChannelState:
        with self._lock:
            times, states = self._history.get((source, channel), ([], []))
            if times and t_ns < times[-1]:  # archived audio played again: as it was
                i = bisect.bisect_right(times, t_ns)
                return states[i - 1] if i else DEFAULT
            return self.board.state(source, channel)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
