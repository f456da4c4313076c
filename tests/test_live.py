"""Live streams over socket.io: a phone's PCM16 at 44.1 kHz, resampled, classified, projected."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import socketio

from audio.decode import decode_all
from audio.resample import PcmResampler
from producers.live import LiveInputError, parse_audio
from tests.audio_files import default_grid, expected_windows
from tests.real_audio import MEGAGLEST, RAIN, STORM, real_file
from tests.stack_helpers import running_stack, wait_for
from tidzam_ctl.stack.stack import Stack


def test_parse_audio_says_what_is_wrong() -> None:
    pcm, rate = parse_audio({"buffer": b"\x01\x00\xff\xff", "samplerate": 44_100})
    assert pcm.tolist() == [1, -1] and rate == 44_100
    assert parse_audio({"buffer": [1, 2, 70000], "samplerate": 8000})[0].tolist() == [1, 2, 32767]
    for bad, why in ((b"x", "audio must be"), ({"buffer": b"\x00", "samplerate": 8000}, "odd"),
                     ({"buffer": b"", "samplerate": "fast"}, "samplerate"),
                     ({"buffer": "abc", "samplerate": 8000}, "PCM16 bytes")):
        try:
            parse_audio(bad)
        except LiveInputError as exc:
            assert why in str(exc)
        else:
            raise AssertionError(f"{bad!r} was accepted")


async def test_what_one_client_may_cost_is_bounded(nc: Any) -> None:
    """At most 5 s of audio in a message (at 1 kHz a full buffer was 384 s, resampled to
    18 million samples), and a stream at most 10 s ahead of real time."""
    from bus.publisher import Publisher
    from bus_schemas.live import LiveRequest
    from producers.live import AHEAD_S, LiveInputs

    inputs = LiveInputs(Publisher(nc.jetstream()))
    second = [100] * 8000  # 1 s at 8 kHz

    def audio(samples: list[int]) -> LiveRequest:
        return LiveRequest(op="audio", client="g:phone", buffer=samples, samplerate=8000)

    too_long = await inputs.handle(audio(second * 6))
    assert "at most 5 s of audio per message" in too_long["error"]
    answers = [await inputs.handle(audio(second)) for _ in range(int(AHEAD_S) + 3)]
    accepted = [a for a in answers if a.get("ok")]
    refused = [a for a in answers if "error" in a]
    assert len(accepted) in (int(AHEAD_S), int(AHEAD_S) + 1), answers
    assert refused and all("faster than real time" in a["error"] for a in refused)
    await inputs.close_all()


def test_the_resampler_keeps_duration_and_pitch() -> None:
    rate = 44_100
    tone = (np.sin(2 * np.pi * 1000 * np.arange(rate) / rate) * 12_000).astype(np.int16)
    r = PcmResampler(rate, 48_000)
    out = np.concatenate([r.push(tone[i:i + 1000]) for i in range(0, rate, 1000)] + [r.flush()])
    assert abs(out.size - 48_000) <= 64
    peak_hz = int(np.argmax(np.abs(np.fft.rfft(out[:48_000]))))  # 1 Hz bins over 1 s
    assert abs(peak_hz - 1000) <= 2


def _rows(stack: Stack, query: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(stack.database_url) as conn:
        return conn.execute(query, args).fetchall()


def test_a_phone_stream_is_resampled_classified_and_closed(tmp_path: Path) -> None:
    rain, _ = decode_all(real_file(MEGAGLEST, RAIN), 44_100)
    pcm = (rain[0, : 6 * 44_100] * 32767).astype("<i2")  # 6 s of real rain at 44.1 kHz
    with running_stack(tmp_path / "home") as stack:
        url = stack.status()["services"]["gateway"]  # the one port clients talk to
        replies: list[Any] = []

        async def phone() -> str:
            client = socketio.AsyncClient()
            client.on("sys", replies.append)
            await client.connect(url, transports=["websocket"])
            name = (await client.call("sys", {"sys": {"add_livestream": ""}}))["sys"]["portname"]
            assert await client.call("sys", "not a dict") == {"error": "request must be a JSON."}
            assert "samplerate" in (await client.call("audio", {"buffer": "x"}))["error"]
            bad = await client.call("audio", {"buffer": b"\x00", "samplerate": 44_100})
            assert "odd number of bytes" in bad["error"]
            for i in range(0, pcm.size, 4096):  # a phone sends small buffers
                ok = await client.call("audio", {"buffer": pcm[i:i + 4096].tobytes(),
                                                 "samplerate": 44_100})
                assert ok == {"ok": True}
            await client.disconnect()
            return str(name)

        name = asyncio.run(phone())
        assert any("error" in r for r in replies)
        n48 = round(pcm.size * 48_000 / 44_100)
        expected = expected_windows(n48, *default_grid())
        wait_for(lambda: _rows(stack, "SELECT count(*) FROM predictions WHERE source = %s",
                               name)[0][0] >= expected - 1, 60, "the live windows")
        count = _rows(stack, "SELECT count(*) FROM predictions WHERE source = %s", name)[0][0]
        assert abs(count - expected) <= 1  # resampled: 6 s at 44.1 kHz became 6 s at 48 kHz
        wait_for(lambda: _rows(stack, "SELECT state FROM sources WHERE name = %s",
                               name) == [("unloaded",)], 30, "the stream's close")
        kind, rate = _rows(stack, "SELECT kind, sample_rate FROM sources WHERE name = %s",
                           name)[0]
        assert (kind, rate) == ("live", 44_100)
        labels = _rows(stack, "SELECT label FROM detections WHERE source = %s", name)
        assert sum(lab in STORM for (lab,) in labels) > len(labels) / 2
