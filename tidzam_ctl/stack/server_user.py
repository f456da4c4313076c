"""Who runs a server when ``tidzam_ctl`` runs as root: PostgreSQL refuses to run as
root, so as root every server command runs as an unprivileged system user
(``tidzam``, created on demand, else ``nobody``), and the directories it needs are
made reachable (search permission only). Not root: the caller runs them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import shutil
import stat
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SYSTEM_USER = "tidzam"
FALLBACK_USER = "nobody"


@dataclass(frozen=True)
class RunAs:
    """The system identity server commands run under (``uid`` None: the caller's own)."""

    name: str
    uid: int | None
    gid: int | None


def _clean_env() -> dict[str, str]:
    """No PG* variables from the caller leak into server commands."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C"}


def run_as(
    user: RunAs, args: Sequence[str], *, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run a server command as ``user`` (never raises on a non-zero exit)."""
    return subprocess.run(
        list(args), capture_output=True, text=True, timeout=timeout, cwd="/",
        env=_clean_env(), user=user.uid, group=user.gid,
        extra_groups=[] if user.uid is not None else None,
    )


def server_user(preferred: str = SYSTEM_USER) -> RunAs:
    """Who runs the server: the caller, or (as root) an unprivileged system user."""
    if os.geteuid() != 0:
        return RunAs(pwd.getpwuid(os.geteuid()).pw_name, None, None)
    try:
        entry = pwd.getpwnam(preferred)
    except KeyError:
        entry = _create_system_user(preferred)
    return RunAs(entry.pw_name, entry.pw_uid, entry.pw_gid)


def _create_system_user(name: str) -> pwd.struct_passwd:
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    done = subprocess.run(
        [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        capture_output=True, text=True, check=False,
    )
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(name)  # created now, or by a concurrent caller
    log.warning("cannot create system user %s (%s); using %s", name,
                done.stderr.strip(), FALLBACK_USER)
    return pwd.getpwnam(FALLBACK_USER)


def _can_search(st: os.stat_result, user: RunAs) -> bool:
    if st.st_uid == user.uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid == user.gid:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def grant_traverse(path: Path, user: RunAs) -> None:
    """Let ``user`` reach ``path``: add search-only (``o+x``) where it lacks it.

    Only when root: a data directory below ``/root`` (mode 0700) is otherwise out of
    the server user's reach. Nothing becomes listable or readable.
    """
    if user.uid is None:
        return
    resolved = path.resolve()
    for ancestor in (*reversed(resolved.parents), resolved):
        st = ancestor.stat()
        if not _can_search(st, user):
            log.info("granting search permission (o+x) on %s to %s", ancestor, user.name)
            ancestor.chmod(stat.S_IMODE(st.st_mode) | stat.S_IXOTH)
