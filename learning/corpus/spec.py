"""What a corpus package and a labelling rule are (``PackageSpec``, ``Rule``).

The packages and rules themselves are in ``learning.corpus.packages`` (the first
corpus) and ``learning.corpus.rules_extra`` (the curated additions).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from bus_schemas.errors import TidzamError


class CorpusError(TidzamError, RuntimeError):
    """The corpus could not be fetched or unpacked; the message says what to do."""


@dataclass(frozen=True)
class PackageSpec:
    """A Debian package of recordings and where its sounds' licence is stated.

    ``licence_files`` is the ``Files:`` pattern of the DEP-5 copyright stanza
    covering the sounds; ``expected_licence`` guards against a silent change.

    A copyright file that gives some sounds their own stanza: ``dep5_paths`` maps
    a path prefix inside the package to the copyright's source path prefix
    (``("usr/share/games/x/", "data/")``); such a file takes the licence of the
    last stanza whose ``Files:`` patterns match its source path, which must be
    ``expected_licence`` or one of ``licences``.

    A copyright file that is not DEP-5: ``statement`` is the sentence of it
    (whitespace aside) that gives the sounds ``expected_licence``; it must still
    be there. ``licences`` also lists what a rule may state for single files
    (``Rule.licence``), from the notes the package ships.
    """

    name: str
    licence_files: str
    expected_licence: str
    keep: tuple[str, ...]  # path prefixes (inside the package) worth unpacking
    dep5_paths: tuple[tuple[str, str], ...] = ()
    licences: tuple[str, ...] = ()
    statement: str = ""


GroupFn = Callable[["re.Match[str]", str], str]


@dataclass(frozen=True)
class Rule:
    """Files of ``package`` whose path fully matches ``pattern`` get ``label``.

    ``label=None`` excludes the file (``note`` says why). ``group`` names the
    recording group from the match and the file's title; ``None`` = content
    hash. ``max_per_group`` keeps that many files per group, evenly spread.
    ``licence`` overrides the package's licence for these files (a licence the
    package states for them outside its copyright file; ``note`` says where).
    ``also``: the other classes a mixture's windows hold throughout (rain with
    thunder claps all along): multi-label targets for selectors that learn them.
    """

    package: str
    pattern: str
    label: str | None
    note: str = ""
    group: GroupFn | None = None
    max_per_group: int | None = None
    licence: str | None = None
    also: tuple[str, ...] = ()
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "regex", re.compile(self.pattern))


def fixed(name: str) -> GroupFn:
    """Every file of the rule is one recording group, ``name``."""
    return lambda _m, _t: name


def from_match(template: str) -> GroupFn:
    """The group named from the pattern's named groups (``"site:{name}"``)."""
    return lambda m, _t: template.format(**m.groupdict())
