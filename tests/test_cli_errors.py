"""How ``tidzam_ctl`` ends on an error, and the one error root every project exception shares."""

from __future__ import annotations

import argparse
import importlib
import inspect
import pkgutil

import pytest

from bus_schemas.errors import TidzamError
from tidzam_ctl import __main__ as cli
from tidzam_ctl.settings import CtlSettings

PACKAGES = ("bus_schemas", "bus", "audio", "inference", "producers", "consumers", "projections",
            "learning", "tidzam_ctl")
SKIPPED = ("learning.training",)  # imports TensorFlow: seconds and hundreds of MB


class _Refused(TidzamError):
    exit_code = 4


def _run(monkeypatch: pytest.MonkeyPatch, exc: Exception, *argv: str) -> int:
    def handler(settings: CtlSettings, args: argparse.Namespace) -> int:
        raise exc

    monkeypatch.setitem(cli.COMMANDS, "status", handler)
    with pytest.raises(SystemExit) as ended:
        cli.main([*argv, "status"])
    assert isinstance(ended.value.code, int)
    return ended.value.code


def test_a_project_error_is_one_line_with_its_exit_code(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(monkeypatch, _Refused("the mount is in use: pick another")) == 4
    err = capsys.readouterr().err
    assert "error: the mount is in use: pick another" in err
    assert "Traceback" not in err


def test_a_project_error_keeps_no_traceback_with_verbose(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(monkeypatch, TidzamError("bus unreachable"), "-v") == 1
    err = capsys.readouterr().err
    assert "error: bus unreachable" in err and "Traceback" not in err


def test_an_unexpected_error_is_a_short_line_without_verbose(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(monkeypatch, RuntimeError("boom [x]")) == 1
    err = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert "error: unexpected RuntimeError: boom [x] (run with -v for the traceback)" in err


def test_an_unexpected_error_keeps_its_traceback_with_verbose(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def handler(settings: CtlSettings, args: argparse.Namespace) -> int:
        raise RuntimeError("boom")

    monkeypatch.setitem(cli.COMMANDS, "status", handler)
    with pytest.raises(RuntimeError, match="boom") as raised:
        cli.main(["-v", "status"])
    assert raised.traceback[-1].name == "handler"  # the traceback reaches the bug


def test_interrupt_exits_130(monkeypatch: pytest.MonkeyPatch) -> None:
    def handler(settings: CtlSettings, args: argparse.Namespace) -> int:
        raise KeyboardInterrupt

    monkeypatch.setitem(cli.COMMANDS, "status", handler)
    with pytest.raises(SystemExit) as ended:
        cli.main(["status"])
    assert ended.value.code == 130


def _project_exceptions() -> list[type[BaseException]]:
    found: list[type[BaseException]] = []
    for name in PACKAGES:
        package = importlib.import_module(name)
        modules = [name] + [m.name for m in pkgutil.walk_packages(package.__path__, f"{name}.")
                            if not m.name.startswith(SKIPPED)]
        for module_name in modules:
            module = importlib.import_module(module_name)
            found += [obj for _, obj in inspect.getmembers(module, inspect.isclass)
                      if issubclass(obj, Exception) and obj.__module__ == module_name]
    return found


def test_every_project_exception_derives_from_tidzam_error() -> None:
    found = _project_exceptions()
    assert len(found) > 20  # the walk did find the project's exceptions
    offenders = sorted(f"{e.__module__}.{e.__qualname__}" for e in found
                       if not issubclass(e, TidzamError))
    assert not offenders, f"derive these from bus_schemas.errors.TidzamError: {offenders}"
