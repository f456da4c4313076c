"""The gain controller: channel health and predictions in, automatic mixer commands out.

``python -m consumers.gain_controller`` reads every ``ChannelHealth`` (about one a
second per channel, measured on the raw audio) and every ``Prediction`` of the
EVENTS stream (durable ``gain-controller``) and keeps, per channel, how long each
condition has lasted, in audio time. With hysteresis (a condition must last to act,
and its end must last to undo) and a minimum hold between two changes:

- clipping (≥ 0.1 % of samples at full scale) for 2 s: the channel is turned down
  6 dB; back to 0 dB after 30 s without clipping;
- dead (digital silence or a stuck value) for 5 s, or crackling (clicks: a peak near
  full scale over a near-silent second, in 3 of 10 seconds): muted, the reason says
  which; unmuted after 10 s alive and without clicks;
- constant wind or rain (≥ 90 % of the last 60 s of windows decided so): turned down
  6 dB, its weight lowered; back when under half for a minute.

A healthy channel never meets a condition and is never touched. With privacy on
(``TIDZAM_PRIVACY=mask``), every private window (``consumers.privacy.is_private``) is
also published as a ``SpeechMasked`` event, the count ``mixer ls`` shows: the relay,
JACK and the archiver silence the same windows by the same rule. Commands are
``MixerCommand`` with ``origin`` auto: the gain stage applies them unless a person
pinned the channel (``tidzam_ctl mixer set``), which wins until released. Each
command is published before the event that caused it is acked, with an id fixed by
that event: a crash loses none and a redelivery stores none twice. The controller's
view of each channel's automatic state comes from the command history at start.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from nats.aio.client import Client
from pydantic import SecretStr

from bus.connect import connect, ensure_streams
from bus.history import read_subject
from bus.process import run_process
from bus.publisher import Publisher
from bus.runner import Ack, ConsumerRunner, Delivery, Outcome
from bus_schemas import ChannelHealth, MixerCommand, Prediction, SpeechMasked
from bus_schemas import subjects as subj
from bus_schemas.mixer import Board
from bus_schemas.streams import EVENTS, GAIN_CONTROLLER
from consumers.privacy import PrivacySettings, is_private

log = logging.getLogger(__name__)

BY = "gain-controller"
CLIP_ON, CLIP_OFF = 1e-3, 1e-5  # share of samples at full scale
CLIP_FOR_S, CLEAN_FOR_S = 2.0, 30.0
DEAD_FOR_S, ALIVE_FOR_S = 5.0, 10.0
CRACKLE_PEAK_DBFS, CRACKLE_RMS_DBFS = -1.0, -45.0  # a click over a near-silent second
CRACKLE_SECONDS, CRACKLE_OF = 3, 10
NOISE = ("wind", "rain")
NOISE_SPAN_S, NOISE_ON, NOISE_OFF = 60.0, 0.9, 0.5
TURN_DOWN_DB = -6.0
HOLD_S = 10.0  # at least this long between two changes of a channel's gain or mute
SEC = 1_000_000_000


@dataclass
class Watch:
    """What the controller knows of one channel (audio time, seconds)."""

    clip_run: float = 0.0
    clean_run: float = 0.0
    dead_run: float = 0.0
    alive_run: float = 0.0
    clicks: deque[bool] = field(default_factory=lambda: deque(maxlen=CRACKLE_OF))
    windows: deque[tuple[int, bool]] = field(default_factory=deque)  # (start, wind/rain)
    gain_changed_ns: int = -int(HOLD_S * SEC)
    mute_changed_ns: int = -int(HOLD_S * SEC)

    def health(self, h: ChannelHealth) -> None:
        seconds = (h.end_ns - h.start_ns) / SEC
        if h.clip_ratio >= CLIP_ON:
            self.clip_run, self.clean_run = self.clip_run + seconds, 0.0
        elif h.clip_ratio <= CLIP_OFF:
            self.clip_run, self.clean_run = 0.0, self.clean_run + seconds
        if h.dead:
            self.dead_run, self.alive_run = self.dead_run + seconds, 0.0
        else:
            self.dead_run, self.alive_run = 0.0, self.alive_run + seconds
        self.clicks.append(not h.dead and h.peak_dbfs >= CRACKLE_PEAK_DBFS
                           and h.rms_dbfs <= CRACKLE_RMS_DBFS)

    def prediction(self, p: Prediction) -> None:
        self.windows.append((p.window_start_ns, any(label in NOISE for label in p.result)))
        while self.windows and self.windows[0][0] < p.window_start_ns - NOISE_SPAN_S * SEC:
            self.windows.popleft()

    def noise_share(self) -> float | None:
        """The share of the last minute's windows decided wind or rain (None: too few)."""
        if len(self.windows) < 2 or self.windows[-1][0] - self.windows[0][0] < 0.9 * \
                NOISE_SPAN_S * SEC:
            return None
        return sum(noisy for _, noisy in self.windows) / len(self.windows)


@dataclass(frozen=True)
class Decision:
    action: Literal["gain", "mute", "unmute"]
    gain_db: float
    reason: str


