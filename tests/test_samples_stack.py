"""Sample extraction in the running stack: rules from the command line, real
recordings replayed, the extractor process writing samples, the projection and the
`samples` commands reading them; a kill -9 of the extractor loses and doubles nothing."""

from __future__ import annotations

import csv
import io
import itertools
import json
from pathlib import Path

import psycopg
import pytest

from tests.real_audio import DAY, MEGAGLEST, NIGHT, RAIN, real_file
from tests.stack_helpers import (
    ctl,
    kill_and_restart,
    replay_in_background,
    running_stack,
    wait_all_read,
    wait_for,
)
from tidzam_ctl.stack.stack import Stack

START = "2025-06-15T04:00:00Z"
COOLDOWN_S = 4.0


def _samples(stack: Stack) -> list[tuple[str, str, int, int, str]]:
    with psycopg.connect(stack.database_url) as conn:
        rows = conn.execute(
            "SELECT sample_id, source, channel, (extract(epoch FROM window_start) * 1e6)::bigint,"
            " label FROM samples ORDER BY sample_id").fetchall()
    return [(str(a), str(b), int(c), int(d), str(e)) for a, b, c, d, e in rows]


def _check_samples(stack: Stack, root: Path) -> list[tuple[str, str, int, int, str]]:
    """Files, events and rows agree; every sample once; cooldown kept; no speech."""
    rows = _samples(stack)
    ids = [r[0] for r in rows]
    assert len(ids) == len(set(ids))
    on_disk = sorted(p.stem for p in root.rglob("*.json") if not p.name.startswith("."))
    assert on_disk == ids, "sidecars and projected samples differ"
    assert sorted(p.stem for p in root.rglob("*.flac")) == ids
    assert not list(root.rglob(".*.part"))
    by_channel: dict[tuple[str, int], list[int]] = {}
    for _, source, channel, start_us, label in rows:
        by_channel.setdefault((source, channel), []).append(start_us)
        assert not label.startswith("speech")
    for starts in by_channel.values():
        starts.sort()
        assert all(b - a >= COOLDOWN_S * 1e6 for a, b in itertools.pairwise(starts))
    return rows


def test_rules_extract_samples_that_the_commands_read(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with running_stack(home) as stack:
        states = {p["name"]: p["state"] for p in stack.status()["processes"]}
        assert states["extractor"] == "running"
        # bad rules: a clear error, nothing changed
        for bad, why in ((["--rate", "7"], "rate"), (["--classes", "birds["], "class pattern"),
                         (["--before", "400"], "before_s")):
            done = ctl(home, "rules", "set", "*", *bad)
            assert done.returncode == 2 and why in done.stderr, done.stderr
        done = ctl(home, "rules", "set", "nowhere")
        assert done.returncode == 2 and "no source named 'nowhere'" in done.stderr
        assert json.loads(ctl(home, "rules", "get", "--json").stdout)["rules"] == []
        done = ctl(home, "rules", "set", "*", "--classes", "*", "--rate", "1",
                   "--cooldown", str(COOLDOWN_S), "--before", "0.5", "--after", "0.5")
        assert done.returncode == 0, done.stderr
        done = ctl(home, "replay", str(real_file(MEGAGLEST, RAIN)),
                   str(real_file(MEGAGLEST, DAY)), "--source", "pond", "--start", START,
                   "--wait")
        assert done.returncode == 0, done.stderr
        wait_all_read(stack)
        rows = _check_samples(stack, stack.settings.samples_root)
        # 76 s of stereo audio, one sample per channel every 4 s at most
        assert 20 <= len(rows) <= 2 * 76 / COOLDOWN_S + 2, len(rows)
        assert {r[2] for r in rows} == {0, 1}

        info = json.loads(ctl(home, "samples", "info", "--json").stdout)
        assert sum(c["samples"] for c in info["samples"].values()) == len(rows)
        assert all(c["unchecked"] == c["samples"] for c in info["samples"].values())
        # a review: one accepted, one relabelled; then the export says so
        first, second = rows[0][0], rows[1][0]
        assert ctl(home, "samples", "label", first, "--accept").returncode == 0
        assert ctl(home, "samples", "label", second, "--as", "wind").returncode == 0
        done = ctl(home, "samples", "label", "no-such-sample", "--as", "wind")
        assert done.returncode == 2 and "no such sample" in done.stderr

        def reviewed() -> bool:
            with psycopg.connect(stack.database_url) as conn:
                row = conn.execute("SELECT count(*) FROM samples WHERE reviewed_label"
                                   " IS NOT NULL").fetchone()
            return row is not None and row[0] == 2
        wait_for(reviewed, 30, "the two reviews projected")
        exported = list(csv.DictReader(io.StringIO(ctl(home, "samples", "export").stdout)))
        assert len(exported) == len(rows)
        labels = {r["sample_id"]: r["reviewed_label"] for r in exported}
        assert labels[second] == "wind" and labels[first] == rows[0][4]
        raven = ctl(home, "samples", "export", "--format", "raven").stdout.splitlines()
        assert raven[0].startswith("Selection\tView\tChannel\tBegin Time (s)")
        assert len(raven) == len(rows) + 1
        begin, end = (float(x) for x in raven[1].split("\t")[3:5])
        assert end - begin == pytest.approx(1.95, abs=0.01)  # the selector's window
        # the rule history: the set in force before any rule was empty
        assert json.loads(ctl(home, "rules", "get", "--json", "--at",
                              "2000-01-01T00:00:00Z").stdout)["rules"] == []
        assert ctl(home, "rules", "rm", "*").returncode == 0
        assert json.loads(ctl(home, "rules", "get", "--json").stdout)["rules"] == []


def _run(home: Path, files: list[Path], disturb: bool) -> list[tuple[str, str, int, int, str]]:
    with running_stack(home) as stack:
        assert ctl(home, "rules", "set", "*", "--classes", "*", "--rate", "1", "--cooldown",
                   str(COOLDOWN_S)).returncode == 0
        replay = replay_in_background(home, *map(str, files), "--source", "wood", "--start",
                                      START, "--speed", "25")
        if disturb:
            wait_for(lambda: len(_samples(stack)) >= 5, 120, "a few samples before the kill")
            kill_and_restart(stack, "extractor")
        _, err = replay.communicate(timeout=300)
        assert replay.returncode == 0, err
        wait_all_read(stack)
        return _check_samples(stack, stack.settings.samples_root)


@pytest.mark.slow
def test_kill_9_extractor_mid_stream_extracts_each_sample_once(tmp_path: Path) -> None:
    files = [real_file(MEGAGLEST, NIGHT), real_file(MEGAGLEST, DAY)]
    calm = _run(tmp_path / "calm", files, disturb=False)
    hurt = _run(tmp_path / "hurt", files, disturb=True)
    assert len(calm) >= 40
    assert hurt == calm  # the same samples, each once, however the extractor was stopped
