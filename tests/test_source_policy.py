"""The source policy alone (``producers.source_policy``): which URLs and files a source
may open. The source manager and the command line under it: tests/test_sources.py."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import pytest

from bus_schemas import SourceAdded
from producers.source_policy import SourcePolicy, SourcePolicySettings, SourceRefused


def _policy(home: Path, **settings: str) -> SourcePolicy:
    chosen = {"source_hosts": "", "source_folders": "", **settings}  # not the test site's
    return SourcePolicy.from_settings(SourcePolicySettings(**chosen), home)  # type: ignore[arg-type]


def _check(policy: SourcePolicy, kind: str, location: str, database: str = "") -> None:
    event = SourceAdded(source="s", kind=kind, location=location,  # type: ignore[arg-type]
                        database=database, at_ns=time.time_ns())
    asyncio.run(policy.check(event))


@pytest.mark.parametrize(("url", "why"), [
    ("file:///etc/passwd", "scheme 'file' is not allowed"),
    ("ftp://example.org/a.ogg", "scheme 'ftp' is not allowed"),
    ("http://127.0.0.1:8000/a.ogg", "127.0.0.1 is a loopback address"),
    ("http://localhost/a.ogg", "is a loopback address"),
    ("http://[::1]:8000/a.ogg", "::1 is a loopback address"),
    ("http://169.254.169.254/latest/meta-data/", "a link-local address"),
    ("rtsp://192.168.1.20/stream", "192.168.1.20 is a private address"),
    ("http://0.0.0.0/a.ogg", "not public"),
    ("http:///a.ogg", "no host"),
])
def test_urls_the_default_refuses(tmp_path: Path, url: str, why: str) -> None:
    with pytest.raises(SourceRefused, match=re.escape(why)):
        _check(_policy(tmp_path), "url", url)


def test_public_addresses_and_listed_hosts_pass(tmp_path: Path) -> None:
    default = _policy(tmp_path)
    _check(default, "url", "http://93.184.215.14/pond.ogg")  # public: no DNS asked
    _check(default, "url", "rtsp://[2606:4700::1111]/mic")
    site = _policy(tmp_path, source_hosts="127.0.0.1, 192.168.1.0/24,icecast.lan")
    _check(site, "url", "http://127.0.0.1:8000/a.ogg")
    _check(site, "url", "rtsp://192.168.1.20/stream")
    _check(site, "url", "http://icecast.lan:8000/a.ogg")  # listed by name: not resolved
    with pytest.raises(SourceRefused, match=re.escape("192.168.2.1 is a private")):
        _check(site, "url", "rtsp://192.168.2.1/stream")
    only_rtsp = _policy(tmp_path, source_schemes="rtsp,file")  # file is never a scheme
    with pytest.raises(SourceRefused, match="scheme 'http'"):
        _check(only_rtsp, "url", "http://93.184.215.14/pond.ogg")
    with pytest.raises(SourceRefused, match="scheme 'file'"):
        _check(only_rtsp, "url", "file:///etc/passwd")


def test_local_files_only_in_the_allowed_folders(tmp_path: Path) -> None:
    home = tmp_path / "home"
    recordings = home / "recordings"
    recordings.mkdir(parents=True)
    (recordings / "a.wav").write_bytes(b"RIFF")
    (recordings / "sub").mkdir()
    (recordings / "out.wav").symlink_to("/etc/hostname")
    policy = _policy(home)
    _check(policy, "file", str(recordings / "a.wav"))
    _check(policy, "archive", "", database=str(recordings / "sub"))
    for location, why in [("/etc/hostname", "outside the folders"),
                          (str(recordings / ".." / "secret.wav"), "outside the folders"),
                          (str(recordings / "out.wav"), "outside the folders"),
                          ("concat:/etc/passwd|/etc/hostname", "not an absolute path"),
                          ("a.wav", "not an absolute path")]:
        with pytest.raises(SourceRefused, match=why):
            _check(policy, "file", location)
    with pytest.raises(SourceRefused, match="the archive folder /etc is outside"):
        _check(policy, "archive", "", database="/etc")
    other = tmp_path / "field"
    other.mkdir()
    _check(_policy(home, source_folders=f"{other}"), "file", str(other / "x.wav"))
    with pytest.raises(SourceRefused, match="outside"):  # the folders replace the default
        _check(_policy(home, source_folders=f"{other}"), "file", str(recordings / "a.wav"))


def test_jack_and_live_sources_open_nothing_by_name(tmp_path: Path) -> None:
    _check(_policy(tmp_path), "jack", "^system:capture_")
    _check(_policy(tmp_path), "live", "")
