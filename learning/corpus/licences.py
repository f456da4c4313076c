"""The licence of a corpus package's sounds, read from its ``/usr/share/doc/<pkg>/copyright``.

A DEP-5 copyright file (``Format: .../copyright-format/1.0/``): the package's
licence is the ``License:`` of the stanza whose ``Files:`` lists the spec's
``licence_files`` pattern; a file with its own stanza (``PackageSpec.dep5_paths``)
takes the licence of the last stanza whose patterns match it, as DEP-5 says.
A copyright file in free text: the spec quotes the sentence that licenses the
sounds (``PackageSpec.statement``), and it must still be there.
"""

from __future__ import annotations

import re
from pathlib import Path

from learning.corpus.spec import CorpusError, PackageSpec


def copyright_path(root: Path, spec: PackageSpec) -> Path:
    return root / "usr/share/doc" / spec.name / "copyright"


def package_licence(root: Path, spec: PackageSpec) -> str:
    """The licence of the package's sounds, read from its copyright file."""
    copyright_file = copyright_path(root, spec)
    if not copyright_file.is_file():
        raise CorpusError(f"{spec.name} ships no copyright file; cannot state a licence")
    text = copyright_file.read_text(errors="replace")
    if spec.statement:
        if _words(spec.statement) not in _words(text):
            raise CorpusError(f"{spec.name}: its copyright no longer says {spec.statement!r}; "
                               "check the new licence before using these sounds")
        return spec.expected_licence
    licence = dep5_licence(text, spec.licence_files)
    if licence != spec.expected_licence:
        raise CorpusError(
            f"{spec.name}: copyright says {licence!r} for {spec.licence_files!r}, expected "
            f"{spec.expected_licence!r}; check the new licence before using these sounds")
    return licence


def file_licence(spec: PackageSpec, copyright_text: str, path: str, default: str) -> str:
    """The licence of one file of the package (``default``: the package's licence)."""
    for prefix, source in spec.dep5_paths:
        if path.startswith(prefix):
            source_path = source + path[len(prefix):]
            licence = dep5_file_licence(copyright_text, source_path)
            if licence not in (spec.expected_licence, *spec.licences):
                raise CorpusError(
                    f"{spec.name}: copyright says {licence!r} for {source_path}, not one of "
                    f"{[spec.expected_licence, *spec.licences]}; check it before using it")
            return licence
    return default


def dep5_licence(text: str, files_pattern: str) -> str:
    """The ``License:`` short name of the DEP-5 stanza whose ``Files:`` lists ``files_pattern``."""
    for fields in _stanzas(text):
        if files_pattern in fields["files"].split():
            return _short_name(fields)
    raise CorpusError(f"no copyright stanza covers {files_pattern!r}")


def dep5_file_licence(text: str, path: str) -> str:
    """The ``License:`` of the last DEP-5 stanza with a ``Files:`` pattern matching ``path``."""
    found = None
    for fields in _stanzas(text):
        if any(dep5_match(pattern, path) for pattern in fields["files"].split()):
            found = _short_name(fields)
    if found is None:
        raise CorpusError(f"no copyright stanza covers {path!r}")
    return found


def dep5_match(pattern: str, path: str) -> bool:
    """DEP-5 ``Files:`` matching: ``*`` is any text (``/`` included), ``?`` one character."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, path) is not None


def _stanzas(text: str) -> list[dict[str, str]]:
    """The stanzas that have both ``Files:`` and ``License:``."""
    found = []
    for paragraph in re.split(r"\n[ \t]*\n", text):
        fields = _dep5_fields(paragraph)
        if "files" in fields and "license" in fields:
            found.append(fields)
    return found


def _short_name(fields: dict[str, str]) -> str:
    return fields["license"].splitlines()[0].strip()


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


def _words(text: str) -> str:
    return " ".join(text.split())
