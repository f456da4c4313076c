"""Privacy, below the stack: which windows are private, how the gate holds and masks
audio, what the relay and the JACK output hand out, and the archiver's choices for
speech (raw, masked, none) written by a real archiver from a real NATS stream."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from nats.aio.client import Client

from audio import archive
from audio.decode import decode_all
from bus.publisher import Publisher
from bus_schemas import AudioChunk, Prediction
from consumers.archiver import Archiver
from consumers.icecast_relay import IcecastRelay
from consumers.privacy import PrivacyGate, PrivacySettings, is_private
from tests.bus_reading import archive_everything

RATE = 48_000
SEC = 10**9
T0 = int(datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC).timestamp()) * SEC
LABELS = ("birds", "rain", "speech")


def chunk(seq: int, channel: int = 0, source: str = "mic", value: int = 1000,
          final: bool = False, gain_db: float = 0.0, seconds: float = 1.0,
          origin: int = T0) -> AudioChunk:
    """A constant ``value`` (int16), chunk ``seq`` of the session begun at ``origin``
    (1 s chunks)."""
    return AudioChunk(source=source, channel=channel, seq=seq, first_sample=seq * RATE,
                      start_ns=origin + seq * SEC, sample_rate=RATE, final=final, gain_db=gain_db,
                      samples=np.full(round(seconds * RATE), value, dtype="<i2").tobytes())


def pred(start_s: float, result: str, speech: float = 0.0, channel: int = 0,
         length_s: float = 1.0, source: str = "mic", origin: int | None = None
         ) -> Prediction:
    """A window ``start_s`` after T0 (of the session begun at ``origin``, if given)."""
    start = T0 + round(start_s * SEC)
    birds = 1.0 - speech
    return Prediction(source=source, channel=channel, window_start_ns=start,
                      window_end_ns=start + round(length_s * SEC), model_id="selector",
                      model_version="1.0.0", labels=LABELS, scores=(birds, 0.0, speech),
                      result=(result,), origin_ns=origin)


def test_private_is_decided_speech_or_a_speech_score_over_the_threshold() -> None:
    assert is_private(pred(0, "speech", 0.3), 0.5)
    assert is_private(pred(0, "birds", 0.6), 0.5)
    assert not is_private(pred(0, "birds", 0.4), 0.5)
    assert is_private(pred(0, "birds", 0.4), 0.3)


def test_settings_default_off_and_reject_a_bad_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not PrivacySettings().masking
    monkeypatch.setenv("TIDZAM_PRIVACY", "mask")
    monkeypatch.setenv("TIDZAM_PRIVACY_ARCHIVE", "none")
    got = PrivacySettings()
    assert got.masking and got.privacy_archive == "none"
    monkeypatch.setenv("TIDZAM_PRIVACY", "maybe")
    with pytest.raises(ValueError, match="privacy"):
        PrivacySettings()


def test_the_gate_silences_exactly_the_speech_windows() -> None:
    gate = PrivacyGate(0.5, wait_s=30)
    gate.prediction(pred(0.0, "birds"))
    gate.prediction(pred(0.5, "speech", 0.9))  # 0.5 s - 1.5 s
    gate.prediction(pred(1.0, "birds", 0.2))  # the next starts at 1.5 s
    first, second = chunk(0), chunk(1)
    assert gate.decided(first) and not gate.decided(second)
    gate.prediction(pred(1.5, "birds"))
    assert gate.decided(second) and not gate.decided(chunk(2))
    heard, n = gate.mask(first, first.heard_samples())
    assert n == RATE // 2 and (heard[:RATE // 2] == 1000).all() and not heard[RATE // 2:].any()
    heard, n = gate.mask(second, second.heard_samples())
    assert n == RATE // 2 and (heard[:RATE // 2] == 0).all() and (heard[RATE // 2:] == 1000).all()
    assert gate.masked_samples == RATE
    # another channel is not touched by this one's speech
    other = chunk(0, channel=1)
    assert gate.mask(other, other.heard_samples())[1] == 0


def test_the_gate_holds_each_channel_in_order_until_its_windows_are_known() -> None:
    gate = PrivacyGate(0.5, wait_s=10)
    for seq in range(3):
        gate.hold(chunk(seq), now=0.0)
        gate.hold(chunk(seq, channel=1, gain_db=-6.0), now=0.0)
    assert gate.release(now=1.0) == [] and gate.held() == 6
    gate.prediction(pred(1.0, "birds"))  # out of order: the window at 0 s is missing
    gate.prediction(pred(2.0, "birds"))
    assert gate.release(now=1.0) == []
    gate.prediction(pred(0.0, "birds"))  # channel 0 known up to 2 s, the next at 3 s
    out = gate.release(now=1.0)
    assert [(r.chunk.channel, r.chunk.seq, r.masked) for r in out] == [
        (0, 0, 0), (0, 1, 0), (0, 2, 0)]
    gate.hold(chunk(3), now=1.0)
    gate.prediction(pred(0.0, "birds", channel=1, length_s=2.0))
    gate.prediction(pred(1.0, "speech", 0.8, channel=1, length_s=2.0))
    gate.prediction(pred(2.0, "birds", 0.1, channel=1, length_s=2.0))
    out = gate.release(now=2.0)
    # channel 1 is heard with its gain (-6 dB) and its speech (1 s - 3 s) silenced
    assert [(r.chunk.channel, r.chunk.seq, r.masked) for r in out] == [
        (1, 0, 0), (1, 1, RATE), (1, 2, RATE)]
    assert abs(int(out[0].samples[0]) - 501) <= 1 and not out[1].samples.any()
    # channel 0's chunk at 3 s: its window does not come (the classifier is down, say);
    # after the wait, silenced
    assert gate.release(now=10.9) == []
    late = gate.release(now=11.0)
    assert [(r.chunk.seq, r.masked) for r in late] == [(3, RATE)]
    assert not late[0].samples.any()
    assert gate.expired_chunks == 1 and gate.held() == 0


def test_the_end_of_a_session_is_decided_by_its_last_window() -> None:
    """The last chunk's tail is in no window (shorter than a hop): once no other window
    fits, the chunk is decided and its tail takes the last window's verdict."""
    gate = PrivacyGate(0.5, wait_s=30)
    end = chunk(2, final=True, seconds=0.8)  # 2.0 s - 2.8 s
    for k in range(3):  # windows of 1 s every 0.5 s: 0-1, 0.5-1.5, 1-2
        gate.prediction(pred(k / 2, "birds"))
    assert not gate.decided(end)  # 1.5-2.5 fits before 2.8 s: still to come
    gate.prediction(pred(1.5, "speech", 0.9))
    assert gate.decided(end) and not gate.decided(chunk(2, seconds=0.8))  # not final: waits
    heard, n = gate.mask(end, end.heard_samples())
    assert n == len(heard) and not heard.any()  # 2.0-2.5 the window, 2.5-2.8 its tail
    quiet = PrivacyGate(0.5, wait_s=30)
    for k in range(4):
        quiet.prediction(pred(k / 2, "birds"))
    assert quiet.mask(end, end.heard_samples())[1] == 0


