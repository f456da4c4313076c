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

from learning.audio_stream import decode_all
from tests.real_audio import MEGAGLEST, RAIN, real_file
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
            wait_for(lambda: _count(stack.database_url, 1) >= 16, 60, "captured windows")
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
    assert by_channel[0].most_common(1)[0][0] == "rain"
    assert by_channel[1].most_common(1)[0][0] == "speech"
