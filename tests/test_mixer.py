"""The mixer, pure parts: the board (manual pins, automatic commands, release), the
gain applied to samples, the chunker's stamps and changes, the gain stage's memory of
past states, and the gain controller's decisions on health sequences."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from bus_schemas import ChannelHealth, MixerApplied, MixerCommand, Prediction, pcm
from bus_schemas.mixer import DEFAULT, Board, ChannelState
from consumers.gain_controller import (
    CLEAN_FOR_S,
    HOLD_S,
    TURN_DOWN_DB,
    Watch,
    decide,
)
from producers.chunker import Chunker
from producers.gain import GainStage

SEC = 1_000_000_000
T0 = 1_750_000_000 * SEC


def cmd(n: int, action: str, origin: str = "manual", gain_db: float = 0.0,
        channel: int = 0) -> MixerCommand:
    return MixerCommand(command_id=f"c{n}", source="pond", channel=channel, action=action,  # type: ignore[arg-type]
                        gain_db=gain_db, origin=origin, reason=f"r{n}", by="x",  # type: ignore[arg-type]
                        at_ns=T0 + n)


def test_a_person_pins_a_channel_until_released() -> None:
    board = Board()
    assert board.state("pond", 0) == DEFAULT
    board.apply(cmd(1, "gain", "auto", -6.0))
    assert (board.state("pond", 0).gain_db, board.state("pond", 0).origin) == (-6.0, "auto")
    board.apply(cmd(2, "mute"))  # pinned: auto's -6 dB kept, muted
    assert (board.state("pond", 0).gain_db, board.state("pond", 0).muted) == (-6.0, True)
    board.apply(cmd(3, "gain", "auto", 0.0))  # the controller cannot reach it now
    board.apply(cmd(4, "unmute", "auto"))
    assert board.state("pond", 0).muted and board.is_pinned("pond", 0)
    assert not board.apply(cmd(2, "mute"))  # the same command again: nothing
    board.apply(cmd(5, "auto"))  # released: the automatic state (0 dB, unmuted) again
    assert (board.state("pond", 0).gain_db, board.state("pond", 0).muted) == (0.0, False)
    assert board.state("pond", 1) == DEFAULT  # other channels untouched


def test_bad_commands_are_refused() -> None:
    for bad in ({"gain_db": 400.0}, {"gain_db": -100.0}, {"action": "louder"},
                {"source": "a b"}, {"channel": -1}):
        with pytest.raises(ValidationError):
            MixerCommand(**{"command_id": "x", "source": "pond", "channel": 0,  # type: ignore[arg-type]
                            "action": "gain", "at_ns": 0, **bad})
    with pytest.raises(ValidationError, match="only a manual command releases"):
        MixerCommand(command_id="x", source="pond", channel=0, action="auto", origin="auto",
                     at_ns=0)


def test_gain_applies_in_the_samples_own_type() -> None:
    x = np.array([1000, -1000, 32767, -32768], dtype=np.int16)
    assert pcm.with_gain(x, 0.0) is x
    half = pcm.with_gain(x, -6.0206)
    assert half.dtype == np.int16 and list(half) == [500, -500, 16384, -16384]
    assert list(pcm.with_gain(x, 12.0)[2:]) == [32767, -32768]  # clipped, not wrapped
    assert not pcm.with_gain(x, 0.0, muted=True).any()
    f = np.array([0.5, -0.9], dtype=np.float32)
    assert pcm.with_gain(f, 6.0206).tolist() == pytest.approx([1.0, -1.0])


def test_the_chunker_stamps_each_chunk_and_reports_changes() -> None:
    states = {0: ChannelState(), 1: ChannelState(-6.0, False, "auto", "c1", "clipping")}

    def mixer(source: str, channel: int, t_ns: int) -> ChannelState:
        if channel == 0 and t_ns >= T0 + 2 * SEC:
            return ChannelState(0.0, True, "manual", "c2", "", "ann")
        return states[channel]

    chunker = Chunker("pond", (0, 1), 1000, T0, 1000, mixer=mixer)
    rng = np.random.default_rng(0)
    block = (rng.uniform(-0.5, 0.5, (2, 4000))).astype(np.float32)
    sets = [*chunker.push(block), *chunker.finish()]
    raw = [s.chunks[1].pcm_samples() for s in sets]
    heard = [s.chunks[1].heard_samples() for s in sets]
    assert all(s.chunks[1].gain_db == -6.0 for s in sets)
    assert np.allclose(heard[0], raw[0] * 10 ** (-6 / 20), atol=1)  # raw kept, gain stamped
    changes = [a for s in sets for a in s.applied]
    assert [(a.channel, a.from_ns, a.gain_db, a.muted, a.by) for a in changes] == [
        (1, T0, -6.0, False, ""), (0, T0 + 2 * SEC, 0.0, True, "ann")]
    assert not sets[2].chunks[0].heard_samples().any()
    assert sets[2].chunks[0].pcm_samples().any()  # the raw audio is still there
    assert all(s.health[0].rms_dbfs > -20 for s in sets)  # health of the raw audio


def test_audio_played_again_is_heard_as_it_was() -> None:
    stage = GainStage()
    stage.board.apply(cmd(1, "mute"))  # now: muted
    for at, gain, muted in ((T0, 0.0, False), (T0 + 60 * SEC, -6.0, False),
                            (T0 + 120 * SEC, 0.0, True)):
        stage.record(MixerApplied(command_id="", source="pond", channel=0, muted=muted,
                                  gain_db=gain, stage="producer", from_ns=at, at_ns=at))
    assert stage.state("pond", 0, T0 - SEC) == DEFAULT  # before any change
    assert stage.state("pond", 0, T0 + 90 * SEC).gain_db == -6.0
    assert not stage.state("pond", 0, T0 + 30 * SEC).muted
    assert stage.state("pond", 0, T0 + 500 * SEC).muted  # new audio: the board now
    assert stage.state("lake", 0, T0).gain_db == 0.0


def health(second: int, *, clip: float = 0.0, dead: bool = False, peak: float = -12.0,
           rms: float = -30.0) -> ChannelHealth:
    return ChannelHealth(source="pond", channel=0, start_ns=T0 + second * SEC,
                         end_ns=T0 + (second + 1) * SEC, rms_dbfs=rms, peak_dbfs=peak,
                         clip_ratio=clip, noise_floor_dbfs=-50.0, dc_offset=0.0,
                         hum_db=-60.0, hum_hz=50, dead=dead)


def run(seconds: list[ChannelHealth], gain: float = 0.0, muted: bool = False,
        watch: Watch | None = None) -> list[tuple[int, str, float]]:
    """Feed health second by second, applying each decision as the stage would."""
    watch = watch or Watch()
    out = []
    for h in seconds:
        watch.health(h)
        for d in decide(watch, gain, muted, h.end_ns):
            out.append(((h.end_ns - T0) // SEC, d.action, d.gain_db))
            if d.action == "gain":
                gain, watch.gain_changed_ns = d.gain_db, h.end_ns
            else:
                muted, watch.mute_changed_ns = d.action == "mute", h.end_ns
    return out


def test_clipping_turns_down_then_recovers_with_hysteresis() -> None:
    clipped = [health(s, clip=0.02, peak=0.0) for s in range(20)]
    clean = [health(s) for s in range(20, 80)]
    acts = run(clipped + clean)
    assert acts[0] == (2, "gain", TURN_DOWN_DB)  # after 2 s of clipping
    assert acts[1] == (20 + int(CLEAN_FOR_S), "gain", 0.0)  # after 30 s clean
    assert len(acts) == 2
    # clipping that comes and goes every other second changes nothing twice in the hold
    flicker = [health(s, clip=0.02 if s % 4 < 2 else 0.0) for s in range(60)]
    assert all(a[1] == "gain" for a in run(flicker))
    assert len(run(flicker)) <= 60 / HOLD_S


def test_dead_and_crackling_channels_are_muted_then_unmuted() -> None:
    acts = run([health(s, dead=True, rms=-120, peak=-120) for s in range(8)]
               + [health(s) for s in range(8, 30)])
    assert acts == [(5, "mute", 0.0), (18, "unmute", 0.0)]  # dead 5 s; alive 10 s (8-17)
    clicks = [health(s, peak=-0.5, rms=-60.0) if s % 2 else health(s, rms=-60.0)
              for s in range(10)]
    assert run(clicks)[0][1] == "mute"


def test_a_healthy_channel_is_never_touched() -> None:
    rng = np.random.default_rng(3)
    quiet_night = [health(s, rms=float(rng.uniform(-75, -40)), peak=float(rng.uniform(-50, -8)))
                   for s in range(600)]
    assert run(quiet_night) == []


def test_constant_wind_lowers_the_channels_weight() -> None:
    watch = Watch()
    acts = []
    gain = 0.0
    for i in range(400):  # windows every 0.4875 s: wind for 100 s, then birds
        start = T0 + int(i * 0.4875 * SEC)
        watch.prediction(Prediction(source="pond", channel=0, window_start_ns=start,
                                    window_end_ns=start + 2 * SEC, model_id="m",
                                    model_version="1", labels=("wind", "birds"),
                                    scores=(0.9, 0.1), result=("wind",) if i < 205 else
                                    ("birds",)))
        if i % 2 == 0:
            h = health(int(i * 0.4875))
            watch.health(h)
            for d in decide(watch, gain, False, h.end_ns):
                acts.append((round((h.end_ns - T0) / SEC), d.gain_db))
                gain, watch.gain_changed_ns = d.gain_db, h.end_ns
    assert acts[0][1] == TURN_DOWN_DB and 55 <= acts[0][0] <= 62
    assert acts[1][1] == 0.0 and acts[1][0] > 100
