"""What a source may read: the site's allow-lists, checked before anything is opened.

A ``SourceAdded`` can come from anyone allowed to publish on CONTROL (the command
line, the gateway's control token): without limits it would make the source manager
read any local file (``/etc/...``, FFmpeg's ``concat:`` or ``file:`` protocols) or
fetch from the site's internal network (a router page, a cloud metadata address).
So, configured in one place (``TIDZAM_SOURCE_*``, kept by ``tidzam_ctl up`` like the
privacy settings):

- ``TIDZAM_SOURCE_SCHEMES`` (default ``http,https,rtsp,rtsps,rtmp``): the URL schemes a
  source may use; ``file://`` and FFmpeg's local protocols are never URLs here.
- ``TIDZAM_SOURCE_HOSTS`` (default none): hosts, addresses or networks (CIDR) a URL
  may name besides public ones. A host whose addresses are not all public (loopback,
  private, link-local, reserved) is refused unless listed here, e.g.
  ``TIDZAM_SOURCE_HOSTS=127.0.0.1,192.168.1.0/24,icecast.lan``.
- ``TIDZAM_SOURCE_FOLDERS`` (default ``$TIDZAM_HOME/recordings`` and, when set,
  ``TIDZAM_ARCHIVE_DIR``): the folders a local file or an archive database must lie in,
  symbolic links resolved.

What is not covered: FFmpeg follows HTTP redirects, so a public server may redirect
to an internal one; a host's DNS answer may change between the check and the fetch.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field

from bus.settings import TidzamSettings
from bus_schemas import SourceAdded
from bus_schemas.errors import TidzamError

DEFAULT_SCHEMES = "http,https,rtsp,rtsps,rtmp"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class SourcePolicySettings(TidzamSettings):
    """The allow-lists (``TIDZAM_SOURCE_*``), comma-separated."""

    source_schemes: str = Field(DEFAULT_SCHEMES, max_length=1_000)
    source_hosts: str = Field("", max_length=10_000)
    source_folders: str = Field("", max_length=10_000)


SOURCE_POLICY_FIELDS = tuple(SourcePolicySettings.model_fields)


class SourceRefused(TidzamError):
    """A source the site's policy does not allow: it never will, so it is not retried."""


class Unresolved(TidzamError):
    """A host that does not resolve now (it may later: a permanent source retries)."""


@dataclass(frozen=True)
class SourcePolicy:
    schemes: frozenset[str]
    hosts: frozenset[str]
    networks: tuple[Network, ...]
    folders: tuple[Path, ...]

    @classmethod
    def from_settings(cls, settings: SourcePolicySettings, home: Path | None = None,
                      archive_dir: Path | None = None) -> SourcePolicy:
        schemes = frozenset(s.strip().lower() for s in settings.source_schemes.split(",")
                            if s.strip()) - {"file"}
        hosts, networks = set[str](), list[Network]()
        for item in (h.strip() for h in settings.source_hosts.split(",")):
            if not item:
                continue
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                hosts.add(item.lower().rstrip("."))
        named = [Path(f.strip()) for f in settings.source_folders.split(",") if f.strip()]
        if not named:
            named = [p for p in (home / "recordings" if home else None, archive_dir) if p]
        folders = tuple(os.path.realpath(p.expanduser()) for p in named)
        return cls(schemes, frozenset(hosts), tuple(networks),
                   tuple(Path(f) for f in folders))

    # ---------------------------------------------------------------- checks

    async def check(self, cfg: SourceAdded) -> None:
        """Raise ``SourceRefused`` (never allowed) or ``Unresolved`` (try later)."""
        if cfg.kind in ("jack", "live"):
            return  # a JACK port pattern, a phone's stream: nothing is opened by name
        if cfg.database:
            self.check_path(cfg.database, "the archive folder")
        if not cfg.location:
            return
        if "://" in cfg.location:
            await self.check_url(cfg.location)
        else:
            self.check_path(cfg.location, "the file")

    def check_path(self, location: str, what: str) -> None:
        path = Path(location)
        if not path.is_absolute():
            raise SourceRefused(f"{what} {location!r} is not an absolute path (URLs take a "
                                f"scheme: {', '.join(sorted(self.schemes))})")
        real = Path(os.path.realpath(path))
        if not any(real == f or real.is_relative_to(f) for f in self.folders):
            allowed = ", ".join(map(str, self.folders)) or "none"
            raise SourceRefused(f"{what} {location} is outside the folders sources may read "
                                f"({allowed}); allow its folder with TIDZAM_SOURCE_FOLDERS")

    async def check_url(self, url: str) -> None:
        try:
            parts = urlsplit(url)
            host = (parts.hostname or "").lower().rstrip(".")
        except ValueError as exc:
            raise SourceRefused(f"{url!r} is not a URL: {exc}") from None
        if parts.scheme.lower() not in self.schemes:
            raise SourceRefused(f"{url}: scheme {parts.scheme!r} is not allowed (allowed: "
                                f"{', '.join(sorted(self.schemes)) or 'none'}; "
                                "TIDZAM_SOURCE_SCHEMES)")
        if not host:
            raise SourceRefused(f"{url}: no host")
        if host in self.hosts:
            return
        for address in await _addresses(host):
            if address.is_global or any(address in n for n in self.networks):
                continue
            raise SourceRefused(f"{url}: {host} is {_kind(address)} address {address}, "
                                "not public; allow it with TIDZAM_SOURCE_HOSTS")


async def _addresses(host: str) -> Sequence[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None,
                                                             type=socket.SOCK_STREAM)
    except OSError as exc:
        raise Unresolved(f"{host} does not resolve: {exc}") from None
    found = []
    for info in infos:
        text = str(info[4][0]).split("%", 1)[0]  # an IPv6 scope
        found.append(ipaddress.ip_address(text))
    if not found:
        raise Unresolved(f"{host} has no address")
    return found


def _kind(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    for test, name in (("is_loopback", "a loopback"), ("is_link_local", "a link-local"),
                       ("is_private", "a private"), ("is_multicast", "a multicast")):
        if getattr(address, test):
            return name
    return "a reserved"
