"""Fetching the corpus packages: ``apt-get download``, unpacking, licences, sound archives.

``fetch_package(name, cache)`` downloads a package of ``PACKAGES`` with ``apt-get
download`` (no root needed once the apt lists exist), unpacks its sound files
and its ``/usr/share/doc/<pkg>/copyright`` with ``dpkg-deb``, writes every member
of an OpenTTD sound archive (``.cat``) as its own WAV file, and reads the licence
of the sounds from the copyright file (DEP-5). Downloads and unpacked trees are
kept in the cache and reused.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from bus_schemas.errors import TidzamError
from learning.corpus.packages import PACKAGES, PackageSpec

log = logging.getLogger(__name__)

# Which files of a package are unpacked as sounds: its recordings and the OpenTTD
# sound archives (``.cat``) they may be stored in. Not the set of audio suffixes
# (``audio.suffixes``): changing it changes the corpus.
PACKAGE_SOUND_SUFFIXES = (".ogg", ".wav", ".cat")


class CorpusError(TidzamError, RuntimeError):
    """The corpus could not be fetched or unpacked; the message says what to do."""


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
    return path.startswith(spec.keep) and path.endswith(PACKAGE_SOUND_SUFFIXES)


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