def decide(watch: Watch, gain_db: float, muted: bool, t_ns: int) -> list[Decision]:
    """What the channel's automatic state should become now (nothing: as it is)."""
    out: list[Decision] = []
    crackles = sum(watch.clicks)
    if not muted and t_ns - watch.mute_changed_ns >= HOLD_S * SEC:
        if watch.dead_run >= DEAD_FOR_S:
            out.append(Decision("mute", 0.0, f"dead: digital silence or a stuck value for "
                                f"{watch.dead_run:.0f} s"))
        elif crackles >= CRACKLE_SECONDS:
            out.append(Decision("mute", 0.0, f"crackling: clicks in {crackles} of the last "
                                f"{len(watch.clicks)} s"))
    elif muted and t_ns - watch.mute_changed_ns >= HOLD_S * SEC \
            and watch.alive_run >= ALIVE_FOR_S and crackles == 0:
        out.append(Decision("unmute", 0.0, f"alive and clean for {watch.alive_run:.0f} s"))
    if t_ns - watch.gain_changed_ns < HOLD_S * SEC:
        return out
    share = watch.noise_share()
    if gain_db == 0.0:
        if watch.clip_run >= CLIP_FOR_S:
            out.append(Decision("gain", TURN_DOWN_DB, f"clipping for {watch.clip_run:.0f} s"))
        elif share is not None and share >= NOISE_ON:
            out.append(Decision("gain", TURN_DOWN_DB, f"constant wind or rain noise "
                                f"({share:.0%} of the last minute)"))
    elif gain_db < 0.0 and watch.clip_run == 0.0 and watch.clean_run >= CLEAN_FOR_S \
            and (share is None or share < NOISE_OFF):
        out.append(Decision("gain", 0.0, f"no clipping for {watch.clean_run:.0f} s"
                            + ("" if share is None else f", {share:.0%} wind or rain")))
    return out


class GainController:
    def __init__(self, nc: Client, speech_score: float | None = None) -> None:
        self._nc = nc
        self.speech_score = speech_score  # privacy on: speech windows are counted masked
        self.masked = 0
        self._pub = Publisher(nc.jetstream())
        self.board = Board()  # the automatic states, from every command so far
        self.watches: dict[tuple[str, int], Watch] = {}
        self.issued = 0

    async def load(self) -> None:
        history, _ = await read_subject(self._nc.jetstream(), EVENTS.name, subj.MIXER_CMD_ALL,
                                        MixerCommand)
        for _, cmd in history:
            self.board.apply(cmd)

    async def handle(self, deliveries: Sequence[Delivery]) -> list[Outcome]:
        for delivery in sorted(deliveries, key=lambda d: d.stream_seq):
            event = delivery.event
            if isinstance(event, ChannelHealth):
                watch = self.watches.setdefault((event.source, event.channel), Watch())
                watch.health(event)
                await self._act(event.source, event.channel, watch, event.end_ns)
            elif isinstance(event, Prediction):
                key = (event.source, event.channel)
                self.watches.setdefault(key, Watch()).prediction(event)
                await self._mask(event)
        return [Ack() for _ in deliveries]

    async def _mask(self, p: Prediction) -> None:
        if self.speech_score is None or not is_private(p, self.speech_score):
            return
        speech = [s for label, s in zip(p.labels, p.scores, strict=True)
                  if label.startswith("speech")]
        await self._pub.publish_now(SpeechMasked(  # before the ack of the prediction
            source=p.source, channel=p.channel, window_start_ns=p.window_start_ns,
            window_end_ns=p.window_end_ns, score=max(speech, default=1.0),
            model_id=p.model_id, origin_ns=p.origin_ns, by=BY, at_ns=p.window_end_ns))
        self.masked += 1

    async def _act(self, source: str, channel: int, watch: Watch, t_ns: int) -> None:
        state = self.board.auto.get((source, channel))
        gain_db, muted = (state.gain_db, state.muted) if state else (0.0, False)
        for decision in decide(watch, gain_db, muted, t_ns):
            cmd = MixerCommand(
                command_id=f"auto-{source}-{channel}-{decision.action}-{t_ns}",
                source=source, channel=channel, action=decision.action,
                gain_db=decision.gain_db, reason=decision.reason, origin="auto", by=BY,
                at_ns=t_ns)
            await self._pub.publish_now(cmd)  # before the ack of what caused it
            self.board.apply(cmd)
            if decision.action == "gain":
                watch.gain_changed_ns = t_ns
            else:
                watch.mute_changed_ns = t_ns
            self.issued += 1
            log.info("%s/%d: %s %s (%s)", source, channel, decision.action,
                     f"{decision.gain_db:+.0f} dB" if decision.action == "gain" else "",
                     decision.reason)


class GainControllerSettings(PrivacySettings):
    nats_url: SecretStr


async def run(settings: GainControllerSettings, stop: asyncio.Event) -> None:
    nc = await connect(settings.nats_url.get_secret_value(), "tidzam-gain-controller")
    await ensure_streams(nc.jetstream())
    controller = GainController(
        nc, settings.privacy_speech_score if settings.masking else None)
    await controller.load()
    log.info("gain controller running (%d automatic states known%s)",
             len(controller.board.auto), ", speech masked" if settings.masking else "")
    await ConsumerRunner(nc, GAIN_CONTROLLER, controller.handle).run(stop)
    await nc.drain()
    log.info("gain controller drained: %d command(s) issued, %d window(s) masked",
             controller.issued, controller.masked)


def main() -> None:
    settings = GainControllerSettings()
    run_process(lambda stop: run(settings, stop))


if __name__ == "__main__":
    main()
