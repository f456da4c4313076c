"""Source databases: folders of hour files ``<name>-YYYY-MM-DD-HH-MM-SS.ext``.

``scan`` lists a folder's archive files in time order with their durations;
``ranges`` merges them into the covered time ranges (the original's ``database``
answer); ``locate`` finds the file holding an instant and the offset inside it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from audio.decode import AudioDecodeError, AudioStream

ARCHIVE_NAME = re.compile(
    r"^(?P<name>.+)-(?P<ts>\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2})(?:\.\d+)?$"
)
GAP_S = 1.0  # files closer than this are one continuous range


def parse_archive_name(path: str | Path) -> tuple[str, datetime] | None:
    """``<name>-YYYY-MM-DD-HH-MM-SS.ext`` → (name, UTC start time), else None."""
    stem = Path(path).name.split(".")[0]
    match = ARCHIVE_NAME.match(stem)
    if not match:
        return None
    ts = datetime.strptime(match["ts"], "%Y-%m-%d-%H-%M-%S").replace(tzinfo=UTC)
    return match["name"], ts


def archive_name(name: str, start_ns: int, ext: str, copy: int = 0) -> str:
    """The file name of an archive of ``name`` starting at ``start_ns`` (UTC, whole
    seconds): ``<name>-YYYY-MM-DD-HH-MM-SS.ext``, or ``…-SS.<copy>.ext`` for another
    file starting in the same second (``parse_archive_name`` reads both)."""
    stamp = datetime.fromtimestamp(start_ns / 1e9, UTC).strftime("%Y-%m-%d-%H-%M-%S")
    return f"{name}-{stamp}.{copy}.{ext}" if copy else f"{name}-{stamp}.{ext}"


@dataclass(frozen=True)
class ArchiveFile:
    path: Path
    name: str
    start: datetime
    duration_s: float | None  # None: the file could not be read

    @property
    def end(self) -> datetime:
        return self.start + timedelta(seconds=self.duration_s or 0.0)


def scan(database: Path, name: str | None = None) -> list[ArchiveFile]:
    """Archive files of ``database`` (only those of source ``name`` if given), by time."""
    if not database.is_dir():
        raise FileNotFoundError(f"no archive folder {database}")
    files = []
    for path in sorted(p for p in database.iterdir() if p.is_file()):
        parsed = parse_archive_name(path)
        if parsed is None or (name is not None and parsed[0] != name):
            continue
        files.append(ArchiveFile(path, parsed[0], parsed[1], _duration(path)))
    files.sort(key=lambda f: f.start)
    return files


def covering(database: Path, name: str, at: datetime,
             longest_s: float = 2 * 3_600.0) -> ArchiveFile | None:
    """The archive file of ``name`` in ``database`` whose audio covers ``at``, if any.

    Only files named within ``longest_s`` before ``at`` are opened (hour files are
    at most an hour long), so this stays cheap in a folder of months of files.
    """
    if not database.is_dir():
        return None
    earliest = at - timedelta(seconds=longest_s)
    for path in database.iterdir():
        parsed = parse_archive_name(path) if path.is_file() else None
        if parsed is None or parsed[0] != name or not earliest <= parsed[1] <= at:
            continue
        found = ArchiveFile(path, parsed[0], parsed[1], _duration(path))
        if found.duration_s is not None and at < found.end:
            return found
    return None


def _duration(path: Path) -> float | None:
    try:
        with AudioStream(path, 48_000) as stream:
            return stream.info.duration_s
    except AudioDecodeError:
        return None


def ranges(files: list[ArchiveFile]) -> list[tuple[datetime, datetime]]:
    """Covered time ranges, contiguous files merged."""
    out: list[tuple[datetime, datetime]] = []
    for f in files:
        if f.duration_s is None:
            continue
        if out and (f.start - out[-1][1]).total_seconds() <= GAP_S:
            out[-1] = (out[-1][0], max(out[-1][1], f.end))
        else:
            out.append((f.start, f.end))
    return out


def locate(files: list[ArchiveFile], at: datetime) -> tuple[int, float] | None:
    """(index of the file playing at ``at``, seconds into it); the next file if ``at``
    falls in a gap; None if ``at`` is after the archive's end."""
    for i, f in enumerate(files):
        if f.duration_s is None:
            continue
        if at < f.start:
            return i, 0.0
        if at < f.end:
            return i, (at - f.start).total_seconds()
    return None


def channel_count(files: list[ArchiveFile]) -> int:
    """The channels of an archive: those of its first readable file (0: none is)."""
    for f in files:
        try:
            with AudioStream(f.path, 48_000) as stream:
                return stream.info.channels
        except AudioDecodeError:
            continue
    return 0
