"""The mixer in the running stack, real audio and real processes: the gain controller
turns down a clipping channel and mutes a dead one, never touches a healthy one; a
person's mute wins over the controller and survives a restart of every process; what
the classifier hears is the mixed channel; all read back from the projections."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from audio.decode import decode_all
from tests.audio_files import write_pcm
from tests.real_audio import DAY, MEGAGLEST, NIGHT, real_file
from tests.stack_helpers import (
    ctl,
    kill_and_restart,
    replay_in_background,
    running_stack,
    wait_all_read,
    wait_for,
)
from tidzam_ctl.stack.stack import Stack

RATE = 48_000
START = datetime.fromisoformat("2025-06-15T04:00:00+00:00")


@pytest.fixture(scope="module")
def recordings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("mixer")
    day, _ = decode_all(real_file(MEGAGLEST, DAY), RATE)  # 60 s, stereo, never clips
    night, _ = decode_all(real_file(MEGAGLEST, NIGHT), RATE)
    trouble = np.stack([np.clip(day[0] * 8.0, -1.0, 1.0),  # 0: clipping
                        np.zeros_like(day[0]),  # 1: dead
                        day[1]])  # 2: healthy
    calm = np.concatenate([night, day], axis=1)
    calm = np.concatenate([calm] * (600 * RATE // calm.shape[1] + 1), axis=1)[:, :600 * RATE]
    return {"trouble": write_pcm(folder / "trouble.wav", trouble.astype(np.float32)),
            "calm": write_pcm(folder / "calm.wav", calm.astype(np.float32))}


def _replay(home: Path, path: Path, source: str, start: datetime, speed: str = "20") -> None:
    done = ctl(home, "replay", str(path), "--source", source, "--start", start.isoformat(),
               "--speed", speed, "--wait")
    assert done.returncode == 0, done.stderr


def _log(stack: Stack, kind: str, source: str) -> list[dict[str, Any]]:
    from psycopg.rows import dict_row
    with psycopg.connect(stack.database_url, row_factory=dict_row) as conn:
        return conn.execute("SELECT * FROM mixer_log WHERE kind = %s AND source = %s"
                            " ORDER BY at, from_time", (kind, source)).fetchall()


def _heard(stack: Stack, source: str, channel: int, start: datetime) -> Counter[str]:
    """What the classifier decided on a channel over one replay (an hour from ``start``)."""
    with psycopg.connect(stack.database_url) as conn:
        rows = conn.execute("SELECT label FROM detections WHERE source = %s AND channel = %s"
                            " AND time >= %s AND time < %s",
                            (source, channel, start, start + timedelta(hours=1))).fetchall()
    return Counter(str(r[0]) for r in rows)


def test_the_controller_turns_down_mutes_and_leaves_healthy_channels(
        tmp_path: Path, recordings: dict[str, Path]) -> None:
    home = tmp_path / "home"
    with running_stack(home) as stack:
        assert {p["name"]: p["state"] for p in stack.status()["processes"]}[
            "gain-control"] == "running"
        _replay(home, recordings["trouble"], "trouble", START)
        _replay(home, recordings["calm"], "calm", START, speed="max")  # 10 min, 2 channels
        wait_all_read(stack)
        commands = _log(stack, "command", "trouble")
        by_channel = {c["channel"]: c for c in commands}
        assert set(by_channel) == {0, 1}, commands  # channel 2 is healthy: untouched
        assert (by_channel[0]["action"], by_channel[0]["gain_db"], by_channel[0]["origin"],
                by_channel[0]["by"]) == ("gain", -6.0, "auto", "gain-controller")
        assert by_channel[0]["reason"].startswith("clipping")
        assert by_channel[1]["action"] == "mute" and by_channel[1]["reason"].startswith("dead")
        assert _log(stack, "command", "calm") == []  # 10 minutes of healthy audio
        # the gain stage applied them to the audio after the evidence
        applied = {(a["channel"], a["gain_db"], a["muted"]): a for a in _log(stack, "applied",
                                                                             "trouble")}
        assert set(applied) == {(0, -6.0, False), (1, 0.0, True)}
        # clipping from the first sample must last 2 s (CLIP_FOR_S) before the command:
        # the earliest chunk it can apply to starts where that evidence ends, at 2 s
        assert START + timedelta(seconds=2) <= applied[(0, -6.0, False)]["from_time"] \
            < START + timedelta(seconds=60)
        state = {(r["source"], r["channel"]): r
                 for r in json.loads(ctl(home, "mixer", "ls", "--json").stdout)}
        assert (state[("trouble", 0)]["gain_db"], state[("trouble", 0)]["pinned"]) == (-6.0,
                                                                                      False)
        assert state[("trouble", 1)]["muted"] and state[("trouble", 1)]["reason"].startswith(
            "dead")
        assert ("trouble", 2) not in state and ("calm", 0) not in state


def test_a_manual_mute_wins_and_survives_a_restart_of_everything(
        tmp_path: Path, recordings: dict[str, Path]) -> None:
    home = tmp_path / "home"
    hours = [START + timedelta(hours=h) for h in range(4)]
    with running_stack(home) as stack:
        _replay(home, recordings["trouble"], "trouble", hours[0])
        wait_all_read(stack)
        assert sum(_heard(stack, "trouble", 0, hours[0]).values()) > 20
        assert _heard(stack, "trouble", 0, hours[0])["quiet"] == 0
        # bad settings: a clear error, nothing published
        for bad, why in ((["trouble", "7", "--mute"], "has channels 0,1,2"),
                         (["nowhere", "0", "--mute"], "no source named 'nowhere'"),
                         (["trouble", "0", "--gain-db", "400"], "gain_db")):
            done = ctl(home, "mixer", "set", *bad)
            assert done.returncode == 2 and why in done.stderr, done.stderr
        done = ctl(home, "mixer", "set", "trouble", "0", "--mute", "--reason", "maintenance")
        assert done.returncode == 0, done.stderr
        _replay(home, recordings["trouble"], "trouble", hours[1])  # still clipping
        wait_all_read(stack)
        heard = _heard(stack, "trouble", 0, hours[1])
        assert set(heard) == {"quiet"}, heard  # the classifier hears the muted channel
    with running_stack(home) as stack:  # every process and server restarted
        _replay(home, recordings["trouble"], "trouble", hours[2])
        wait_all_read(stack)
        assert set(_heard(stack, "trouble", 0, hours[2])) == {"quiet"}
        state = {(r["source"], r["channel"]): r
                 for r in json.loads(ctl(home, "mixer", "ls", "--json").stdout)}
        assert state[("trouble", 0)]["muted"] and state[("trouble", 0)]["pinned"]
        assert state[("trouble", 0)]["reason"] == "maintenance"
        assert ctl(home, "mixer", "set", "trouble", "0", "--auto").returncode == 0
        _replay(home, recordings["trouble"], "trouble", hours[3])
        wait_all_read(stack)
        heard = _heard(stack, "trouble", 0, hours[3])
        assert heard["quiet"] < sum(heard.values()) / 2, heard  # heard again, turned down
        applied = [a for a in _log(stack, "applied", "trouble")
                   if a["channel"] == 0 and a["from_time"] >= hours[3]]
        assert [(a["gain_db"], a["muted"]) for a in applied] == [(-6.0, False)]
        log = json.loads(ctl(home, "mixer", "log", "--source", "trouble", "--json").stdout)
        assert any(r["action"] == "auto" and r["origin"] == "manual" for r in log)


@pytest.mark.slow
def test_kill_9_gain_controller_loses_and_doubles_no_command(
        tmp_path: Path, recordings: dict[str, Path]) -> None:
    """Killed while the trouble plays (its evidence half read), restarted by `check`:
    still one turn-down of the clipping channel and one mute of the dead one."""
    home = tmp_path / "home"
    with running_stack(home) as stack:
        replay = replay_in_background(home, str(recordings["trouble"]), "--source", "trouble",
                                      "--start", START.isoformat(), "--speed", "4")
        wait_for(lambda: bool(_log(stack, "command", "trouble")), 60, "a first command")
        kill_and_restart(stack, "gain-control")
        _, err = replay.communicate(timeout=120)
        assert replay.returncode == 0, err
        wait_all_read(stack)
        commands = sorted((c["channel"], c["action"], c["gain_db"])
                          for c in _log(stack, "command", "trouble"))
        assert commands == [(0, "gain", -6.0), (1, "mute", None)], commands
