"""The bootstrap corpus: real recordings shipped in Debian packages, labelled by path.

``build_corpus(cache_dir, packages)`` fetches the packages (``learning.corpus.fetch``),
labels every sound file by its path inside the package (``learning.corpus.packages``:
``RULES``), removes duplicates by content hash and returns a ``CorpusManifest``
(``learning.corpus.manifest``): for every kept file its package, package version,
path, sha256, licence (read from the package's ``/usr/share/doc/<pkg>/copyright``),
class and recording group. Files a rule looked at but refused (ambiguous content)
are listed under ``excluded`` with the reason.

``python -m learning.corpus.build --packages curated --out corpus.json`` writes the
manifest of a selection (``default``, ``curated``: every package, or names).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from learning.corpus.fetch import (
    ARCHIVE_SUFFIXES,
    MEMBERS_DIR,
    PACKAGE_SOUND_SUFFIXES,
    FetchedPackage,
    default_cache_dir,
    fetch_package,
)
from learning.corpus.manifest import (
    CorpusFile,
    CorpusManifest,
    ExcludedFile,
    PackageInfo,
    sha256_file,
)
from learning.corpus.packages import (
    CLASSES,
    CURATED_PACKAGES,
    DEFAULT_PACKAGES,
    Rule,
    rule_for,
)
from learning.corpus.spec import CorpusError

log = logging.getLogger(__name__)


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
        if not local.is_file():
            continue
        if rel.startswith(MEMBERS_DIR + "/"):
            member = _member(package, rel.removeprefix(MEMBERS_DIR + "/"), local)
            if member is not None:
                found.append(member)
        elif rel.endswith(PACKAGE_SOUND_SUFFIXES):
            found.append(Candidate(package, rel, local))
    return found


def _member(package: FetchedPackage, inner: str, local: Path) -> Candidate | None:
    """The archive member unpacked at ``_members/<inner>``, named ``<archive>#<member>``
    (``<archive>#NN`` for an entry of an OpenTTD ``.cat``, titled)."""
    parts = inner.split("/")
    cut = next((i for i, part in enumerate(parts) if part.endswith(ARCHIVE_SUFFIXES)), None)
    if cut is None or cut == len(parts) - 1:
        return None
    archive, member = "/".join(parts[:cut + 1]), "/".join(parts[cut + 1:])
    if archive.endswith(".cat"):
        if "/" in member or not member.endswith(".wav"):
            return None
        title = local.with_suffix(".txt").read_text()
        return Candidate(package, f"{archive}#{member.removesuffix('.wav')}", local, title)
    if member.endswith(PACKAGE_SOUND_SUFFIXES):
        return Candidate(package, f"{archive}#{member}", local)
    return None


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
        licence=rule.licence or cand.package.licence_of(cand.path), note=rule.note,
        also=list(rule.also),
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


SELECTIONS = {"default": DEFAULT_PACKAGES, "curated": CURATED_PACKAGES}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m learning.corpus.build",
        description="Fetch corpus packages (apt-get download, once) and write their manifest.")
    parser.add_argument("--packages", default="default",
                        help="'default', 'curated' (every package) or comma-separated names")
    parser.add_argument("--cache", type=Path, default=None,
                        help="corpus cache (default: $TIDZAM_HOME/corpus)")
    parser.add_argument("--out", type=Path, default=Path("corpus.json"))
    args = parser.parse_args(argv)
    packages = SELECTIONS.get(args.packages) or tuple(
        p.strip() for p in args.packages.split(",") if p.strip())
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        manifest = build_corpus(args.cache, packages)
    except CorpusError as exc:
        print(f"error: {exc}")
        return 2
    manifest.save(args.out)
    for label in CLASSES:
        found = [f for f in manifest.files if f.label == label]
        if found:
            print(f"{label:8} {len(found):4} files {len({f.group for f in found}):4} groups")
    print(f"{args.out}: {len(manifest.files)} files, {len(manifest.excluded)} excluded, "
          f"from {len(manifest.packages)} packages")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
