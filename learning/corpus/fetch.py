"""Fetching the corpus packages: ``apt-get download``, unpacking, sound archives.

``fetch_package(name, cache)`` downloads a package of ``PACKAGES`` with ``apt-get
download`` (no root needed once the apt lists exist), unpacks its sound files
and its ``/usr/share/doc/<pkg>/copyright`` with ``dpkg-deb``, and reads the licence
of the sounds from the copyright file (``learning.corpus.licences``). Sounds
stored in archives are written out as files of their own under ``_members/``:
OpenTTD's ``.cat`` (each entry as ``NN.wav``), Quake-style ``.pk3`` (zip) and
OpenClonk's ``.ocg``/``.ocd`` groups (exploded by the ``c4group`` tool of the
``openclonk`` package, fetched the same way and run from its unpacked .deb).
Only an archive's sound members that fall under the spec's ``keep`` prefixes
(``<archive>#<member>``) are kept; the archive itself is then dropped. Downloads
and unpacked trees are kept in the cache and reused.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import subprocess
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from learning.corpus.licences import copyright_path, file_licence, package_licence
from learning.corpus.packages import PACKAGES
from learning.corpus.spec import CorpusError as CorpusError
from learning.corpus.spec import PackageSpec

log = logging.getLogger(__name__)

# Which files of a package are unpacked as sounds (also inside archives). Not the set
# of audio suffixes (``audio.suffixes``): changing it changes the corpus.
PACKAGE_SOUND_SUFFIXES = (".ogg", ".wav")
# Archives whose sound members are unpacked: OpenTTD sound sets, Quake-engine zips,
# OpenClonk groups.
ARCHIVE_SUFFIXES = (".cat", ".pk3", ".ocg", ".ocd")
# Tools some archives need: name -> (Debian package, path of the program inside it).
TOOLS: dict[str, tuple[str, str]] = {"c4group": ("openclonk", "usr/bin/c4group")}
ToolFn = Callable[[str], Path]


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
    licence: str  # of the package's sounds; a file may have its own (``licence_of``)
    copyright: str = ""  # the text of its copyright file

    def licence_of(self, path: str) -> str:
        """The licence of the file at ``path`` (inside the package)."""
        return file_licence(self.spec, self.copyright, path, self.licence)


@contextlib.contextmanager
def _locked(cache: Path, name: str) -> Iterator[None]:
    """One process at a time fetches and unpacks a package into ``cache`` (several test
    workers, or two commands, may ask for the same one at once)."""
    locks = cache / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / f"{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def fetch_package(name: str, cache: Path) -> FetchedPackage:
    """Download (once) and unpack (once) the sound files of one package."""
    if name not in PACKAGES:
        raise CorpusError(f"unknown corpus package {name!r}; known: {', '.join(PACKAGES)}")
    spec = PACKAGES[name]
    with _locked(cache, name):
        deb = _download(name, cache / "debs")
        version = _deb_field(deb, "Version")
        root = cache / "pkgs" / f"{name}_{version}"
        if not (root / ".complete").exists():
            _unpack(deb, root, spec, lambda tool: fetch_tool(tool, cache))
    licence = package_licence(root, spec)
    text = copyright_path(root, spec).read_text(errors="replace")
    return FetchedPackage(spec, version, deb, root, licence, text)


def fetch_tool(name: str, cache: Path) -> Path:
    """The program ``name`` of ``TOOLS``, unpacked (once) from its package's .deb."""
    package, inside = TOOLS[name]
    with _locked(cache, f"tool-{package}"):
        deb = _download(package, cache / "debs")
        root = cache / "tools" / f"{package}_{_deb_field(deb, 'Version')}"
        program = root / inside
        if program.is_file():
            return program
        staging = root.with_name(root.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        _extract(deb, staging, lambda path: path == inside)
        if not (staging / inside).is_file():
            raise CorpusError(f"{deb.name} holds no {inside}")
        (staging / inside).chmod(0o755)
        shutil.rmtree(root, ignore_errors=True)
        staging.rename(root)
        return program


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
    """The copyright, the sound files under ``keep``, and archives that may hold some."""
    if path == f"usr/share/doc/{spec.name}/copyright":
        return True
    if path.endswith(ARCHIVE_SUFFIXES):
        return path.startswith(spec.keep) or any(k.startswith(path + "#") for k in spec.keep)
    return path.startswith(spec.keep) and path.endswith(PACKAGE_SOUND_SUFFIXES)


def _extract(deb: Path, into: Path, wanted: Callable[[str], bool]) -> None:
    """Extract the files of a .deb whose path ``wanted`` accepts (``dpkg-deb --fsys-tarfile``)."""
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    with tarfile.open(fileobj=proc.stdout, mode="r|*") as tar:
        for member in tar:
            path = member.name.removeprefix("./")
            if (member.isfile() or member.issym()) and wanted(path):
                member.name = path
                tar.extract(member, into, filter="data")
    if proc.wait() != 0:
        raise CorpusError(f"dpkg-deb could not read {deb}; delete it and fetch again")


def _unpack(deb: Path, root: Path, spec: PackageSpec, tool: ToolFn) -> None:
    """Unpack the sound files (archives' members included) and the copyright of a .deb."""
    staging = root.with_name(root.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    log.info("unpacking %s", deb.name)
    _extract(deb, staging, lambda path: _wanted(path, spec))
    _unpack_archives(staging, spec, tool)
    (staging / ".complete").write_text(deb.name + "\n")
    shutil.rmtree(root, ignore_errors=True)
    staging.rename(root)


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


def member_path(root: Path, path: str) -> Path:
    """Where the file at ``path`` of a package unpacked in ``root`` lies: ``<archive>#NN``
    of a ``.cat`` is ``_members/<archive>/NN.wav``, ``<archive>#<member>`` of the other
    archives ``_members/<archive>/<member>``."""
    inside, _, member = path.partition("#")
    if not member:
        return root / inside
    if inside.endswith(".cat"):
        member += ".wav"
    return root / MEMBERS_DIR / inside / member


def _unpack_archives(root: Path, spec: PackageSpec, tool: ToolFn) -> None:
    """Write the wanted members of every sound archive under ``_members/<archive>/``
    and drop the archive."""
    archives = sorted(p for p in root.rglob("*") if p.name.endswith(ARCHIVE_SUFFIXES)
                      and p.is_file() and not p.is_symlink())
    for archive in archives:
        rel = archive.relative_to(root).as_posix()
        out = root / MEMBERS_DIR / rel

        def wanted(member: str, rel: str = rel) -> bool:
            return member.endswith(PACKAGE_SOUND_SUFFIXES) and \
                f"{rel}#{member}".startswith(spec.keep)

        if rel.endswith(".cat"):
            _unpack_cat(archive, out)
        elif rel.endswith(".pk3"):
            _unpack_zip(archive, out, wanted)
        else:
            _unpack_group(archive, out, wanted, tool("c4group"))
        if archive.is_dir():
            shutil.rmtree(archive)
        else:
            archive.unlink()


def _unpack_cat(archive: Path, out: Path) -> None:
    """Each entry of an OpenTTD sound archive as ``NN.wav``, its title as ``NN.txt``."""
    out.mkdir(parents=True, exist_ok=True)
    for entry in read_cat(archive.read_bytes()):
        (out / f"{entry.index:02d}.wav").write_bytes(entry.wav)
        (out / f"{entry.index:02d}.txt").write_text(entry.title)


def _member_target(out: Path, name: str) -> Path:
    parts = PurePosixPath(name).parts
    if not parts or name.startswith("/") or ".." in parts:
        raise CorpusError(f"archive member {name!r} would land outside {out}")
    return out.joinpath(*parts)


def _unpack_zip(archive: Path, out: Path, wanted: Callable[[str], bool]) -> None:
    """The wanted members of a zip (``.pk3``), at their paths under ``out``."""
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if info.is_dir() or not wanted(info.filename):
                    continue
                target = _member_target(out, info.filename)
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, target.open("wb") as dst:
                    shutil.copyfileobj(src, dst)
    except zipfile.BadZipFile as exc:
        raise CorpusError(f"{archive.name} is not a readable zip archive: {exc}") from None


def _unpack_group(archive: Path, out: Path, wanted: Callable[[str], bool],
                  c4group: Path) -> None:
    """The wanted members of an OpenClonk group, nested groups included (``c4group -x``
    explodes the file, in place, into a folder of the same name)."""
    proc = subprocess.run([str(c4group), archive.name, "-x"], cwd=archive.parent,
                          env={**os.environ, "HOME": str(archive.parent)},
                          capture_output=True, text=True, errors="replace", check=False)
    if proc.returncode != 0 or not archive.is_dir():  # c4group exits 0 on most failures
        said = " ".join((proc.stdout + proc.stderr).split())[-300:]
        raise CorpusError(f"c4group could not unpack {archive.name}: {said}")
    for path in sorted(archive.rglob("*")):
        member = path.relative_to(archive).as_posix()
        if path.is_file() and wanted(member):
            target = _member_target(out, member)
            target.parent.mkdir(parents=True, exist_ok=True)
            path.replace(target)
