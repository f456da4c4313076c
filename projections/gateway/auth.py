"""The gateway's tokens: named, with a role, revocable; only their SHA-256 is kept.

``<home>/gateway/tokens.json`` (mode 0600) holds ``{"tokens": [{name, role, sha256,
created_at, revoked}]}``. A token is shown once, when it is made (``tidzam_ctl token
create``; ``up`` makes one named ``admin`` when there is none). Roles: ``read`` (live
data and history, when those are not public) and ``control`` (also sources, rules,
labels, mixer, deployments). The file is re-read when it changes, so a revocation
takes effect in every running gateway without a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from bus_schemas.errors import TidzamError

Role = Literal["read", "control"]
ROLES: tuple[Role, ...] = ("read", "control")


class TokenError(TidzamError, ValueError):
    """A token cannot be made or revoked as asked."""


@dataclass(frozen=True)
class TokenEntry:
    name: str
    role: Role
    sha256: str
    created_at: float
    revoked: bool = False

    def allows(self, role: Role) -> bool:
        return not self.revoked and (self.role == "control" or role == "read")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._entries: list[TokenEntry] = []
        self._stamp: tuple[int, int] | None = None

    def entries(self) -> list[TokenEntry]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._entries, self._stamp = [], None
            return []
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            raw = json.loads(self.path.read_text())
            self._entries = [TokenEntry(**e) for e in raw.get("tokens", [])]
            self._stamp = stamp
        return list(self._entries)

    def check(self, token: str | None, role: Role) -> TokenEntry | None:
        """The entry of ``token`` if it grants ``role`` (compared in constant time)."""
        if not token or len(token) > 256:
            return None
        try:
            digest = _digest(token)
        except UnicodeEncodeError:  # a lone surrogate (JSON "\\ud800"): no token of ours
            return None
        for entry in self.entries():
            if hmac.compare_digest(entry.sha256, digest) and entry.allows(role):
                return entry
        return None

    def create(self, name: str, role: Role) -> str:
        """A new token (returned once, never stored in clear)."""
        if role not in ROLES:
            raise TokenError(f"role must be one of {', '.join(ROLES)}")
        if not name or len(name) > 64 or not name.replace("-", "").replace("_", "").isalnum():
            raise TokenError("a token name is 1-64 letters, digits, '-' or '_'")
        entries = self.entries()
        if any(e.name == name and not e.revoked for e in entries):
            raise TokenError(f"a token named {name!r} exists; revoke it first")
        token = secrets.token_urlsafe(32)
        self._write([*entries, TokenEntry(name, role, _digest(token), time.time())])
        return token

    def revoke(self, name: str) -> None:
        entries = self.entries()
        if not any(e.name == name and not e.revoked for e in entries):
            raise TokenError(f"no live token named {name!r}")
        self._write([TokenEntry(e.name, e.role, e.sha256, e.created_at,
                                e.revoked or e.name == name) for e in entries])

    def _write(self, entries: list[TokenEntry]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        part = self.path.with_name(f".{self.path.name}.part")
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"tokens": [asdict(e) for e in entries]}, f, indent=1)
        os.replace(part, self.path)
        self._stamp = None


def tokens_path(home: Path) -> Path:
    return home / "gateway" / "tokens.json"
