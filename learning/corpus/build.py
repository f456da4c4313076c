"""The bootstrap corpus: real recordings shipped in Debian packages, labelled by path.

``build_corpus(cache_dir, packages)`` downloads the packages with ``apt-get
download`` (no root needed once the apt lists exist), unpacks the sound files
from them with ``dpkg-deb``, labels every file by its path inside the package
(``RULES``), removes duplicates by content hash and returns a ``CorpusManifest``:
for every kept file its package, package version, path, sha256, licence (read
from the package's ``/usr/share/doc/<pkg>/copyright``), class and recording
group. Files a rule looked at but refused (ambiguous content) are listed under
``excluded`` with the reason.

Groups: windows of one *recording* must never be on both sides of the held-out
split. A group is the content hash unless a rule knows better: one speaker's
prompts (``asterisk:<voice>``), one language's speaker (``tuxpaint-desc:<lang>``),
several takes cut from one source (``widelands:bird3``, ``opensfx:<original>``),
or one recording stored twice at different gains (``megaglest:wind``).

Labels were checked by looking at spectrograms of every long soundscape (the
megaglest ``night`` ambiences: four are crickets/katydids, the others contain
frog-like calls or mixtures and are excluded).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)

CLASSES: tuple[str, ...] = (
    "birds", "insects", "frog", "rain", "thunder", "wind", "water", "vehicle", "speech", "quiet",
)

QUIET_DEFINITION = (
    "quiet = a 0.5 s window whose RMS level is below the energy gate (-50 dBFS): nothing "
    "loud enough to be classified. Its windows are real corpus windows below the gate "
    "(gaps between calls, fades, faint passages, Asterisk's recorded silence) plus real "
    "windows of every class attenuated into -80..-52 dBFS; every window carries a "
    "-90..-70 dBFS white noise floor like a real microphone. Quiet windows follow their "
    "recording's side of the split."
)

AUDIO_SUFFIXES = (".ogg", ".wav", ".cat")


class CorpusError(RuntimeError):
    """The corpus could not be fetched or unpacked; the message says what to do."""


@dataclass(frozen=True)
class PackageSpec:
    """A Debian package of recordings and where its sounds' licence is stated.

    ``licence_files`` is the ``Files:`` pattern of the DEP-5 copyright stanza
    covering the sounds; ``expected_licence`` guards against a silent change.
    """

    name: str
    licence_files: str
    expected_licence: str
    keep: tuple[str, ...]  # path prefixes (inside the package) worth unpacking


PACKAGES: dict[str, PackageSpec] = {
    spec.name: spec
    for spec in (
        PackageSpec("megaglest-data", "*", "CC-BY-SA-3.0",
                    ("usr/share/games/megaglest/tilesets/",
                     "usr/share/games/megaglest/data/core/water_sounds/")),
        PackageSpec("tuxpaint-stamps-default", "*", "GPL-2", ("usr/share/tuxpaint/stamps/",)),
        PackageSpec("asterisk-core-sounds-en-wav", "*", "CC-BY-SA-3.0",
                    ("usr/share/asterisk/sounds/",)),
        PackageSpec("openttd-opensfx", "src/wav/*", "CC-BY-SA-3.0",
                    ("usr/share/games/openttd/baseset/opensfx/",)),
        PackageSpec("lincity-ng-data", "*", "GPL-2+", ("usr/share/games/lincity-ng/sounds/",)),
        PackageSpec("supertux-data", "*", "GPL-3+", ("usr/share/games/supertux2/sounds/",)),
        PackageSpec("widelands-data", "*", "GPL-2+",
                    ("usr/share/games/widelands/data/sound/animals/",)),
        PackageSpec("scorched3d-data", "*", "GPL-2+",
                    ("usr/share/games/scorched3d/data/globalmods/none/data/wav/misc/",)),
    )
}
BASE_PACKAGES = ("megaglest-data", "tuxpaint-stamps-default", "asterisk-core-sounds-en-wav")
# The held-out split of the default selector is drawn over these packages' recordings.
DEFAULT_PACKAGES = ("megaglest-data", "tuxpaint-stamps-default", "asterisk-core-sounds-en-wav",
                    "openttd-opensfx", "lincity-ng-data", "supertux-data", "widelands-data")
# Recordings of the rarest classes (frog, thunder, water) added to the train side only:
# drawn into the split they would move the default test side and change the windows
# that successive selectors are compared on.
SUPPLEMENT_PACKAGES = ("scorched3d-data",)


GroupFn = Callable[["re.Match[str]", str], str]


@dataclass(frozen=True)
class Rule:
    """Files of ``package`` whose path fully matches ``pattern`` get ``label``.

    ``label=None`` excludes the file (``note`` says why). ``group`` names the
    recording group from the match and the file's title; ``None`` = content
    hash. ``max_per_group`` keeps that many files per group, evenly spread.
    """

    package: str
    pattern: str
    label: str | None
    note: str = ""
    group: GroupFn | None = None
    max_per_group: int | None = None
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "regex", re.compile(self.pattern))


def _fixed(name: str) -> GroupFn:
    return lambda _m, _t: name


def _from_match(template: str) -> GroupFn:
    return lambda m, _t: template.format(**m.groupdict())


def _opensfx_original(_m: re.Match[str], title: str) -> str:
    """OpenSFX titles name their source ('Original "x.wav" by ...'): takes of one source."""
    found = re.search(r'Original "([^"]+)"', title)
    return "opensfx:" + (found.group(1) if found else title)


_MG = r"usr/share/games/megaglest/"
_TS = _MG + r"tilesets/(?P<tileset>[a-z0-9_]+)/sounds/"
_TUX = r"usr/share/tuxpaint/stamps/"
_WL = r"usr/share/games/widelands/data/sound/animals/"
_LC = r"usr/share/games/lincity-ng/sounds/"
_ST = r"usr/share/games/supertux2/sounds/"
_SFX = r"usr/share/games/openttd/baseset/opensfx/opensfx\.cat#"
_S3D = r"usr/share/games/scorched3d/data/globalmods/none/data/wav/misc/"
_VEHICLE_SFX = "04|05|06|07|08|09|10|24|25|26|27|28|35|59|61|65|71"

RULES: tuple[Rule, ...] = (
    Rule("megaglest-data",
         _MG + r"tilesets/(birch_forest|evergreen|pine_rock|spring)/sounds/night\.ogg", None,
         "ambiguous: loud pulsed broadband calls (probably frogs), not verifiable"),
    Rule("megaglest-data", _MG + r"tilesets/(fernland|jungle)/sounds/night\.ogg", None,
         "mixture: insect bands with repeated lower calls (frogs or birds)"),
    Rule("megaglest-data", _TS + r"(night|nightime)\.ogg", "insects",
         "night ambience: narrow-band pulsed stridulation (crickets/katydids)"),
    Rule("megaglest-data", _MG + r"tilesets/desert[24]/sounds/day\.ogg", None,
         "no bird call visible: a broadband wind-like drone"),
    Rule("megaglest-data", _TS + r"desertday\.ogg", None,
         "mixture: cicada-like pulses with repeated calls"),
    Rule("megaglest-data", _TS + r"(day|sunny_day)\.ogg", "birds", "daytime bird soundscape"),
    Rule("megaglest-data", _TS + r"(hawk|owl|rooster|chicken)\.(ogg|wav)", "birds"),
    Rule("megaglest-data", _TS + r"rain\.(ogg|wav)", "rain", "rain ambience"),
    Rule("megaglest-data", _TS + r"wind\.ogg", "wind",
         "winter and winter_forest hold the same recording at two gains",
         group=_fixed("megaglest:wind")),
    Rule("megaglest-data", _MG + r"data/core/water_sounds/water\d\.wav", "water",
         "short splashes, one session", group=_fixed("megaglest:water_sounds")),
    Rule("tuxpaint-stamps-default", _TUX + r".+_desc_(?P<lang>[a-z]{2})\.ogg", "speech",
         "a spoken stamp description; one group per language (speaker)",
         group=_from_match("tuxpaint-desc:{lang}"), max_per_group=25),
    Rule("tuxpaint-stamps-default", _TUX + r"animals/birds/[a-z_]+\.ogg", "birds"),
    Rule("tuxpaint-stamps-default", _TUX + r"animals/insects/[a-z_]+\.ogg", "insects"),
    Rule("tuxpaint-stamps-default", _TUX + r"animals/amphibians/frog\.ogg", "frog"),
    Rule("tuxpaint-stamps-default", _TUX + r"naturalforces/lightningbolt\.ogg", "thunder"),
    Rule("tuxpaint-stamps-default", _TUX + r"vehicles/ship/cartoon/[a-z_]+\.ogg", None,
         "a cartoon sound effect, not a recording"),
    Rule("tuxpaint-stamps-default", _TUX + r"vehicles/.+/[a-z_]+\.ogg", "vehicle"),
    Rule("tuxpaint-stamps-default", _TUX + r"town/flags/checkeredflag\.ogg", "vehicle",
         "racing car engines"),
    Rule("asterisk-core-sounds-en-wav",
         r"usr/share/asterisk/sounds/(?P<voice>[^/]+)/silence/10\.wav", "quiet",
         "recorded silence (LSB noise)", group=_fixed("asterisk:silence")),
    Rule("asterisk-core-sounds-en-wav", r"usr/share/asterisk/sounds/[^/]+/silence/.+", None,
         "shorter copies of the recorded silence"),
    Rule("asterisk-core-sounds-en-wav", r"usr/share/asterisk/sounds/(?P<voice>[^/]+)/.+\.wav",
         "speech", "telephone prompts (8 kHz), one speaker",
         group=_from_match("asterisk:{voice}"), max_per_group=150),
    Rule("openttd-opensfx", _SFX + rf"({_VEHICLE_SFX})", "vehicle",
         "edited real recording", group=_opensfx_original),
    Rule("openttd-opensfx", _SFX + r"(52|57)", "wind", group=_opensfx_original),
    Rule("openttd-opensfx", _SFX + r"(66|72)", "birds", group=_opensfx_original),
    Rule("lincity-ng-data", _LC + r"(?P<kind>TraficHigh|TraficLow|RailTrain)\d\.wav",
         "vehicle", "road traffic / train (11 kHz)", group=_from_match("lincity:{kind}")),
    Rule("lincity-ng-data", _LC + r"Green[13]\.wav", "birds", group=_fixed("lincity:Green")),
    Rule("lincity-ng-data", _LC + r"(Green[24]|Water\d|ParklandLake\d)\.wav", None,
         "ambiguous content (machine hum, chorus or mixed ambience)"),
    Rule("supertux-data", _ST + r"(thunder|lightning)\.wav", "thunder",
         "thunder clap and rumble", group=_fixed("supertux:storm")),
    Rule("supertux-data", _ST + r"rain\.wav", "rain"),
    Rule("supertux-data", _ST + r"waterfall\.wav", "water"),
    Rule("widelands-data", _WL + r"bird(?P<n>\d)_\d\d\.ogg", "birds",
         "takes of one bird", group=_from_match("widelands:bird{n}")),
    Rule("widelands-data", _WL + r"crickets\d_\d\d\.ogg", "insects"),
    Rule("widelands-data", _WL + r"frog\.ogg", "frog"),
    Rule("scorched3d-data", _S3D + r"frogs\.wav", "frog", "a frog chorus (11 kHz)"),
    Rule("scorched3d-data", _S3D + r"thunder\d?\.wav", "thunder",
         "thunder claps and rumble (11-22 kHz)"),
    Rule("scorched3d-data", _S3D + r"rain\.wav", "rain", "rain ambience (11 kHz)"),
    Rule("scorched3d-data", _S3D + r"(splash|oceanwaves)\.wav", "water"),
    Rule("scorched3d-data", _S3D + r"(birds\d|birdchirp\d|gull\d)\.wav", "birds"),
)


class CorpusFile(BaseModel):
    """One labelled recording of the corpus (unique by content)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    sha256: str
    label: str = Field(alias="class")
    group: str
    package: str
    version: str
    path: str  # inside the package; "<archive>#NN" for a member of a sound archive
    title: str = ""
    licence: str
    note: str = ""
    local: str  # relative to the corpus cache directory
    duplicates: list[str] = Field(default_factory=list)
    split: Literal["train", "test", "time"] | None = None  # set when a dataset is built
    time_split_s: float | None = None  # for split "time": test windows start after this
    duration_s: float | None = None
    windows_train: int = 0
    windows_test: int = 0


class ExcludedFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    package: str
    path: str
    sha256: str
    reason: str


class PackageInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    version: str
    licence: str
    copyright: str
    deb_sha256: str


class CorpusManifest(BaseModel):
    """Every file of the corpus with its origin, licence, label and (once split) side."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["tidzam-corpus-v1"] = "tidzam-corpus-v1"
    created: datetime
    classes: list[str]
    quiet: str = QUIET_DEFINITION
    packages: dict[str, PackageInfo]
    files: list[CorpusFile]
    excluded: list[ExcludedFile] = Field(default_factory=list)

    def save(self, path: Path) -> None:
        path.write_text(self.model_dump_json(indent=1, by_alias=True) + "\n")

    @classmethod
    def load(cls, path: Path) -> CorpusManifest:
        return cls.model_validate_json(path.read_text())


def default_cache_dir() -> Path:
    """``$TIDZAM_HOME/corpus``; the home defaults to ``$XDG_DATA_HOME/tidzam`` or
    ``~/.local/share/tidzam``."""
    home = os.environ.get("TIDZAM_HOME")
    if not home:
        base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        home = str(Path(base) / "tidzam")
    return Path(home) / "corpus"


# ---------------------------------------------------------------- fetching


@dataclass(frozen=True)
class FetchedPackage:
    spec: PackageSpec
    version: str
    deb: Path
    root: Path  # the unpacked subset
    licence: str


def fetch_package(name: str, cache: Path) -> FetchedPackage:
    """Download (once) and unpack (once) the sound files of one package."""
    if name not in PACKAGES:
        raise CorpusError(f"unknown corpus package {name!r}; known: {', '.join(PACKAGES)}")
    spec = PACKAGES[name]
    deb = _download(name, cache / "debs")
    version = _deb_field(deb, "Version")
    root = cache / "pkgs" / f"{name}_{version}"
    if not (root / ".complete").exists():
        _unpack(deb, root, spec)
    licence = package_licence(root, spec)
    return FetchedPackage(spec, version, deb, root, licence)


def _apt_lists_present() -> bool:
    lists = Path("/var/lib/apt/lists")
    return lists.is_dir() and any(lists.glob("*_Packages*"))


def _apt_update() -> None:
    log.info("apt package lists are missing or stale: running apt-get update")
    proc = subprocess.run(["apt-get", "update"], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise CorpusError(f"apt-get update failed: {proc.stderr.strip()[-400:]}")


def _download(name: str, debs: Path) -> Path:
    """The cached .deb of ``name``, downloaded with ``apt-get download`` if absent."""
    found = sorted(debs.glob(f"{name}_*.deb"))
    if found:
        return found[-1]
    if shutil.which("apt-get") is None:
        raise CorpusError("apt-get is needed to fetch the corpus (Debian or Ubuntu)")
    debs.mkdir(parents=True, exist_ok=True)
    root = os.geteuid() == 0
    if not _apt_lists_present():
        if not root:
            raise CorpusError(
                "the apt package lists are missing: run `sudo apt-get update` and try again")
        _apt_update()
    cmd = ["apt-get", "download", name]
    if root:  # apt's _apt sandbox user cannot write into our cache directory
        cmd[1:1] = ["-o", "APT::Sandbox::User=root"]
    for attempt in (1, 2):
        log.info("downloading %s with apt-get", name)
        proc = subprocess.run(cmd, cwd=debs, capture_output=True, text=True, check=False)
        if proc.returncode == 0:
            break
        unknown = "Unable to locate" in proc.stderr or "no installation candidate" in proc.stderr
        if unknown and root and attempt == 1:
            _apt_update()
            continue
        if unknown:
            raise CorpusError(f"apt-get cannot find {name}: the package lists are missing or "
                              "stale; run `sudo apt-get update` and try again")
        raise CorpusError(f"apt-get download {name} failed: {proc.stderr.strip()[-400:]}")
    found = sorted(debs.glob(f"{name}_*.deb"))
    if not found:
        raise CorpusError(f"apt-get download {name} produced no .deb in {debs}")
    return found[-1]


def _deb_field(deb: Path, name: str) -> str:
    proc = subprocess.run(["dpkg-deb", "-f", str(deb), name], capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise CorpusError(f"{deb} is not a readable Debian package: {proc.stderr.strip()}")
    return proc.stdout.strip()


def _wanted(path: str, spec: PackageSpec) -> bool:
    if path == f"usr/share/doc/{spec.name}/copyright":
        return True
    return path.startswith(spec.keep) and path.endswith(AUDIO_SUFFIXES)


def _unpack(deb: Path, root: Path, spec: PackageSpec) -> None:
    """Unpack the sound files and the copyright of a .deb (``dpkg-deb --fsys-tarfile``)."""
    staging = root.with_name(root.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    log.info("unpacking %s", deb.name)
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    with tarfile.open(fileobj=proc.stdout, mode="r|*") as tar:
        for member in tar:
            path = member.name.removeprefix("./")
            if (member.isfile() or member.issym()) and _wanted(path, spec):
                member.name = path
                tar.extract(member, staging, filter="data")
    if proc.wait() != 0:
        raise CorpusError(f"dpkg-deb could not read {deb}; delete it and fetch again")
    _unpack_archives(staging)
    (staging / ".complete").write_text(deb.name + "\n")
    shutil.rmtree(root, ignore_errors=True)
    staging.rename(root)


def package_licence(root: Path, spec: PackageSpec) -> str:
    """The licence of the package's sounds, read from its DEP-5 copyright file."""
    copyright_file = root / "usr/share/doc" / spec.name / "copyright"
    if not copyright_file.is_file():
        raise CorpusError(f"{spec.name} ships no copyright file; cannot state a licence")
    licence = dep5_licence(copyright_file.read_text(errors="replace"), spec.licence_files)
    if licence != spec.expected_licence:
        raise CorpusError(
            f"{spec.name}: copyright says {licence!r} for {spec.licence_files!r}, expected "
            f"{spec.expected_licence!r}; check the new licence before using these sounds")
    return licence


