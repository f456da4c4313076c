"""Sources through the source manager: HTTP streams, files, archives, failures, recovery."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http.server
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from audio.decode import decode_all
from bus_schemas import SourceAdded
from tests.audio_files import default_grid, expected_windows, write_pcm
from tests.real_audio import DAY, MEGAGLEST, RAIN, real_file
from tests.stack_helpers import ctl, running_stack, wait_for
from tidzam_ctl.stack.stack import Stack

_wav = write_pcm


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Short real recordings: 3 s of rain and 3 s of birdsong, stereo WAV."""
    folder = tmp_path_factory.mktemp("clips")
    rain, _ = decode_all(real_file(MEGAGLEST, RAIN), 48_000)
    day, _ = decode_all(real_file(MEGAGLEST, DAY), 48_000)
    return {"rain": _wav(folder / "rain.wav", rain[:, :3 * 48_000]),
            "day": _wav(folder / "day.wav", day[:, 10 * 48_000:13 * 48_000])}


class _Server:
    """A static HTTP server on loopback that can go away and come back on its port."""

    def __init__(self, root: Path) -> None:
        self.root = root
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._httpd: http.server.ThreadingHTTPServer | None = None

    def start(self) -> None:
        handler = functools.partial(_QuietHandler, directory=str(self.root))
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server(clips: dict[str, Path]) -> Iterator[_Server]:
    srv = _Server(clips["rain"].parent)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    monkeypatch.setenv("TIDZAM_OPEN_TIMEOUT_S", "2")
    with running_stack(tmp_path / "home") as s:
        yield s


def _source(stack: Stack, name: str) -> dict:  # type: ignore[type-arg]
    with psycopg.connect(stack.database_url) as conn:
        row = conn.execute("SELECT state, attempts, last_error, channels, wanted FROM sources"
                           " WHERE name = %s", (name,)).fetchone()
    if row is None:
        return {}
    return dict(zip(("state", "attempts", "last_error", "channels", "wanted"), row, strict=True))


def _windows(stack: Stack, name: str) -> list[tuple[int, str]]:
    with psycopg.connect(stack.database_url) as conn:
        return conn.execute("SELECT channel, result[1] FROM predictions WHERE source = %s",
                            (name,)).fetchall()


def test_an_http_stream_is_classified_under_its_channels(stack: Stack, server: _Server) -> None:
    server.start()
    home = stack.home
    done = ctl(home, "source", "add", "web", "--url", server.url("rain.wav"), "--channels", "1")
    assert done.returncode == 0, done.stderr
    wait_for(lambda: _source(stack, "web").get("state") == "unloaded", 60, "the stream's end")
    assert _source(stack, "web")["channels"] == [1]
    windows = _windows(stack, "web")
    assert len(windows) >= expected_windows(3 * 48_000, *default_grid())
    assert {ch for ch, _ in windows} == {1}  # only channel 1, as asked
    listing = json.loads(ctl(home, "source", "ls", "--json").stdout)
    assert [s["name"] for s in listing] == ["web"] and listing[0]["state"] == "unloaded"


def test_permanent_source_recovers_when_the_server_comes_back(stack: Stack,
                                                              server: _Server) -> None:
    home = stack.home
    assert ctl(home, "source", "add", "flaky", "--url", server.url("day.wav"),
               "--permanent").returncode == 0
    wait_for(lambda: _source(stack, "flaky").get("state") == "failed", 30, "a failure")
    failed = _source(stack, "flaky")
    assert "127.0.0.1" in failed["last_error"] and failed["attempts"] >= 0
    server.start()
    wait_for(lambda: _source(stack, "flaky").get("state") == "loaded", 60, "the reload")
    assert _source(stack, "flaky")["attempts"] >= 1  # a reconnect, counted
    wait_for(lambda: len(_windows(stack, "flaky")) >= 5, 60, "windows after recovery")
    assert ctl(home, "source", "rm", "flaky").returncode == 0
    wait_for(lambda: _source(stack, "flaky").get("wanted") is False, 30, "the removal")
    wait_for(lambda: _source(stack, "flaky").get("state") == "unloaded", 30, "the unload")
    assert ctl(home, "source", "ls", "--json").stdout.strip() == "[]"


def test_bad_sources_fail_alone(stack: Stack, server: _Server, clips: dict[str, Path],
                                tmp_path: Path) -> None:
    home = stack.home
    text = tmp_path / "notes.wav"
    text.write_text("not audio\n" * 100)
    silent = socket.socket()  # accepts connections, never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    with contextlib.closing(silent):
        assert ctl(home, "source", "add", "text", "--file", str(text)).returncode == 0
        assert ctl(home, "source", "add", "mute", "--url",
                   f"http://127.0.0.1:{silent.getsockname()[1]}/x.ogg").returncode == 0
        assert ctl(home, "source", "add", "good", "--file", str(clips["day"])).returncode == 0
        wait_for(lambda: _source(stack, "text").get("state") == "failed", 30, "text fails")
        assert "cannot decode" in _source(stack, "text")["last_error"]
        wait_for(lambda: _source(stack, "mute").get("state") == "failed", 30, "mute fails")
        wait_for(lambda: _source(stack, "good").get("state") == "unloaded", 60, "good ends")
    # 3 s stereo, undisturbed by the others
    assert len(_windows(stack, "good")) >= 2 * expected_windows(3 * 48_000, *default_grid())
    bad = ctl(home, "source", "add", "x", "--file", str(tmp_path / "missing.wav"))
    assert bad.returncode == 2 and "no such file" in bad.stderr


