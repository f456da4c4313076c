"""``tidzam_ctl query detections|events`` against a real PostgreSQL: whole timestamps in
an 80-column terminal, --limit with the total, and CSV / JSON for scripts."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool
from rich.cells import cell_len
from rich.console import Console

from bus_schemas.events import Event
from projections.store import ProjectionStore, to_datetime
from tests.fixtures_pg import prediction
from tidzam_ctl import __main__ as cli
from tidzam_ctl.commands import query as query_command
from tidzam_ctl.commands import query_format

REPO = Path(__file__).resolve().parents[1]
T0 = 1_750_000_000_123_000_000  # 2025-06-15T15:06:40.123Z
HALF = 500_000_000
LONG_SOURCE = "marsh-boardwalk-north-microphone"  # wider than an 80-column table allows
LONG_VERSION = "1.1.0+birds.2+insects.4+frogs.7"

Pool = AsyncConnectionPool[Any]


@pytest.fixture
async def filled(pg_pool: Pool) -> Pool:
    """12 half-second windows of LONG_SOURCE: birds 0-5, rain 6-8, birds 9-11 (so three
    events), and 3 windows of the pond as model 2, a day later."""
    plan = ["birds"] * 6 + ["rain"] * 3 + ["birds"] * 3
    events: list[Event] = [
        prediction(T0 + i * HALF, source=LONG_SOURCE, channel=3, result=(label,),
                   scores=(0.9, 0.75, 0.0, 0.0, 0.0), model_version=LONG_VERSION)
        for i, label in enumerate(plan)]
    day = 86_400 * 1_000_000_000
    events += [prediction(T0 + day + i * HALF, source="pond", model_version="2")
               for i in range(3)]
    await ProjectionStore(pg_pool).apply("main", "EVENTS", list(enumerate(events, start=1)))
    return pg_pool


def run_ctl(dsn: str, tmp_path: Path, *args: str, columns: int = 80,
            ) -> subprocess.CompletedProcess[str]:
    """``python -m tidzam_ctl`` as a user runs it, on the test's database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDZAM_")}
    env.update(TIDZAM_HOME=str(tmp_path / "home"), TIDZAM_DATABASE_URL=dsn,
               COLUMNS=str(columns))
    return subprocess.run([sys.executable, "-m", "tidzam_ctl", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def in_process(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
               dsn: str, tmp_path: Path, *args: str, width: int = 80) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``tidzam_ctl args`` run here, tables ``width`` wide."""
    monkeypatch.setenv("TIDZAM_DATABASE_URL", dsn)
    monkeypatch.setenv("TIDZAM_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(query_command, "out", Console(width=width, soft_wrap=True))
    with pytest.raises(SystemExit) as ended:
        cli.main(list(args))
    captured = capsys.readouterr()
    assert isinstance(ended.value.code, int)
    return ended.value.code, captured.out, captured.err


def stamps(start_ns: int, n: int, step: int = HALF) -> list[str]:
    return [query_format.stamp(to_datetime(start_ns + i * step)) for i in range(n)]


# --------------------------------------------------------------------- tables


async def test_detections_at_80_columns_show_whole_timestamps(filled: Pool, pg_dsn: str,
                                                              tmp_path: Path) -> None:
    done = run_ctl(pg_dsn, tmp_path, "query", "detections")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert max(cell_len(line) for line in lines) <= 80
    body = [line for line in lines if line.startswith("2025-")]
    assert [line[:23] for line in body] == stamps(T0, 12) + stamps(T0 + 86_400 * 10**9, 3)
    assert stamps(T0, 1) == ["2025-06-15 15:06:40.123"]
    assert all(" marsh-boa" in line and "… " in line for line in body[:12])  # names shrank
    assert "model" in lines[0]  # two models: a column
    assert lines[-1] == "15 detections"

    done = run_ctl(pg_dsn, tmp_path, "query", "detections", "--source", LONG_SOURCE)
    lines = done.stdout.splitlines()
    assert "model" not in lines[0] and LONG_SOURCE in lines[2]  # one model: room for names
    assert lines[-1] == f"12 detections; model selector@{LONG_VERSION}"


async def test_events_at_80_columns_show_whole_timestamps(filled: Pool, pg_dsn: str,
                                                          tmp_path: Path) -> None:
    done = run_ctl(pg_dsn, tmp_path, "query", "events")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert max(cell_len(line) for line in lines) <= 80
    body = [line.split() for line in lines if line.startswith("2025-")]
    # start (date, time), end (same day: its time), ..., windows, peak, mean, model
    assert [(b[0] + " " + b[1], b[2]) for b in body] == [
        (stamps(T0, 1)[0], "15:06:43.123"),
        (stamps(T0 + 6 * HALF, 1)[0], "15:06:44.623"),
        (stamps(T0 + 9 * HALF, 1)[0], "15:06:46.123"),
        ("2025-06-16 15:06:40.123", "15:06:41.623"),
    ]
    assert [b[-4:-1] for b in body] == [["6", "0.90", "0.90"], ["3", "0.75", "0.75"],
                                        ["3", "0.90", "0.90"], ["3", "0.90", "0.90"]]
    assert lines[0].split()[-1] == "model"  # two models: a column
    assert lines[-1] == "4 events"


@pytest.fixture
async def over_midnight(pg_pool: Pool) -> Pool:
    midnight = 1_750_032_000_000_000_000  # 2025-06-16T00:00:00Z
    await ProjectionStore(pg_pool).apply("main", "EVENTS", [
        (1, prediction(midnight - HALF)), (2, prediction(midnight))])
    return pg_pool


def test_an_event_over_midnight_shows_its_whole_end(over_midnight: Pool, pg_dsn: str,
                                                    tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = in_process(monkeypatch, capsys, pg_dsn, tmp_path, "query", "events")
    assert code == 0
    assert "2025-06-15 23:59:59.500  2025-06-16 00:00:00.500" in out


def test_limit_says_how_many_matched(filled: Pool, pg_dsn: str, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = in_process(monkeypatch, capsys, pg_dsn, tmp_path,
                              "query", "detections", "--limit", "3")
    assert code == 0
    assert "3 of 15 detections (use --limit to see more)" in out
    assert len([line for line in out.splitlines() if line.startswith("2025-")]) == 3
    code, out, _ = in_process(monkeypatch, capsys, pg_dsn, tmp_path,
                              "query", "events", "--min-windows", "4")
    assert out.splitlines()[-1] == f"1 event; model selector@{LONG_VERSION}"
    code, out, _ = in_process(monkeypatch, capsys, pg_dsn, tmp_path,
                              "query", "events", "--label", "owl")
    assert (code, out.strip()) == (0, "no events match")


def test_a_wider_terminal_shrinks_nothing(filled: Pool, pg_dsn: str, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = in_process(monkeypatch, capsys, pg_dsn, tmp_path,
                              "query", "detections", width=160)
    assert code == 0 and "…" not in out
    assert LONG_SOURCE in out and f"selector@{LONG_VERSION}" in out


# --------------------------------------------------------------- csv and json


def test_csv(filled: Pool, pg_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                   capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = in_process(monkeypatch, capsys, pg_dsn, tmp_path, "query", "events",
                                "--format", "csv", "--limit", "2")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["start"] for r in rows] == [to_datetime(T0).isoformat(),
                                          to_datetime(T0 + 6 * HALF).isoformat()]
    assert rows[0]["end"] == to_datetime(T0 + 6 * HALF).isoformat()
    assert (rows[0]["source"], rows[0]["channel"], rows[0]["windows"]) == (LONG_SOURCE, "3", "6")
    assert float(rows[0]["mean_confidence"]) == pytest.approx(0.9)
    assert "2 of 4 events (use --limit to see more)" in err and "2 of 4" not in out

    code, out, err = in_process(monkeypatch, capsys, pg_dsn, tmp_path, "query", "detections",
                                "--format", "csv", "--label", "owl")
    assert out == "time,source,channel,label,confidence,model_id,model_version\n"
    assert "no detections match" in err


def test_json_and_its_old_alias(filled: Pool, pg_dsn: str, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    _, out, err = in_process(monkeypatch, capsys, pg_dsn, tmp_path, "query", "detections",
                             "--format", "json", "--source", "pond")
    _, alias, _ = in_process(monkeypatch, capsys, pg_dsn, tmp_path, "query", "detections",
                             "--json", "--source", "pond")
    assert json.loads(out) == json.loads(alias)
    rows = json.loads(out)
    assert [r["time"] for r in rows] == [to_datetime(T0 + 86_400 * 10**9 + i * HALF).isoformat()
                                         for i in range(3)]
    assert set(rows[0]) == {"time", "source", "channel", "label", "confidence", "model_id",
                            "model_version"}
    assert "3 detections" in err

    _, out, _ = in_process(monkeypatch, capsys, pg_dsn, tmp_path, "query", "events",
                           "--json", "--since", "2025-06-15T15:06:44Z",
                           "--until", "2025-06-16T00:00:00Z")
    events = json.loads(out)
    assert [(e["label"], e["windows"]) for e in events] == [("rain", 3), ("birds", 3)]
    assert events[0]["peak_confidence"] == pytest.approx(0.75)


@pytest.mark.parametrize("args", [
    ("--limit", "0"), ("--since", "yesterday"), ("--min-windows", "0")])
def test_bad_options_are_usage_errors(pg_dsn: str, tmp_path: Path, args: tuple[str, ...],
                                            monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = in_process(monkeypatch, capsys, pg_dsn, tmp_path, "query", "events", *args)
    assert code == 2 and "error:" in err


# ------------------------------------------------------------------ the parts


@pytest.mark.parametrize(("shown", "total", "capped", "line"), [
    (0, 0, False, "no detections match"),
    (1, 1, False, "1 detection"),
    (12, 12, False, "12 detections"),
    (1000, 12345, False, "1,000 of 12,345 detections (use --limit to see more)"),
    (1000, 1_000_000, True, "1,000 of at least 1,000,000 detections (use --limit to see more)"),
])
def test_summary(shown: int, total: int, capped: bool, line: str) -> None:
    assert query_format.summary("detections", shown, total, capped) == line


def test_stamps_are_utc_to_the_millisecond() -> None:
    moment = to_datetime(T0 + 456_789)  # .123456789 s
    assert query_format.stamp(moment) == "2025-06-15 15:06:40.123"
    later = to_datetime(T0 + 3_600 * 10**9)
    assert query_format.clock_or_stamp(later, moment) == "16:06:40.123"
