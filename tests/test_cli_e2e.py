"""A user's path through the CLI: replay a real recording, query SQL, rebuild, replay again."""

from __future__ import annotations

import json
from pathlib import Path

from tests.real_audio import MEGAGLEST, RAIN, STORM, real_file
from tests.stack_helpers import ctl, running_stack


def _query(home: Path, *args: str, what: str = "detections") -> list[dict]:  # type: ignore[type-arg]
    done = ctl(home, "query", what, "--json", "--limit", "100000", *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_replay_query_rebuild_and_replay_again(tmp_path: Path) -> None:
    home = tmp_path / "home"
    rain = real_file(MEGAGLEST, RAIN)  # 15.8 s of a stereo storm (rain + thunder)
    with running_stack(home):
        done = ctl(home, "replay", str(rain), "--source", "pond", "--start",
                   "2025-06-01T00:00:00Z", "--wait")
        assert done.returncode == 0, done.stderr
        assert "pond: 1 file(s), 2 channel(s)" in done.stderr
        rows = _query(home, "--source", "pond")
        assert rows and {r["channel"] for r in rows} == {0, 1}
        assert rows[0]["time"].startswith("2025-06-01T00:00:00")
        assert set(rows[0]) == {"time", "source", "channel", "label", "confidence",
                                "model_id", "model_version"}
        labels = [r["label"] for r in rows]
        assert sum(label in STORM for label in labels) > len(labels) / 2, labels  # a storm
        heard = max(STORM, key=labels.count)

        later = _query(home, "--source", "pond", "--channel", "1", "--label", heard,
                       "--since", "2025-06-01T00:00:05Z", "--until", "2025-06-01T00:00:10Z")
        assert later and all(r["channel"] == 1 and r["label"] == heard for r in later)
        assert all("00:00:05" <= r["time"][11:19] < "00:00:10" for r in later)

        events = _query(home, "--source", "pond", what="events")
        assert sum(e["windows"] for e in events) == len(rows)  # every detection in one event
        assert len(events) < len(rows) / 2  # rain lasts: windows merge into long events

        url = ctl(home, "psql", "--url").stdout.strip()
        assert url.startswith("postgresql://") and "127.0.0.1" in url

        done = ctl(home, "projections", "rebuild")
        assert done.returncode == 0, done.stderr
        assert _query(home, "--source", "pond") == rows
        assert _query(home, "--source", "pond", what="events") == events

        done = ctl(home, "replay", str(rain), "--source", "pond", "--start",
                   "2025-06-01T00:00:00Z", "--wait")
        assert done.returncode == 0, done.stderr
        assert _query(home, "--source", "pond") == rows  # the same recording, stored once
        assert _query(home, "--source", "pond", what="events") == events

        table = ctl(home, "query", "detections", "--source", "pond", "--limit", "3")
        assert f"3 of {len(rows):,} detections (use --limit" in table.stdout
        assert "selector@" in table.stdout


def test_query_without_a_stack_says_what_to_do(tmp_path: Path) -> None:
    done = ctl(tmp_path / "none", "query", "detections")
    assert done.returncode == 1
    assert "tidzam_ctl up" in done.stderr or "PostgreSQL" in done.stderr