def test_the_default_policy_refuses_local_files_and_internal_hosts(
        tmp_path: Path, server: _Server, clips: dict[str, Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Item 7 of issue 14: a ``SourceAdded`` published by anyone on the bus must not
    make the source manager read a local file or fetch from the loopback network.
    Under the default policy (no extra host, the home's ``recordings/`` folder) the
    command line refuses at once, the source manager refuses what reaches the bus
    directly, and the internal server never sees a request."""
    asked: list[str] = []
    monkeypatch.setattr(_QuietHandler, "log_message",
                        lambda self, fmt, *args: asked.append(fmt % args))
    server.start()
    with running_stack(tmp_path / "home", source_hosts="", source_folders="") as stack:
        home = stack.home
        internal = ctl(home, "source", "add", "web", "--url", server.url("rain.wav"), site={})
        assert internal.returncode == 2, internal.stderr
        assert "127.0.0.1 is a loopback address" in internal.stderr
        outside = ctl(home, "source", "add", "f", "--file", str(clips["day"]), site={})
        assert outside.returncode == 2 and "outside the folders" in outside.stderr
        (home / "recordings").mkdir()
        allowed = home / "recordings" / "day.wav"
        allowed.write_bytes(clips["day"].read_bytes())
        (home / "recordings" / "passwd.wav").symlink_to("/etc/passwd")
        forged = {"web": ("url", server.url("rain.wav")),
                  "meta": ("url", "http://169.254.169.254/latest/meta-data/"),
                  "lan": ("url", "http://10.1.2.3:8000/x.ogg"),
                  "scheme": ("url", "file:///etc/passwd"),
                  "ffmpeg": ("file", "concat:/etc/passwd|/etc/hostname"),
                  "escape": ("file", str(home / "recordings" / ".." / "logs" / "x.wav")),
                  "link": ("file", str(home / "recordings" / "passwd.wav")),
                  "ok": ("file", str(allowed))}
        asyncio.run(_publish_sources(stack, forged))
        for name in forged.keys() - {"ok"}:
            wait_for(lambda n=name: _source(stack, n).get("state") == "failed", 30,
                     f"{name} refused")
            assert _source(stack, name)["last_error"].startswith("refused: "), name
        assert "loopback" in _source(stack, "web")["last_error"]
        assert "link-local" in _source(stack, "meta")["last_error"]
        assert "private" in _source(stack, "lan")["last_error"]
        assert "scheme 'file' is not allowed" in _source(stack, "scheme")["last_error"]
        wait_for(lambda: _source(stack, "ok").get("state") == "unloaded", 60, "ok ends")
        assert len(_windows(stack, "ok")) >= 2 * expected_windows(3 * 48_000, *default_grid())
        assert all(not _windows(stack, n) for n in forged.keys() - {"ok"})
    assert asked == []


async def _publish_sources(stack: Stack, sources: dict[str, tuple[str, str]]) -> None:
    from bus.connect import connect
    from bus.publisher import Publisher

    nc = await connect(stack.nats_url, "test-forger")
    try:
        await Publisher(nc.jetstream()).publish_all([
            SourceAdded(source=name, kind=kind, location=location,  # type: ignore[arg-type]
                        at_ns=time.time_ns()) for name, (kind, location) in sources.items()])
    finally:
        await nc.drain()


def test_the_manager_resumes_wanted_sources_after_a_crash(stack: Stack, server: _Server) -> None:
    server.start()
    assert ctl(stack.home, "source", "add", "loop", "--url", server.url("rain.wav"),
               "--permanent").returncode == 0
    wait_for(lambda: len(_windows(stack, "loop")) >= 4, 60, "first windows")
    pid = stack.pid_of("sources")
    assert pid is not None
    import os
    import signal

    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: stack.pid_of("sources") is None, 30, "the kill")
    before = len(_windows(stack, "loop"))
    assert "sources" in stack.check()
    wait_for(lambda: len(_windows(stack, "loop")) > before + 8, 60, "windows after restart")


def test_archives_play_from_a_date_and_list_their_ranges(stack: Stack, clips: dict[str, Path],
                                                         tmp_path: Path) -> None:
    db = tmp_path / "db"
    db.mkdir()
    audio, _ = decode_all(clips["day"], 48_000)
    for minute in ("00", "03"):  # two 3 s files, then a gap, then one more
        _wav(db / f"arch-2025-06-01-10-00-{minute}.wav", audio)
    _wav(db / "arch-2025-06-01-11-00-00.wav", audio)
    listing = ctl(stack.home, "source", "archive-ls", "arch", "--database", str(db), "--json")
    spans = json.loads(listing.stdout)["arch"]
    assert spans["nb_channels"] == 2
    assert [s[0][11:19] for s in spans["database"]] == ["10:00:00", "11:00:00"]
    assert spans["database"][0][1][11:19] == "10:00:06"
    assert ctl(stack.home, "source", "add", "arch", "--database", str(db), "--date",
               "2025-06-01T10:00:01Z").returncode == 0
    wait_for(lambda: _source(stack, "arch").get("state") == "unloaded", 60, "the archive's end")
    with psycopg.connect(stack.database_url) as conn:
        first, count = conn.execute(
            "SELECT min(time), count(*) FROM predictions WHERE source = 'arch' AND channel = 0"
        ).fetchone()  # type: ignore[misc]
    assert first.isoformat().startswith("2025-06-01T10:00:01")  # sought into the first file
    # the rest of file 1, then files 2 and 3, in order: a session each
    assert count >= sum(expected_windows(s * 48_000, *default_grid()) for s in (2, 3, 3))
