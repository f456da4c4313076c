"""Semantic versions of models (semver.org 2.0.0): the one pattern and sort key."""

from __future__ import annotations

import re

from bus_schemas.errors import TidzamError

SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-([0-9A-Za-z.-]+))?"
                    r"(?:\+[0-9A-Za-z.-]+)?$")

SemverKey = tuple[int, int, int, int, tuple[tuple[int, int | str], ...]]


class VersionError(TidzamError, ValueError):
    """A version that is not a semantic version (a user's input: a usage error)."""

    exit_code = 2


def is_semver(version: str) -> bool:
    return SEMVER.match(version) is not None


def semver_key(version: str) -> SemverKey:
    """Sort key of a semantic version: numeric parts, then a release after its
    pre-releases, pre-release identifiers numeric before alphanumeric (semver §11).
    Raises VersionError for anything else."""
    m = SEMVER.match(version)
    if m is None:
        raise VersionError(f"{version!r} is not a semantic version (e.g. 1.2.0)")
    major, minor, patch, pre = m.groups()
    if pre is None:
        return int(major), int(minor), int(patch), 1, ()
    ids = tuple((0, int(p)) if p.isdigit() else (1, p) for p in pre.split("."))
    return int(major), int(minor), int(patch), 0, ids
