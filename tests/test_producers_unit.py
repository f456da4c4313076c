"""Fast unit tests of the chunker, replay planning and time parsing."""

from __future__ import annotations

import itertools
import os
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from audio.archive import parse_archive_name
from audio.decode import AudioDecodeError, decode_all
from producers.chunker import Chunker
from producers.replay import plan, source_name
from tests.audio_files import write_wav
from tidzam_ctl.timeparse import parse_time


def test_chunker_is_gapless_and_marks_the_final_chunk() -> None:
    chunker = Chunker("s", (0, 1), 1000, origin_ns=5_000_000_000, chunk_samples=400)
    rng = np.random.default_rng(1)
    chunks = []
    for n in (130, 700, 1, 333, 90):
        chunks += [c for group in chunker.push(rng.uniform(-1, 1, (2, n)).astype(np.float32))
                   for c in group.chunks]
    chunks += [c for group in chunker.finish() for c in group.chunks]
    ch0 = [c for c in chunks if c.channel == 0]
    assert [c.seq for c in ch0] == list(range(len(ch0)))
    assert sum(c.n_samples for c in ch0) == 130 + 700 + 1 + 333 + 90
    for a, b in itertools.pairwise(ch0):
        assert b.first_sample == a.end_sample
        assert b.start_ns == 5_000_000_000 + b.first_sample * 1_000_000
    assert [c.final for c in ch0] == [False] * (len(ch0) - 1) + [True]
    assert all(c.n_samples == 400 for c in ch0[:-1])


def test_an_empty_source_still_ends_with_a_final_chunk() -> None:
    final = Chunker("s", (0,), 1000, 0, 100).finish()
    assert len(final) == 1 and final[0].chunks[0].final and final[0].chunks[0].n_samples == 0
    assert final[0].health == []  # nothing to measure in an empty closing chunk


def test_plan_orders_archives_by_time_and_names_sources(tmp_path: Path) -> None:
    for name in ("herring-2017-05-01-14-00-00.wav", "herring-2017-05-01-13-00-00.wav",
                 "My Field Recording!.wav"):
        write_wav(tmp_path / name, 0.1)
    (tmp_path / "notes.txt").write_text("x")
    items = plan([tmp_path])
    assert [(i.source, i.start) for i in items if i.source == "herring"] == [
        ("herring", datetime(2017, 5, 1, 13, tzinfo=UTC)),
        ("herring", datetime(2017, 5, 1, 14, tzinfo=UTC))]
    other = [i for i in items if i.source != "herring"]
    assert other[0].source == "My_Field_Recording"
    assert source_name("...") == "source"


def test_files_under_one_source_follow_each_other(tmp_path: Path) -> None:
    a, b = write_wav(tmp_path / "a.wav", 0.1), write_wav(tmp_path / "b.wav", 0.1)
    start = datetime(2020, 1, 1, tzinfo=UTC)
    items = plan([a, b], source="x", start=start)
    assert [i.start for i in items] == [start, None]  # b continues after a


def test_archive_names() -> None:
    assert parse_archive_name("impoundment-2017-05-01-13-00-00.opus") == (
        "impoundment", datetime(2017, 5, 1, 13, tzinfo=UTC))
    assert parse_archive_name("a-b-2017-05-01-13-00-00.ogg") == (
        "a-b", datetime(2017, 5, 1, 13, tzinfo=UTC))
    assert parse_archive_name("plain.ogg") is None


def test_decoding_resamples_and_keeps_channels(tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "x.wav", 1.0, rate=22_050, channels=3)
    audio, info = decode_all(wav, 48_000)
    assert info.channels == 3 and info.original_rate == 22_050
    assert audio.shape[0] == 3 and abs(audio.shape[1] - 48_000) < 200
    assert audio.dtype == np.float32


def test_corrupt_files_raise_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.ogg"
    bad.write_bytes(b"OggS" + os.urandom(500))
    with pytest.raises(AudioDecodeError, match=r"cannot decode .*bad\.ogg"):
        decode_all(bad, 48_000)
    with pytest.raises(AudioDecodeError, match="no such file"):
        decode_all(tmp_path / "missing.wav", 48_000)


def test_parse_time() -> None:
    now = datetime(2026, 1, 2, 12, tzinfo=UTC)
    assert parse_time("2h", now) == datetime(2026, 1, 2, 10, tzinfo=UTC)
    assert parse_time("2017-05-01T13:00:00") == datetime(2017, 5, 1, 13, tzinfo=UTC)
    assert parse_time("2017-05-01T13:00:00+02:00").utcoffset() is not None
    with pytest.raises(ValueError, match="not a time"):
        parse_time("yesterday")


def test_many_channels_decode_in_order(tmp_path: Path) -> None:
    """12 channels (PyAV's planar path crashes from 8 up): channel k keeps its own level."""
    import wave

    n, channels = 4800, 12
    data = np.tile((np.arange(channels) + 1) * 1000, (n, 1)).astype("<i2")
    path = tmp_path / "twelve.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(16_000)
        out.writeframes(data.tobytes())
    audio, info = decode_all(path, 48_000)
    assert info.channels == channels and audio.shape[0] == channels
    levels = audio[:, 2000:-2000].mean(axis=1) * 32768
    assert np.allclose(levels, (np.arange(channels) + 1) * 1000, rtol=0.01)


def test_more_than_64_channels_is_refused_clearly(tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "wide.wav", 0.1, channels=65)
    with pytest.raises(AudioDecodeError, match="65 channels: FFmpeg's resampler takes at most 64"):
        decode_all(wav, 48_000)


def test_every_chunk_set_carries_the_health_of_each_channel() -> None:
    """Health is measured where audio enters: one ChannelHealth per channel and chunk,
    on the chunk's own samples and times."""
    rate = 8000
    t = np.arange(3 * rate) / rate
    loud = np.clip(2.0 * np.sin(2 * np.pi * 440 * t), -1, 1)  # clipped
    dead = np.zeros_like(t)
    chunker = Chunker("s", (2, 5), rate, origin_ns=10**18, chunk_samples=rate)
    sets = [*chunker.push(np.stack([loud, dead]).astype(np.float32)), *chunker.finish()]
    assert len(sets) == 3
    for chunk_set in sets:
        assert [h.channel for h in chunk_set.health] == [2, 5]
        for chunk, health in zip(chunk_set.chunks, chunk_set.health, strict=True):
            assert (health.source, health.channel) == (chunk.source, chunk.channel)
            assert health.start_ns == chunk.start_ns
            assert health.end_ns == chunk.time_of(chunk.end_sample)
        clipped, silent = chunk_set.health
        assert clipped.clip_ratio > 0.3 and clipped.peak_dbfs > -0.01 and not clipped.dead
        assert silent.dead and silent.rms_dbfs == -120.0
        assert chunk_set.events == [*chunk_set.chunks, *chunk_set.health]
