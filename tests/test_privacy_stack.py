"""Privacy in the running stack (``up --privacy mask``, Icecast and the archiver): a real
recording with a voice between two stretches of birds, replayed in real time. What
Icecast relays has silence where the classifier heard speech and the birds around it;
the archive (``masked``) holds exact zeros on every private window and the raw samples
everywhere else; ``mixer ls`` counts the windows masked."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import psycopg

from audio import archive
from audio.decode import decode_all
from tests.audio_files import write_pcm
from tests.real_audio import DAY, MEGAGLEST, real_file
from tests.stack_helpers import (
    ctl,
    icecast_mounts,
    replay_in_background,
    running_stack,
    wait_all_read,
    wait_for,
)

RATE = 48_000
ASTERISK = "asterisk-core-sounds-en-wav"
SPEECH = "usr/share/asterisk/sounds/en_US_f_Allison/demo-instruct.wav"
START = datetime.fromisoformat("2025-06-15T04:00:00+00:00")
PART_S = 8


def _recording(path: Path) -> tuple[Path, np.ndarray]:
    birds, _ = decode_all(real_file(MEGAGLEST, DAY), RATE)
    voice, _ = decode_all(real_file(ASTERISK, SPEECH), RATE)
    n = PART_S * RATE
    mono = np.concatenate([birds[0, :n], np.resize(voice[0], n), birds[0, n:2 * n]])
    write_pcm(path, mono[None, :])
    raw, _ = decode_all(path, RATE)
    return path, np.round(raw[0] * 32768).astype(np.int32)


def _private_windows(conn: psycopg.Connection) -> list[tuple[datetime, datetime]]:
    """The windows of the replay the rule calls private (decided speech, or a speech
    score of at least 0.5), from what the projection stored."""
    rows = conn.execute(
        "SELECT p.time, p.end_time FROM predictions p JOIN models m"
        " ON m.model_id = p.model_id AND m.version = p.model_version"
        " WHERE p.source = 'talk' AND p.channel = 0 AND"
        " ('speech' = ANY(p.result) OR p.scores[array_position(m.labels, 'speech')] >= 0.5)"
        " ORDER BY p.time").fetchall()
    return [(a, b) for a, b in rows]


def test_speech_is_silenced_where_heard_and_archived_and_counted(tmp_path: Path) -> None:
    assert shutil.which("ffmpeg") and shutil.which("icecast2")
    path, raw = _recording(tmp_path / "talk.wav")
    home = tmp_path / "home"
    with running_stack(home, icecast=True, archive_dir=tmp_path / "arch",
                       privacy="mask") as stack:
        icecast = stack.icecast
        assert icecast is not None
        replay = replay_in_background(home, str(path), "--source", "talk", "--start",
                                      START.isoformat(), "--speed", "1")
        wait_for(lambda: "talk-out_0.ogg" in icecast_mounts(icecast.url), 30, "the relay mount")
        listen = subprocess.run(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-i",
             f"{icecast.url}/talk-out_0.ogg", "-f", "s16le", "-ac", "1", "-ar", str(RATE),
             "pipe:1"], capture_output=True, timeout=120)
        assert replay.wait(timeout=60) == 0, replay.stderr.read() if replay.stderr else ""
        wait_all_read(stack)
        folder = tmp_path / "arch" / "talk"
        wait_for(lambda: folder.is_dir() and archive.scan(folder, "talk")
                 and abs((archive.scan(folder, "talk")[0].duration_s or 0) - 3 * PART_S) < 0.01,
                 120, "the whole replay archived")
        with psycopg.connect(stack.database_url) as conn:
            private = _private_windows(conn)
        state = {(r["source"], r["channel"]): r
                 for r in json.loads(ctl(home, "mixer", "ls", "--json").stdout)}
        log = ctl(home, "mixer", "log", "--source", "talk")
    # the classifier heard the voice: windows in the middle part only
    assert len(private) >= 4, private
    assert all(START + timedelta(seconds=PART_S - 1) <= a and
               b <= START + timedelta(seconds=2 * PART_S + 1) for a, b in private), private
    # every private window counted once
    assert state[("talk", 0)]["masked"] == len({a for a, _ in private})
    assert "speech masked" in log.stdout

    # the archive: zeros exactly on the private windows, the raw audio elsewhere
    (only,) = archive.scan(tmp_path / "arch" / "talk", "talk")
    assert only.path.name == "talk-2025-06-15-04-00-00.flac"
    kept = np.round(decode_all(only.path, RATE)[0][0] * 32768).astype(np.int32)
    assert len(kept) == len(raw)
    silent = np.zeros(len(raw), dtype=bool)
    for a, b in private:
        i0 = round((a - START).total_seconds() * RATE)
        i1 = round((b - START).total_seconds() * RATE)
        silent[max(0, i0):i1] = True
    leaks = np.flatnonzero(silent & (kept != 0))
    assert not len(leaks), (len(leaks), leaks[:5], leaks[-5:], private)
    assert np.array_equal(kept[~silent], raw[~silent])
    assert np.abs(raw[silent]).max() > 3000  # what was masked was loud: the voice

    # the relay (lossy Vorbis, joined a moment late), aligned on the archive (the same
    # masked audio): quiet wherever a window was private, the birds where they were
    heard = np.frombuffer(listen.stdout, dtype="<i2").astype(np.float64)
    assert len(heard) > 2 * PART_S * RATE, len(heard)
    ref = kept.astype(np.float64)
    size = 1 << int(np.ceil(np.log2(len(ref) + len(heard))))
    corr = np.fft.irfft(np.fft.rfft(ref, size) * np.conj(np.fft.rfft(heard, size)), size)
    lag = int(np.argmax(corr[: len(ref)]))  # heard[0] is ref[lag]
    block, margin = RATE // 4, RATE // 50

    def level(x: np.ndarray) -> float:
        return float(10 * np.log10(np.mean((x / 32768) ** 2) + 1e-12))

    masked_levels, bird_levels = [], []
    for b in range(lag + margin, lag + len(heard) - block - margin, block):
        got = level(heard[b - lag: b - lag + block])
        if silent[b - margin: b + block + margin].all():
            masked_levels.append(got)
        elif not silent[b - margin: b + block + margin].any() and level(ref[b: b + block]) > -40:
            bird_levels.append(got)
    assert len(masked_levels) >= 4 and len(bird_levels) >= 20, (masked_levels, bird_levels)
    assert max(masked_levels) < -60, masked_levels
    assert np.mean(np.array(bird_levels) > -50) > 0.9, bird_levels