def dep5_licence(text: str, files_pattern: str) -> str:
    """The ``License:`` short name of the DEP-5 stanza whose ``Files:`` lists ``files_pattern``."""
    for paragraph in re.split(r"\n[ \t]*\n", text):
        fields = _dep5_fields(paragraph)
        if files_pattern in fields.get("files", "").split() and "license" in fields:
            return fields["license"].splitlines()[0].strip()
    raise CorpusError(f"no copyright stanza covers {files_pattern!r}")


def _dep5_fields(paragraph: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    key = ""
    for line in paragraph.splitlines():
        if line[:1] in (" ", "\t") and key:
            fields[key] += "\n" + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()
    return fields


# ---------------------------------------------------------------- sound archives

MEMBERS_DIR = "_members"


@dataclass(frozen=True)
class CatEntry:
    index: int
    title: str
    wav: bytes


def read_cat(data: bytes) -> list[CatEntry]:
    """Entries of an OpenTTD sound archive (``.cat``): a table of (offset, size)
    uint32 pairs, then per entry a length-prefixed title and a RIFF/WAV file."""
    if len(data) < 8:
        raise CorpusError("sound archive too short")
    first = int.from_bytes(data[0:4], "little") & 0x7FFF_FFFF
    entries = []
    for index in range(first // 8):
        offset = int.from_bytes(data[index * 8:index * 8 + 4], "little") & 0x7FFF_FFFF
        size = int.from_bytes(data[index * 8 + 4:index * 8 + 8], "little")
        if size == 0 or offset + size > len(data):
            continue
        name_len = data[offset]
        title = data[offset + 1:offset + 1 + name_len].rstrip(b"\0").decode("utf-8", "replace")
        wav = data[offset + 1 + name_len:offset + size]
        if wav[:4] == b"RIFF" and len(wav) > 44:
            entries.append(CatEntry(index, title, wav))
    return entries


def _unpack_archives(root: Path) -> None:
    """Write each member of every ``.cat`` under ``_members/<archive>/NN.wav``."""
    for cat in sorted(root.rglob("*.cat")):
        out = root / MEMBERS_DIR / cat.relative_to(root)
        out.mkdir(parents=True, exist_ok=True)
        for entry in read_cat(cat.read_bytes()):
            (out / f"{entry.index:02d}.wav").write_bytes(entry.wav)
            (out / f"{entry.index:02d}.txt").write_text(entry.title)


# ---------------------------------------------------------------- labelling


@dataclass(frozen=True)
class Candidate:
    """A sound file of a package: its path inside the package and on disk."""

    package: FetchedPackage
    path: str
    local: Path
    title: str = ""


def scan(package: FetchedPackage) -> list[Candidate]:
    """Every sound file unpacked from ``package``, archive members included."""
    found: list[Candidate] = []
    for local in sorted(package.root.rglob("*")):
        rel = local.relative_to(package.root).as_posix()
        if rel.startswith(MEMBERS_DIR + "/") or not local.is_file():
            continue
        if rel.endswith(".cat"):
            members = package.root / MEMBERS_DIR / rel
            for wav in sorted(members.glob("*.wav")):
                title = wav.with_suffix(".txt").read_text()
                found.append(Candidate(package, f"{rel}#{wav.stem}", wav, title))
        elif rel.endswith(AUDIO_SUFFIXES):
            found.append(Candidate(package, rel, local))
    return found


def rule_for(package: str, path: str) -> Rule | None:
    """The first rule of ``package`` whose pattern matches the whole ``path``."""
    for rule in RULES:
        if rule.package == package and rule.regex.fullmatch(path):
            return rule
    return None


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's content, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class _Matched:
    candidate: Candidate
    rule: Rule
    sha256: str


def _match_all(candidates: Sequence[Candidate]) -> dict[str, list[_Matched]]:
    """Candidates a rule speaks about, by content hash (paths sorted)."""
    by_hash: dict[str, list[_Matched]] = {}
    for cand in candidates:
        rule = rule_for(cand.package.spec.name, cand.path)
        if rule is not None:
            digest = sha256_file(cand.local)
            by_hash.setdefault(digest, []).append(_Matched(cand, rule, digest))
    for copies in by_hash.values():
        copies.sort(key=lambda m: (m.candidate.package.spec.name, m.candidate.path))
    return by_hash


def _entry(first: _Matched, copies: list[_Matched], cache: Path) -> CorpusFile:
    cand, rule = first.candidate, first.rule
    assert rule.label is not None
    match = rule.regex.fullmatch(cand.path)
    assert match is not None
    group = rule.group(match, cand.title) if rule.group else f"sha256:{first.sha256[:16]}"
    return CorpusFile(
        sha256=first.sha256, label=rule.label, group=group, package=cand.package.spec.name,
        version=cand.package.version, path=cand.path, title=cand.title,
        licence=cand.package.licence, note=rule.note,
        local=cand.local.relative_to(cache).as_posix(),
        duplicates=[f"{m.candidate.package.spec.name}:{m.candidate.path}" for m in copies[1:]],
    )


def label_files(candidates: Sequence[Candidate], cache: Path
                ) -> tuple[list[CorpusFile], list[ExcludedFile]]:
    """Label by path, deduplicate by content, subsample large groups.

    Identical content that rules label differently (or label and exclude) is
    excluded: its label would be a guess.
    """
    files: list[tuple[CorpusFile, Rule]] = []
    excluded: list[ExcludedFile] = []
    for digest, copies in sorted(_match_all(candidates).items()):
        labels = {m.rule.label for m in copies}
        first = copies[0]
        if None in labels or len(labels) > 1:
            reason = first.rule.note if labels == {None} else f"conflicting labels {labels}"
            excluded.append(ExcludedFile(package=first.candidate.package.spec.name,
                                         path=first.candidate.path, sha256=digest,
                                         reason=reason))
            continue
        files.append((_entry(first, copies, cache), first.rule))
    return _subsample(files), excluded


def _subsample(files: list[tuple[CorpusFile, Rule]]) -> list[CorpusFile]:
    """Keep at most ``rule.max_per_group`` files per group, evenly spread by path."""
    groups: dict[str, list[tuple[CorpusFile, Rule]]] = {}
    for item in files:
        groups.setdefault(item[0].group, []).append(item)
    kept: list[CorpusFile] = []
    for members in groups.values():
        members.sort(key=lambda item: item[0].path)
        limit = members[0][1].max_per_group
        if limit is not None and len(members) > limit:
            step = len(members) / limit
            members = [members[int(i * step)] for i in range(limit)]
        kept.extend(item[0] for item in members)
    kept.sort(key=lambda f: (CLASSES.index(f.label), f.package, f.path))
    return kept


def build_corpus(cache_dir: Path | None = None,
                 packages: Sequence[str] = DEFAULT_PACKAGES) -> CorpusManifest:
    """Fetch ``packages`` into ``cache_dir`` and return the labelled manifest.

    Safe to call repeatedly: downloads and unpacked trees are reused.
    """
    cache = (cache_dir or default_cache_dir()).resolve()
    cache.mkdir(parents=True, exist_ok=True)
    fetched = [fetch_package(name, cache) for name in packages]
    candidates = [c for package in fetched for c in scan(package)]
    files, excluded = label_files(candidates, cache)
    infos = {
        p.spec.name: PackageInfo(
            name=p.spec.name, version=p.version, licence=p.licence,
            copyright=f"/usr/share/doc/{p.spec.name}/copyright", deb_sha256=sha256_file(p.deb))
        for p in fetched
    }
    log.info("corpus: %d files, %d excluded, from %s", len(files), len(excluded),
             ", ".join(packages))
    return CorpusManifest(created=datetime.now(UTC), classes=list(CLASSES), packages=infos,
                          files=files, excluded=excluded)
