"""The negative-window helpers: they watch the whole window and fail at the first moment
the condition holds (not only at its end), and pass when it never does."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from helpers import async_never, never


def test_never_passes_when_the_condition_stays_false() -> None:
    start = time.monotonic()
    never(lambda: False, 0.05)
    assert time.monotonic() - start >= 0.05  # it watched the whole window


def test_never_fails_while_the_window_is_open_and_says_when() -> None:
    flag = threading.Event()
    threading.Timer(0.02, flag.set).start()
    with pytest.raises(AssertionError, match=r"became true \d+\.\d+s into a 30s window"):
        never(flag.is_set, 30)  # fails long before the window's end


def test_never_catches_a_condition_that_holds_only_briefly() -> None:
    seen = {"n": 0}

    def blip() -> bool:
        seen["n"] += 1
        return seen["n"] == 3  # true once, mid-window: a look at the end would miss it

    with pytest.raises(AssertionError):
        never(blip, 5)


async def test_async_never_lets_the_loop_run_and_fails_on_what_it_does() -> None:
    happened = asyncio.Event()
    asyncio.get_running_loop().call_later(0.02, happened.set)
    with pytest.raises(AssertionError, match="became true"):
        await async_never(happened.is_set, 30)


async def test_async_never_awaits_an_awaitable_condition() -> None:
    async def still_false() -> bool:
        await asyncio.sleep(0)
        return False

    start = time.monotonic()
    await async_never(still_false, 0.05)
    assert time.monotonic() - start >= 0.05
