"""JACK: jackd (dummy driver) supervised by the stack; other clients' ports captured."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import psycopg

from audio.decode import decode_all
from consumers.jack_output import PortFifo
from tests.audio_files import default_grid, expected_windows, write_pcm
from tests.real_audio import MEGAGLEST, RAIN, STORM, real_file
from tests.stack_helpers import ctl, running_stack, wait_for

ASTERISK = "asterisk-core-sounds-en-wav"
SPEECH = "usr/share/asterisk/sounds/en_US_f_Allison/demo-instruct.wav"

# Another JACK program, in its own process: plays each track on its own output port.
PLAYER = """
import sys, time, numpy as np, jack
tracks = np.load(sys.argv[1])
client = jack.Client("player", no_start_server=True)
outs = [client.outports.register(f"out_{k}") for k in range(tracks.shape[0])]
pos = [0]
@client.set_process_callback
def process(frames):
    idx = np.arange(pos[0], pos[0] + frames) % tracks.shape[1]
    for k, port in enumerate(outs):
        port.get_array()[:] = tracks[k, idx]
    pos[0] += frames
client.activate()
print("playing", flush=True)
time.sleep(float(sys.argv[2]))
"""


def _count(url: str, channel: int) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM predictions WHERE source = 'mics' "
                           "AND channel = %s", (channel,)).fetchone()
    return int(row[0]) if row else 0


def test_jack_ports_are_captured_channel_by_channel(tmp_path: Path) -> None:
    assert shutil.which("jackd"), "jackd is needed (scripts/test installs jackd2 as root)"
    rain, _ = decode_all(real_file(MEGAGLEST, RAIN), 48_000)
    speech, _ = decode_all(real_file(ASTERISK, SPEECH), 48_000)
    n = 10 * 48_000
    np.save(tmp_path / "tracks.npy", np.stack([np.resize(rain[0], n), np.resize(speech[0], n)])
            .astype(np.float32))
    with running_stack(tmp_path / "home", jack=True) as stack:
        assert stack.jack is not None
        states = {p["name"]: p["state"] for p in stack.status()["processes"]}
        assert states["jackd"] == "running"
        env = dict(os.environ, JACK_DEFAULT_SERVER=stack.jack.name)
        player = subprocess.Popen([sys.executable, "-c", PLAYER, str(tmp_path / "tracks.npy"),
                                   "90"], env=env, stdout=subprocess.PIPE, text=True)
        try:
            assert player.stdout is not None and player.stdout.readline().strip() == "playing"
            done = ctl(stack.home, "source", "add", "mics", "--jack", "^player:out_")
            assert done.returncode == 0, done.stderr
            wait_for(lambda: _count(stack.database_url, 1) >= expected_windows(
                8 * 48_000, *default_grid()), 60, "8 s of captured windows")
        finally:
            player.kill()
            player.wait()
        with psycopg.connect(stack.database_url) as conn:
            rows = conn.execute("SELECT channel, label FROM detections "
                                "WHERE source = 'mics'").fetchall()
            kind = conn.execute("SELECT kind, channels FROM sources WHERE name = 'mics'"
                                ).fetchone()
        assert ctl(stack.home, "source", "rm", "mics").returncode == 0
    assert kind == ("jack", [0, 1])
    by_channel: dict[int, Counter[str]] = {}
    for channel, label in rows:
        by_channel.setdefault(channel, Counter())[label] += 1
    assert by_channel[0].most_common(1)[0][0] in STORM
    assert by_channel[1].most_common(1)[0][0] == "speech"


# Another JACK program: records the given output ports once they exist, then reports
# when they are gone again.
RECORDER = """
import sys, time, numpy as np, jack
names = sys.argv[2].split(",")
client = jack.Client("recorder", no_start_server=True)
ins = [client.inports.register(f"in_{k}") for k in range(len(names))]
recording = [False]
blocks = [[] for _ in names]
@client.set_process_callback
def process(frames):
    if recording[0]:
        for k, port in enumerate(ins):
            blocks[k].append(port.get_array().copy())
client.activate()
def present():
    # a port can vanish between JACK's listing and its lookup by name: a vanished
    # port is simply not present
    have = set()
    for name in names:
        try:
            client.get_port_by_name(name)
            have.add(name)
        except jack.JackError:
            pass
    return [n for n in names if n in have]
deadline = time.time() + 60
while len(present()) < len(names):
    if time.time() > deadline:
        sys.exit(f"ports never appeared: {present()}")
    time.sleep(0.05)
