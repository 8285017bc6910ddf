"""`Resume`: finishing a coroutine whose first step ran eagerly behaves like a Task."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from meetq._core.eager import Resume


def first_step(coro: Any) -> Any:
    try:
        return coro.send(None)
    except StopIteration:
        raise AssertionError("expected the coroutine to suspend") from None


async def test_result_bare_yields_and_errors_pass_through() -> None:
    fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    failing: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def handler() -> int:
        a = await fut
        await asyncio.sleep(0)  # a bare yield
        try:
            await failing
        except ValueError as exc:
            return a + len(str(exc))
        return -1

    coro = handler()
    yielded = first_step(coro)
    assert yielded is fut
    asyncio.get_running_loop().call_soon(fut.set_result, 40)
    asyncio.get_running_loop().call_later(0.01, failing.set_exception, ValueError("xy"))
    assert await Resume(coro, yielded) == 42


async def _waits_until_cancelled(seen: list[str]) -> None:
    """A handler that suspends forever and records its cancellation."""
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        seen.append("cancelled")
        raise


async def test_timeout_cancels_the_handler_where_it_waits() -> None:
    seen: list[str] = []
    coro = _waits_until_cancelled(seen)
    yielded = first_step(coro)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await Resume(coro, yielded)
    assert seen == ["cancelled"]


async def test_cancelling_the_outer_task_reaches_the_handler() -> None:
    entered = asyncio.Event()
    seen: list[str] = []

    async def handler() -> None:
        entered.set()
        try:
            await asyncio.Event().wait()  # until cancelled
        finally:
            seen.append("cleanup")

    coro = handler()
    yielded = first_step(coro)
    task = asyncio.ensure_future(Resume(coro, yielded))
    await entered.wait()
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == ["cleanup"]


async def test_as_a_task_cancelled_before_its_first_step() -> None:
    seen: list[str] = []
    coro = _waits_until_cancelled(seen)
    task = asyncio.get_running_loop().create_task(Resume(coro, first_step(coro)))
    task.cancel()  # before the task ever ran
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == ["cancelled"]


async def test_as_a_task_returns_the_result() -> None:
    fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def handler() -> str:
        return (await fut) + "!"

    coro = handler()
    task = asyncio.get_running_loop().create_task(Resume(coro, first_step(coro)))
    fut.set_result("done")
    assert await task == "done!"
