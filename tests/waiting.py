"""Waiting in tests: poll a condition until it holds or a deadline passes.

Tests wait on a condition (a row count, a file, a consumer's backlog), never on a
fixed sleep. ``wait_for`` is for synchronous tests (a stack of subprocesses),
``wait_until`` for async tests, whose condition may itself be async. Both fail with
``AssertionError: timed out after N s waiting for <what>``.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable


def _timed_out(timeout_s: float, what: str) -> AssertionError:
    return AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def wait_for(condition: Callable[[], bool], timeout_s: float = 60.0, what: str = "condition",
             *, poll_s: float = 0.1) -> None:
    """Call ``condition`` every ``poll_s`` until it is true; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(poll_s)
    raise _timed_out(timeout_s, what)


async def wait_until(condition: Callable[[], Awaitable[bool] | bool], timeout_s: float,
                     what: str, *, poll_s: float = 0.05,
                     pause: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
    """Await ``condition`` (async or plain) until it is true, ``pause(poll_s)`` between
    tries; fail after ``timeout_s``, also when one try hangs. ``pause`` is what lets the
    code under test run meanwhile (a Textual app's ``pilot.pause``, for instance)."""
    scope = asyncio.timeout(timeout_s)
    try:
        async with scope:
            while True:
                ready = condition()
                if inspect.isawaitable(ready):
                    ready = await ready
                if ready:
                    return
                await pause(poll_s)
    except TimeoutError:
        if scope.expired():
            raise _timed_out(timeout_s, what) from None
        raise