for name, port in zip(names, ins):
    client.connect(name, port)
recording[0] = True
print("recording", flush=True)
time.sleep(float(sys.argv[3]))
recording[0] = False
np.save(sys.argv[1], np.stack([np.concatenate(b) for b in blocks]))
start = time.time()
while present() and time.time() - start < 60:
    time.sleep(0.1)
print("gone" if not present() else "still there", round(time.time() - start, 1), flush=True)
"""


def _best_match(segment: np.ndarray, track: np.ndarray) -> float:
    """Highest normalised cross-correlation of ``segment`` anywhere in ``track``."""
    n = len(track) + len(segment)
    corr = np.fft.irfft(np.fft.rfft(track, n) * np.conj(np.fft.rfft(segment, n)), n)
    valid = len(track) - len(segment) + 1
    energy = np.concatenate([[0.0], np.cumsum(track.astype(np.float64) ** 2)])
    window = np.sqrt(energy[len(segment):len(segment) + valid] - energy[:valid]) + 1e-9
    return float(np.max(corr[:valid] / (window * np.linalg.norm(segment) + 1e-9)))


def test_loaded_channels_play_on_jack_output_ports(tmp_path: Path) -> None:
    """A file source's channels appear as JACK ports carrying exactly its audio."""
    assert shutil.which("jackd"), "jackd is needed (scripts/test installs jackd2 as root)"
    rain, _ = decode_all(real_file(MEGAGLEST, RAIN), 48_000)
    speech, _ = decode_all(real_file(ASTERISK, SPEECH), 48_000)
    n = 9 * 48_000
    tracks = np.stack([np.resize(rain[0], n), np.resize(speech[0], n)]).astype(np.float32)
    write_pcm(tmp_path / "room.wav", tracks)
    with running_stack(tmp_path / "home", jack=True) as stack:
        assert stack.jack is not None
        states = {p["name"]: p["state"] for p in stack.status()["processes"]}
        assert states["jack-out"] == "running"
        env = dict(os.environ, JACK_DEFAULT_SERVER=stack.jack.name)
        names = "tidzam-out:room-out_0,tidzam-out:room-out_1"
        recorder = subprocess.Popen([sys.executable, "-c", RECORDER, str(tmp_path / "rec.npy"),
                                     names, "4"], env=env, stdout=subprocess.PIPE, text=True)
        try:
            done = ctl(stack.home, "source", "add", "room", "--file", str(tmp_path / "room.wav"))
            assert done.returncode == 0, done.stderr
            assert recorder.stdout is not None
            assert recorder.stdout.readline().strip() == "recording"
            ending = recorder.stdout.readline().split()
        finally:
            recorder.kill()
            recorder.wait()
    recorded = np.load(tmp_path / "rec.npy")
    assert ending[0] == "gone", "the ports stay after the source ended"
    for k, other in ((0, 1), (1, 0)):
        loud = np.flatnonzero(np.abs(recorded[k]) > 1e-3)
        assert loud.size > 48_000, f"port {k} played almost nothing"
        segment = recorded[k][loud[0]:loud[0] + 24_000]
        assert _best_match(segment, tracks[k]) > 0.99, f"port {k} does not carry its channel"
        assert _best_match(segment, tracks[other]) < 0.5, f"port {k} carries channel {other}"


def test_port_fifo_prefills_bounds_and_counts() -> None:
    """The FIFO waits for its prefill, drops the oldest beyond its bound, counts underruns."""
    fifo = PortFifo(max_samples=1000, prefill=300)
    out = np.ones(256, np.float32)
    fifo.push(np.arange(200, dtype=np.float32))
    fifo.pull(out)
    assert not out.any() and fifo.size == 200  # below the prefill: silence, nothing taken
    fifo.push(np.arange(200, 1500, dtype=np.float32))
    assert fifo.size == 1000 and fifo.dropped == 500  # bounded: the oldest 500 went
    fifo.pull(out)
    assert np.array_equal(out, np.arange(500, 756, dtype=np.float32))
    for _ in range(3):
        fifo.pull(out)
    assert np.array_equal(out[:232], np.arange(1268, 1500, dtype=np.float32))
    assert not out[232:].any() and fifo.underruns == 1 and not fifo.playing
    fifo.push(np.ones(100, np.float32))
    fifo.pull(out, draining=True)  # a final chunk plays out without waiting for prefill
    assert out[:100].all() and not out[100:].any() and fifo.underruns == 1
