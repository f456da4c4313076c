"""Audio files to add to a dataset, as found in folders, with their class and origin.

``folder_items``: a folder with one sub-folder per class (``birds/american_robin/x.wav``
is of class ``birds-american_robin``). ``sample_items``: samples the original's
extractor (or the dataset editor) wrote; ``extracted_items``: samples the Tidzam
extractor wrote (FLAC + JSON sidecar), with the labels reviewers gave them.

Extracted samples (``sample_items``) are named as the original extractor
named them, ``['<label>'](<source>-<channel>)_<time>.wav``, with an optional
leading ``+`` (see ``parse_sample_name``). Their recording group is
``<source>-<channel>@<hour>``: one stretch of one microphone stays on one side.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bus_schemas.control import CLASS_NAME, DISCARDED
from learning.datasets.errors import BadInput

UNCHECKED = "unchecked"  # the original extractor's folder of samples no one has checked


@dataclass(frozen=True)
class AudioItem:
    """One audio file to add, with its class and what is known of its origin."""

    path: Path
    label: str
    group: str = ""  # "" = its own group (its sha256)
    source: str = ""
    channel: int = -1
    time: str = ""


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str
    intended: bool = False  # left out by a person's choice (discarded, not reviewed)


def _listing(folder: Path) -> list[Path]:
    """Every regular, non-hidden file under ``folder``, sorted."""
    if not folder.is_dir():
        raise BadInput(f"no folder {folder}")
    files = sorted(p for p in folder.rglob("*") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    if not files:
        raise BadInput(f"{folder} holds no file")
    return files


def folder_items(folder: Path, classe: str | None = None
                 ) -> tuple[list[AudioItem], list[Skipped]]:
    """The files under ``folder``: class = ``classe`` or the sub-folder path joined with
    '-' (``birds/american_robin/x.wav`` → ``birds-american_robin``). Files at the top of
    the folder without ``classe``, and sub-folders that are no class name, are skipped."""
    items: list[AudioItem] = []
    skipped: list[Skipped] = []
    for path in _listing(folder):
        dirs = path.relative_to(folder).parent.parts
        label = classe or "-".join(dirs)
        if not label:
            skipped.append(Skipped(str(path), "at the top of the folder: put it in a class "
                                   "sub-folder or give a class"))
        elif not CLASS_NAME.fullmatch(label):
            skipped.append(Skipped(str(path), f"its folder {label!r} is not a class name"))
        else:
            items.append(AudioItem(path, label))
    return items, skipped


_SAMPLE = re.compile(r"\+?\[(?P<labels>[^\]]*)\]\((?P<where>[^)]*)\)_(?P<time>.+)")
_TIME = re.compile(r"(?P<date>\d{4}-\d{2}-\d{2})[T_ -](?P<h>\d{2})[:-](?P<m>\d{2})[:-]"
                   r"(?P<s>\d{2})(?P<frac>\.\d+)?(?P<tz>Z|[+-]\d{2}:?\d{2})?")
_SUFFIX = re.compile(r"\.[A-Za-z][A-Za-z0-9]{1,4}$")


@dataclass(frozen=True)
class SampleName:
    """What an extracted sample's file name says."""

    labels: tuple[str, ...]
    source: str
    channel: int  # -1 when the name gives none
    time: datetime | None

    def group(self) -> str:
        """``<source>-<channel>@<hour>``: one stretch of one microphone."""
        where = f"{self.source}-{self.channel}" if self.channel >= 0 else self.source
        if self.time is None:
            return where
        stamp = self.time.astimezone(UTC) if self.time.tzinfo else self.time
        return f"{where}@{stamp.strftime('%Y-%m-%dT%H')}{'Z' if self.time.tzinfo else ''}"


def parse_sample_time(text: str) -> datetime | None:
    """ISO 8601 or the original ``YYYY-MM-DD-HH-MM-SS[.ms]`` (``:`` or ``-`` between
    the time fields, optional ``Z``/offset); None when it is neither."""
    m = _TIME.fullmatch(text)
    if not m:
        return None
    tz = m["tz"] or ""
    if len(tz) == 5:  # +HHMM
        tz = f"{tz[:3]}:{tz[3:]}"
    try:
        return datetime.fromisoformat(
            f"{m['date']}T{m['h']}:{m['m']}:{m['s']}{m['frac'] or ''}{tz}")
    except ValueError:
        return None


