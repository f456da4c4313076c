"""Which audio to compare: archive folders, their files by source, and the part of
each file inside [since, until) (``Segment``); where each model's windows sit (``Grid``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from audio.archive import ArchiveFile, scan
from bus_schemas.errors import TidzamError
from inference.features import FeatureParams
from inference.windows import hop_samples

# A file whose length cannot be read is tried when its name puts its start this
# close before ``since`` (archive files are hour files: ``audio.archive``).
UNKNOWN_LENGTH_SLACK = timedelta(hours=2)


class CompareError(TidzamError):
    """Nothing to compare: no archive folder, no archive file in the time range."""


@dataclass(frozen=True)
class Grid:
    """Where a model's windows sit: ``window`` samples every ``hop`` at ``sample_rate``."""

    sample_rate: int
    window: int
    hop: int

    @classmethod
    def of(cls, params: FeatureParams, overlap: float) -> Grid:
        """The live classifier's grid for a model (``inference.windows.hop_samples``)."""
        if not 0.0 <= overlap < 1.0:
            raise ValueError(f"overlap must be in [0, 1), got {overlap}")
        window = params.window_samples
        return cls(params.sample_rate, window, hop_samples(window, overlap))

    def time_ns(self, origin_ns: int, sample: int) -> int:
        """UTC ns of a session's sample index (``AudioChunk.time_of``'s arithmetic)."""
        return origin_ns + sample * 1_000_000_000 // self.sample_rate


def source_folders(archive_dir: Path | None, databases: Sequence[Path] = (),
                   sources: Sequence[str] = ()) -> list[Path]:
    """The folders to read: ``databases`` if given, else ``archive_dir/<source>`` for
    each of ``sources``, else every sub-folder of ``archive_dir`` (one per source,
    as the archiver writes them). Raises CompareError for a folder that is not there."""
    if databases:
        folders = list(databases)
    elif archive_dir is None:
        raise CompareError("no archive folder: set TIDZAM_ARCHIVE_DIR or pass --database DIR")
    elif sources:
        folders = [archive_dir / name for name in sources]
    else:
        if not archive_dir.is_dir():
            raise CompareError(f"no archive folder {archive_dir} (TIDZAM_ARCHIVE_DIR)")
        folders = sorted(p for p in archive_dir.iterdir()
                         if p.is_dir() and not p.name.startswith("."))
    missing = [str(f) for f in folders if not f.is_dir()]
    if missing:
        raise CompareError(f"no archive folder {', '.join(missing)}")
    return folders


def find_sources(folders: Sequence[Path], names: Sequence[str] = ()
                 ) -> dict[str, list[ArchiveFile]]:
    """Archive files of ``folders`` by source name (from the file names), in time
    order; only the sources ``names`` if given (CompareError if one has no file)."""
    found: dict[str, list[ArchiveFile]] = {}
    for folder in folders:
        for f in scan(folder):
            if not names or f.name in names:
                found.setdefault(f.name, []).append(f)
    absent = [n for n in names if n not in found]
    if absent:
        raise CompareError(f"no archive file of source(s) {', '.join(absent)} in "
                           f"{', '.join(map(str, folders))}")
    return {name: sorted(files, key=lambda f: f.start) for name, files in sorted(found.items())}


@dataclass(frozen=True)
class Segment:
    """The part of one archive file inside [since, until), played as one session.

    Decoding starts ``offset_s`` into the file; its first sample is at ``origin_ns``
    (UTC); nothing at or after ``stop_ns`` is scored. ``expected_s``: the audio
    in range, None where the file's length could not be read."""

    source: str
    path: Path
    origin_ns: int
    offset_s: float
    stop_ns: int
    expected_s: float | None


def plan(sources: Mapping[str, Sequence[ArchiveFile]], since: datetime,
         until: datetime) -> list[Segment]:
    """The segments to decode, by source then time; CompareError if none."""
    if until <= since:
        raise CompareError(f"--until {until.isoformat()} is not after --since "
                           f"{since.isoformat()}")
    since_ns, until_ns = _ns(since), _ns(until)
    segments = []
    for source, files in sources.items():
        for f in files:
            start_ns = _ns(f.start)
            if start_ns >= until_ns:
                continue
            if f.duration_s is None:
                if f.start < since - UNKNOWN_LENGTH_SLACK:
                    continue
            elif _ns(f.end) <= since_ns:
                continue
            origin_ns = max(start_ns, since_ns)
            expected = None if f.duration_s is None else \
                (min(_ns(f.end), until_ns) - origin_ns) / 1e9
            segments.append(Segment(source, f.path, origin_ns, (origin_ns - start_ns) / 1e9,
                                    until_ns, expected))
    if not segments:
        covered = ", ".join(f"{s} {_span(fs)}" for s, fs in sources.items()) or "no file at all"
        raise CompareError(f"no archived audio between {since.isoformat()} and "
                           f"{until.isoformat()} (archives: {covered})")
    return segments


def _span(files: Sequence[ArchiveFile]) -> str:
    known = [f for f in files if f.duration_s is not None]
    if not known:
        return "(unreadable)"
    return f"{known[0].start.isoformat()} to {max(f.end for f in known).isoformat()}"


def _ns(t: datetime) -> int:
    """UTC ns of an aware datetime, exactly (no float rounding)."""
    delta = t - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


