"""The tests' wait helpers: they return once the condition holds and fail with a message."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from tests.waiting import wait_for, wait_until


def test_wait_for_returns_when_the_condition_holds() -> None:
    calls = itertools.count()
    wait_for(lambda: next(calls) == 3, 5, "the third call", poll_s=0.001)
    assert next(calls) == 4


def test_wait_for_fails_with_what_it_waited_for() -> None:
    with pytest.raises(AssertionError, match="timed out after 0 s waiting for nothing"):
        wait_for(lambda: False, 0.05, "nothing", poll_s=0.01)


async def test_wait_until_takes_async_and_plain_conditions() -> None:
    calls = itertools.count()

    async def third() -> bool:
        return next(calls) == 3
    await wait_until(third, 5, "the third call", poll_s=0.001)
    await wait_until(lambda: next(calls) == 6, 5, "the sixth call", poll_s=0.001)
    assert next(calls) == 7


async def test_wait_until_fails_also_when_one_try_hangs() -> None:
    async def hangs() -> bool:
        await asyncio.sleep(3600)
        return True
    with pytest.raises(AssertionError, match="waiting for a hung check"):
        await wait_until(hangs, 0.05, "a hung check")


async def test_a_timeout_of_the_condition_itself_is_not_taken_for_the_deadline() -> None:
    def times_out() -> bool:
        raise TimeoutError("the server did not answer")
    with pytest.raises(TimeoutError, match="the server did not answer"):
        await wait_until(times_out, 5, "an answer")


async def test_wait_until_pauses_with_the_given_pause() -> None:
    pauses: list[float] = []

    async def pause(delay: float) -> None:
        pauses.append(delay)
    await wait_until(lambda: len(pauses) == 2, 5, "two pauses", poll_s=0.5, pause=pause)
    assert pauses == [0.5, 0.5]


async def test_a_wake_up_heard_before_the_store_is_read_again() -> None:
    """``bus.history.settle_read``: a core message can arrive before its stream stored it;
    a read that found nothing is tried again until it does (or a few seconds pass)."""
    from bus.history import settle_read

    found = iter([False, False, True, True])
    calls = []

    async def read() -> bool:
        calls.append(1)
        return next(found)
    await settle_read(read, delays_s=(0.0, 0.0, 0.0, 0.0))
    assert len(calls) == 3  # stopped at the read that found the message

    async def never() -> bool:
        calls.append(1)
        return False
    calls.clear()
    await settle_read(never, delays_s=(0.0, 0.0))
    assert len(calls) == 3  # the first read and one per delay, then it gives up