def parse_sample_name(name: str) -> SampleName | None:
    """``['<label>'](<source>-<channel>)_<time>.wav`` (a leading ``+`` marks the
    original's unchecked samples) → its parts; None if the name is not of that form.

    The label may be hierarchical (``birds-american_robin``); the source may hold
    '-': the channel is the part after the last one when it is a number.
    """
    m = _SAMPLE.fullmatch(_SUFFIX.sub("", name))
    if not m:
        return None
    labels = tuple(re.findall(r"""['"]([^'"]+)['"]""", m["labels"])) or tuple(
        x.strip() for x in m["labels"].split(",") if x.strip())
    source, _, channel = m["where"].rpartition("-")
    if not (source and channel.isdigit()):
        source, channel = m["where"], "-1"
    return SampleName(labels, source, int(channel), parse_sample_time(m["time"]))


def sample_items(folder: Path, classe: str | None = None, include_unchecked: bool = False
                 ) -> tuple[list[AudioItem], list[Skipped]]:
    """Extracted samples under ``folder`` with their class and provenance.

    Class: ``classe`` if given, else the sub-folder path (a person filed the sample
    there), else the label in the file name. Samples under ``unchecked/`` (where the
    original extractor wrote them) are skipped unless ``include_unchecked``.
    """
    items: list[AudioItem] = []
    skipped: list[Skipped] = []
    for path in _listing(folder):
        dirs = path.relative_to(folder).parent.parts
        if UNCHECKED in dirs and not include_unchecked:
            skipped.append(Skipped(str(path), "unchecked sample (no one confirmed its label)"))
            continue
        parsed = parse_sample_name(path.name)
        item = _sample_item(path, [d for d in dirs if d != UNCHECKED], parsed, classe)
        if isinstance(item, Skipped):
            skipped.append(item)
        else:
            items.append(item)
    return items, skipped


def _sample_item(path: Path, dirs: list[str], parsed: SampleName | None, classe: str | None
                 ) -> AudioItem | Skipped:
    label = classe or "-".join(dirs)
    if not label and parsed is not None and len(parsed.labels) == 1:
        label = parsed.labels[0]
    if not label:
        why = ("several labels in its name" if parsed is not None and parsed.labels else
               "no class: its name is not ['<label>'](<source>-<channel>)_<time>.wav "
               "and it is in no class sub-folder")
        return Skipped(str(path), why)
    if not CLASS_NAME.fullmatch(label):
        return Skipped(str(path), f"{label!r} is not a class name")
    if parsed is None:
        return AudioItem(path, label)
    return AudioItem(path, label, parsed.group(), parsed.source, parsed.channel,
                     parsed.time.isoformat() if parsed.time else "")


SIDECAR = ".json"  # the extractor writes <sample_id>.flac and <sample_id>.json


def has_sidecars(folder: Path) -> bool:
    """Whether ``folder`` holds samples of the Tidzam extractor (audio + JSON sidecar)."""
    return folder.is_dir() and any(p.with_suffix(".flac").is_file()
                                   for p in folder.rglob(f"*{SIDECAR}"))


def extracted_items(folder: Path, reviewed: dict[str, str], classe: str | None = None,
                    include_unchecked: bool = False) -> tuple[list[AudioItem], list[Skipped]]:
    """Samples the Tidzam extractor wrote under ``folder`` (``<label>/<id>.flac`` with a
    ``<id>.json`` sidecar), with the class a reviewer gave them (``reviewed``: sample
    id → label, from ``SampleLabelled`` events). A sample nobody reviewed is skipped
    unless ``include_unchecked`` (then the model's proposal is its class, ``unknown``
    never). Provenance from the sidecar; group ``<source>-<channel>@<hour>``."""
    import json

    items: list[AudioItem] = []
    skipped: list[Skipped] = []
    for sidecar in sorted(folder.rglob(f"*{SIDECAR}")):
        audio = sidecar.with_suffix(".flac")
        if not audio.is_file() or sidecar.name.startswith("."):
            continue
        try:
            meta = json.loads(sidecar.read_text())
            sid, source, channel = str(meta["sample_id"]), str(meta["source"]), int(meta["channel"])
            start = datetime.fromtimestamp(int(meta["window_start_ns"]) / 1e9, UTC)
        except (OSError, ValueError, KeyError) as exc:
            skipped.append(Skipped(str(sidecar), f"unreadable sidecar: {exc}"))
            continue
        label = classe or reviewed.get(sid)
        if label is None and include_unchecked and meta.get("label") != "unknown":
            label = str(meta.get("label", ""))
        if not label:
            skipped.append(Skipped(str(audio), "not reviewed", intended=True))
            continue
        if label == DISCARDED:
            skipped.append(Skipped(str(audio), "discarded by its reviewer", intended=True))
            continue
        if not CLASS_NAME.fullmatch(label):
            skipped.append(Skipped(str(audio), f"{label!r} is not a class name"))
            continue
        name = SampleName((label,), source, channel, start)
        items.append(AudioItem(audio, label, name.group(), source, channel, start.isoformat()))
    return items, skipped
