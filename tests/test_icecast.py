"""A multi-channel Ogg/Opus stream served by Icecast as a source; every channel relayed
back to Icecast as its own mono stream. Real Icecast 2, real ffmpeg."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path

import numpy as np
import psutil
import psycopg
import pytest

from audio.decode import AudioStream, decode_all
from bus.connect import connect
from bus.publisher import Publisher
from producers.chunker import Chunker
from tests.audio_files import write_pcm
from tests.real_audio import MEGAGLEST, RAIN, STORM, real_file
from tests.stack_helpers import ctl, icecast_mounts, running_stack, wait_for

ASTERISK = "asterisk-core-sounds-en-wav"
SPEECH = "usr/share/asterisk/sounds/en_US_f_Allison/demo-instruct.wav"
PATTERN = ("rain", "speech", "speech", "rain", "rain", "speech", "rain", "speech")
SECONDS = 12


def _eight_channels(path: Path) -> Path:
    rain, _ = decode_all(real_file(MEGAGLEST, RAIN), 48_000)
    speech, _ = decode_all(real_file(ASTERISK, SPEECH), 48_000)
    n = SECONDS * 48_000
    tracks = {"rain": np.resize(rain[0], n), "speech": np.resize(speech[0], n)}
    return write_pcm(path, np.stack([tracks[kind] for kind in PATTERN]))


def test_each_channel_lands_under_its_number_and_is_relayed(tmp_path: Path) -> None:
    assert shutil.which("ffmpeg") and shutil.which("icecast2"), \
        "ffmpeg and icecast2 are needed (scripts/test installs them as root)"
    wav = _eight_channels(tmp_path / "eight.wav")
    with running_stack(tmp_path / "home", icecast=True) as stack:
        icecast = stack.icecast
        assert icecast is not None
        # mapping family 255: eight discrete microphones (family 1 would make them 7.1
        # surround, channel 3 a low-passed LFE: no microphone array streams that way)
        push = subprocess.Popen(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-i", str(wav),
             "-c:a", "libopus", "-b:a", "384k", "-mapping_family", "255", "-f", "ogg",
             "-content_type", "application/ogg",
             f"icecast://source:{icecast.source_password}@127.0.0.1:{icecast.port}/multi.opus"],
            stdin=subprocess.DEVNULL)
        try:
            wait_for(lambda: "multi.opus" in icecast_mounts(icecast.url), 20, "the Icecast source")
            done = ctl(stack.home, "source", "add", "multi", "--url",
                       f"{icecast.url}/multi.opus")
            assert done.returncode == 0, done.stderr
            relayed = {f"multi-out_{k}.ogg" for k in range(8)}
            wait_for(lambda: relayed <= icecast_mounts(icecast.url), 30, "the 8 relay mounts")
            with AudioStream(f"{icecast.url}/multi-out_3.ogg", 48_000) as mono:
                assert mono.info.channels == 1 and mono.info.codec == "vorbis"
                got = next(iter(mono.blocks())).samples
                assert got.shape[0] == 1
            # format copy: the original stream relayed untouched (and not analysed)
            done = ctl(stack.home, "source", "add", "raw", "--url",
                       f"{icecast.url}/multi.opus", "--format", "copy")
            assert done.returncode == 0, done.stderr
            wait_for(lambda: "raw.opus" in icecast_mounts(icecast.url), 30, "the copy mount")
            with AudioStream(f"{icecast.url}/raw.opus", 48_000) as copy:
                assert (copy.info.channels, copy.info.codec) == (8, "opus")
            push.wait(timeout=60)
        finally:
            push.kill()
        with psycopg.connect(stack.database_url) as conn:
            def ended() -> bool:
                row = conn.execute("SELECT state FROM sources WHERE name = 'multi'").fetchone()
                return row is not None and row[0] in ("unloaded", "failed")
            wait_for(ended, 60, "the end of the Icecast stream")
            rows = conn.execute("SELECT channel, label FROM detections "
                                "WHERE source = 'multi'").fetchall()
            copied = conn.execute("SELECT count(*) FROM predictions WHERE source = 'raw'"
                                  ).fetchone()
            assert copied == (0,)  # copied, never decoded
    by_channel: dict[int, Counter[str]] = {}
    for channel, label in rows:
        by_channel.setdefault(channel, Counter())[label] += 1
    assert sorted(by_channel) == list(range(8))
    heard = tuple(by_channel[k].most_common(1)[0][0] for k in range(8))
    assert tuple("rain" if h in STORM else h for h in heard) == PATTERN, by_channel


def test_a_channel_that_goes_quiet_without_an_end_is_unmounted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A source that stops mid-session (no final chunk) does not keep its relay forever."""
    monkeypatch.setenv("TIDZAM_RELAY_IDLE_S", "3")
    with running_stack(tmp_path / "home", icecast=True) as stack:
        icecast = stack.icecast
        assert icecast is not None

        async def publish_without_end() -> None:
            nc = await connect(stack.nats_url, "test")
            chunker = Chunker("stray", (0,), 48_000, time.time_ns(), 48_000)
            noise = np.random.default_rng(0).normal(0, 0.1, (1, 4 * 48_000))
            for chunk_set in chunker.push(noise.astype(np.float32)):
                await Publisher(nc.jetstream()).publish_all(chunk_set.chunks)
            await nc.drain()

        asyncio.run(publish_without_end())
        wait_for(lambda: "stray-out_0.ogg" in icecast_mounts(icecast.url), 30, "the relay mount")
        relay = psutil.Process(next(p["pid"] for p in stack.status()["processes"]
                                    if p["name"] == "relay"))
        assert [c.name() for c in relay.children()] == ["ffmpeg"]
        pids = {p["name"]: p["pid"] for p in stack.status()["processes"]}
        secret = "TIDZAM_ICECAST_SOURCE_PASSWORD"
        assert relay.environ()[secret] == icecast.source_password
        assert all(secret not in psutil.Process(pids[name]).environ()
                   for name in ("classifier-0", "projector", "live"))
        # Icecast drops a silent mount itself (source-timeout); the relay's own encoder
        # must go too, or every stopped session leaks an ffmpeg.
        wait_for(lambda: not relay.children(), 20, "the idle channel's encoder to stop")
        wait_for(lambda: "stray-out_0.ogg" not in icecast_mounts(icecast.url), 20,
                 "the idle relay to be unmounted")