def test_a_new_session_and_a_missing_window_do_not_stop_the_gate() -> None:
    """A source that reconnects after a gap starts a new window grid; a window that
    never comes (its audio dead-lettered) silences its chunk once, not the rest."""
    gate = PrivacyGate(0.5, wait_s=10)
    later = T0 + 100 * SEC  # the second session begins 100 s later
    for k in (0, 1, 3, 4):  # the window at 2 s never comes
        gate.prediction(pred(k, "birds", origin=T0))
    for k in range(3):
        gate.prediction(pred(100 + k, "speech" if k == 1 else "birds", 0.9 if k == 1 else 0,
                             origin=later))
    for seq in range(4):
        gate.hold(chunk(seq), now=0.0)
    for seq in range(2):
        gate.hold(chunk(seq, origin=later), now=0.0)
    out = gate.release(now=1.0)  # the old session stops at its gap; the channel in order
    assert [(r.chunk.origin_ns, r.chunk.seq, r.masked) for r in out] == [(T0, 0, 0),
                                                                         (T0, 1, 0)]
    assert gate.decided(chunk(0, origin=later)) and gate.decided(chunk(1, origin=later))
    out = gate.release(now=10.0)  # chunk 2 gives up: silenced, and its grid goes on
    assert [(r.chunk.origin_ns, r.chunk.seq, r.masked) for r in out] == [
        (T0, 2, RATE), (T0, 3, 0), (later, 0, 0), (later, 1, RATE)]
    gate.hold(chunk(4), now=10.0)  # the old grid goes on past the gap: window 4 known
    gate.hold(chunk(5), now=10.0)
    assert [r.chunk.seq for r in gate.release(now=10.0)] == [4] and gate.held() == 1
    gate.prediction(pred(5, "birds", origin=T0))
    assert [r.chunk.seq for r in gate.release(now=10.0)] == [5]


async def test_the_relay_sends_each_channel_masked_and_in_order() -> None:
    """The relay's batches and its timer both release; what each channel's encoder is
    given is the heard audio with the speech silenced, every chunk once, in order."""
    sent: list[tuple[int, int, int]] = []

    class Recorder(IcecastRelay):
        async def relay(self, c: AudioChunk, heard: Any = None) -> None:
            assert heard is not None
            sent.append((c.channel, c.seq, int(np.count_nonzero(heard))))

    gate = PrivacyGate(0.5, wait_s=30)
    relay = Recorder(target=None, gate=gate)  # type: ignore[arg-type]

    class D:
        def __init__(self, event: AudioChunk) -> None:
            self.event = event

    await relay.handle([D(chunk(0)), D(chunk(1))])  # type: ignore[list-item]
    assert sent == []  # no prediction yet: held
    gate.prediction(pred(0.0, "birds"))
    gate.prediction(pred(1.0, "speech", 0.7))
    await asyncio.gather(relay.release(), relay.release())
    assert sent == [(0, 0, RATE), (0, 1, 0)]


async def _archive(nc: Client, root: Path, speech: str, masked_s: tuple[float, float],
                   seconds: int = 4) -> list[np.ndarray[Any, Any]]:
    """``seconds`` of two channels through a real archiver with a gate that knows
    channel 0 speaks over ``masked_s``; the archived files, decoded, in order."""
    gate = PrivacyGate(0.5, wait_s=30)
    a, b = masked_s
    for ch in (0, 1):  # windows of 1 s every second
        for k in range(seconds):
            speaks = ch == 0 and a <= k < b
            gate.prediction(pred(k, "speech" if speaks else "birds", 0.9 if speaks else 0.0,
                                 channel=ch, source="yard"))
    await Publisher(nc.jetstream()).publish_all(
        [chunk(s, ch, source="yard", value=800 + ch, final=s == seconds - 1)
         for s in range(seconds) for ch in (0, 1)])
    await archive_everything(nc, Archiver(root, gate=gate if speech != "raw" else None,
                                          speech="none" if speech == "none" else "masked"))
    return [decode_all(f.path, RATE)[0] for f in archive.scan(root / "yard", "yard")]


@pytest.mark.parametrize("speech", ["raw", "masked", "none"])
async def test_the_archive_keeps_speech_raw_masked_or_not_at_all(
        nc: Client, tmp_path: Path, speech: str) -> None:
    files = await _archive(nc, tmp_path / "arch", speech, (1.0, 2.0))
    level = [np.round(np.abs(f) * 32768).astype(int) for f in files]
    if speech == "raw":
        assert len(files) == 1 and (level[0][0] == 800).all()
    elif speech == "masked":  # one file, channel 0 silent for second 1 only
        assert len(files) == 1 and files[0].shape == (2, 4 * RATE)
        assert (level[0][0, RATE:2 * RATE] == 0).all()
        assert (level[0][0, :RATE] == 800).all() and (level[0][0, 2 * RATE:] == 800).all()
        assert (level[0][1] == 801).all()  # the other channel kept whole
    else:  # none: the set with speech is not archived; the file resumes after it
        assert [f.shape[1] for f in files] == [RATE, 2 * RATE]
        assert all((lv[0] == 800).all() and (lv[1] == 801).all() for lv in level)
        names = [f.path.name for f in archive.scan(tmp_path / "arch" / "yard", "yard")]
        assert names == ["yard-2025-06-01-12-00-00.flac", "yard-2025-06-01-12-00-02.flac"]


async def test_the_jack_output_plays_speech_as_silence() -> None:
    """The JACK output behind a gate: each port's FIFO gets the heard audio with the
    speech second silenced (a stand-in client: the real one is tests/test_jack.py's)."""
    from consumers.jack_output import JackOutput

    class Port:
        def __init__(self, name: str) -> None:
            self.shortname = name

    class Ports:
        def register(self, name: str) -> Port:
            return Port(name)

    class Client:
        samplerate, name, blocksize, outports = RATE, "tidzam-out", 1024, Ports()

        def set_process_callback(self, callback: Any) -> None:
            self.callback = callback

    class D:
        def __init__(self, event: AudioChunk) -> None:
            self.event = event

    gate = PrivacyGate(0.5, wait_s=30)
    jack = JackOutput(Client(), buffer_s=10.0, prefill_s=0.0, gate=gate)
    await jack.handle([D(chunk(s)) for s in range(3)])  # type: ignore[misc]
    assert not jack.ports  # nothing played before its windows are known
    for k, label in enumerate(("birds", "speech", "birds", "birds")):
        gate.prediction(pred(k, label, 0.9 if label == "speech" else 0.0))
    jack.release()
    played = np.zeros(3 * RATE, np.float32)
    jack.ports[("mic", 0)].fifo.pull(played)
    expected = np.full(3 * RATE, 1000 / 32768, np.float32)
    expected[RATE:2 * RATE] = 0.0
    assert np.allclose(played, expected, atol=1e-4)


def test_up_keeps_the_privacy_setting_for_later_commands(tmp_path: Path) -> None:
    """What `up --privacy mask` chose holds for `check` (which restarts processes with
    the stack's settings) until a command sets it again."""
    import json

    from tidzam_ctl.settings import CtlSettings
    from tidzam_ctl.stack.stack import Stack

    home = tmp_path / "home"
    home.mkdir()
    (home / "stack.json").write_text(json.dumps({"up": True, "privacy": {
        "privacy": "mask", "privacy_archive": "none", "privacy_speech_score": 0.3,
        "privacy_wait_s": 30.0}}))
    later = Stack(CtlSettings(home=home, nats_url="nats://127.0.0.1:1",
                              database_url="postgresql://127.0.0.1:1/x"))
    assert (later.settings.privacy, later.settings.privacy_archive) == ("mask", "none")
    env = later.child_env("relay")
    assert (env["TIDZAM_PRIVACY"], env["TIDZAM_PRIVACY_ARCHIVE"],
            env["TIDZAM_PRIVACY_SPEECH_SCORE"]) == ("mask", "none", "0.3")
    again = Stack(CtlSettings(home=home, privacy="off", nats_url="nats://127.0.0.1:1",
                              database_url="postgresql://127.0.0.1:1/x"))
    assert again.settings.privacy == "off" and again.settings.privacy_archive == "none"
