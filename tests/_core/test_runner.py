"""`HandlerRunner`: one rule for sync, async and thread handlers, timeouts, cancellation and
failure (CONTRACTS.md section 1)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import orjson
import pytest

from helpers import async_never, next_turns
from meetq._core.runner import (
    ASYNC,
    COMPLETED,
    FAILED,
    SYNC,
    THREAD,
    TIMEOUT,
    HandlerRunner,
    HandlerSpec,
    Outcome,
    describe,
)


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def test_kinds() -> None:
    async def a(x: Any) -> None:
        pass

    def s(x: Any) -> None:
        pass

    assert HandlerSpec.of(a).kind == ASYNC
    assert HandlerSpec.of(s).kind == SYNC
    assert HandlerSpec.of(s, in_thread=True).kind == THREAD


def test_describe() -> None:
    assert describe(ValueError("bad")) == "ValueError: bad"
    assert describe(asyncio.CancelledError()) == "CancelledError: "
    assert describe(Unprintable()) == "<Unprintable: unprintable>"


async def test_sync_handler_finishes_inline_and_is_never_timed() -> None:
    runner = HandlerRunner()
    calls: list[int] = []

    def slow(x: int) -> int:
        calls.append(x)
        time.sleep(0.05)  # the handler's own work: longer than its timeout
        return x * 2

    step = runner.start(HandlerSpec.of(slow), 21, timeout=0.01)
    assert isinstance(step, Outcome)  # no task, no await: done when start returns
    assert step.status == COMPLETED and step.ok
    assert step.result == 42 and step.error is None
    assert step.duration >= 0.05
    assert calls == [21]


async def test_sync_failures_and_its_own_cancelled_error() -> None:
    runner = HandlerRunner()

    def boom(x: Any) -> None:
        raise ValueError("bad input")

    def cancels(x: Any) -> None:
        raise asyncio.CancelledError

    def unprintable(x: Any) -> None:
        raise Unprintable

    for fn, error in [
        (boom, "ValueError: bad input"),
        (cancels, "CancelledError: "),
        (unprintable, "<Unprintable: unprintable>"),
    ]:
        out = runner.start(HandlerSpec.of(fn), None, timeout=1.0)
        assert isinstance(out, Outcome)
        assert (out.status, out.error, out.result) == (FAILED, error, None)


async def test_async_handler_that_never_suspends_needs_no_await() -> None:
    runner = HandlerRunner()

    async def quick(x: int) -> int:
        return x + 1

    step = runner.start(HandlerSpec.of(quick), 1, timeout=5.0)
    assert isinstance(step, Outcome)
    assert step.result == 2 and step.status == COMPLETED


async def test_async_handler_that_suspends_finishes_when_awaited() -> None:
    runner = HandlerRunner()
    gate: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def waits(x: int) -> int:
        return x + await gate

    step = runner.start(HandlerSpec.of(waits), 1, timeout=5.0)
    assert not isinstance(step, Outcome)
    asyncio.get_running_loop().call_soon(gate.set_result, 41)
    out = await step
    assert (out.status, out.result) == (COMPLETED, 42)


async def test_async_timeout_cancels_the_handler_and_is_a_timeout_failure() -> None:
    runner = HandlerRunner()
    cancelled = asyncio.Event()

    async def hangs(x: Any) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    out = await runner.run(HandlerSpec.of(hangs), None, timeout=0.05)
    assert out.status == TIMEOUT and not out.ok
    assert out.error == "handler timed out after 0.05s"
    assert cancelled.is_set()


async def test_async_handler_swallowing_its_timeout_is_still_a_timeout() -> None:
    runner = HandlerRunner()

    async def stubborn(x: Any) -> str:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return "ignored the cancel"
        return "unreachable"

    out = await runner.run(HandlerSpec.of(stubborn), None, timeout=0.05)
    assert out.status == TIMEOUT


async def test_a_timeout_error_of_the_handler_itself_is_a_plain_failure() -> None:
    runner = HandlerRunner()

    async def raises_timeout(x: Any) -> None:
        await asyncio.sleep(0)
        raise TimeoutError("upstream took too long")

    out = await runner.run(HandlerSpec.of(raises_timeout), None, timeout=30.0)
    assert (out.status, out.error) == (FAILED, "TimeoutError: upstream took too long")


async def test_no_timeout_when_zero_or_none() -> None:
    runner = HandlerRunner()

    async def naps(x: Any) -> str:
        await next_turns(3)  # suspended: a timeout of 0 (or any) would cut it here
        return "done"

    for timeout in (0, None, -1.0):
        out = await runner.run(HandlerSpec.of(naps), None, timeout=timeout)
        assert out.status == COMPLETED and out.result == "done"


async def test_handler_cancelled_error_is_a_failure_not_a_cancellation() -> None:
    runner = HandlerRunner()

    async def awaits_cancelled_first_step(x: Any) -> None:
        fut = asyncio.get_running_loop().create_future()
        fut.cancel()
        await fut

    async def awaits_cancelled_later(x: Any) -> None:
        await asyncio.sleep(0)
        fut = asyncio.get_running_loop().create_future()
        fut.cancel()
        await fut

    for fn in (awaits_cancelled_first_step, awaits_cancelled_later):
        for timeout in (None, 5.0):
            out = await runner.run(HandlerSpec.of(fn), None, timeout=timeout)
            assert (out.status, out.error) == (FAILED, "handler was cancelled")


async def test_component_cancel_propagates() -> None:
    runner = HandlerRunner()
    started = asyncio.Event()

    async def hangs(x: Any) -> None:
        started.set()
        await asyncio.Event().wait()

    for timeout in (None, 30.0):
        started.clear()
        task = asyncio.ensure_future(runner.run(HandlerSpec.of(hangs), None, timeout=timeout))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert task.cancelled()


async def test_async_unprintable_exception() -> None:
    runner = HandlerRunner()

    async def first(x: Any) -> None:
        raise Unprintable

    async def later(x: Any) -> None:
        await asyncio.sleep(0)
        raise Unprintable

    for fn in (first, later):
        out = await runner.run(HandlerSpec.of(fn), None, timeout=5.0)
        assert (out.status, out.error) == (FAILED, "<Unprintable: unprintable>")


async def test_callable_returning_a_coroutine_runs_as_async() -> None:
    runner = HandlerRunner()

    class Adder:
        def __call__(self, x: int) -> Any:
            return self.add(x)

        async def add(self, x: int) -> int:
            await asyncio.sleep(0)
            return 40 + x

    spec = HandlerSpec.of(Adder())
    assert spec.kind == SYNC  # does not look async
    out = await runner.run(spec, 2, timeout=5.0)
    assert (out.status, out.result) == (COMPLETED, 42)


async def test_thread_handler_runs_off_the_loop() -> None:
    runner = HandlerRunner(threads=2)
    try:
        loop_thread = threading.get_ident()
        out = await runner.run(
            HandlerSpec.of(lambda x: (x, threading.get_ident()), in_thread=True), 7, timeout=5.0
        )
        assert out.status == COMPLETED
        assert out.result[0] == 7 and out.result[1] != loop_thread
        failed = await runner.run(HandlerSpec.of(_raise, in_thread=True), None, timeout=5.0)
        assert (failed.status, failed.error) == (FAILED, "ValueError: from a thread")
    finally:
        runner.close(wait=True)


def _raise(x: Any) -> None:
    raise ValueError("from a thread")


async def test_thread_timeout_keeps_the_run_until_the_thread_returns() -> None:
    runner = HandlerRunner(threads=1)
    release = threading.Event()
    finished = threading.Event()

    def wedged(x: Any) -> str:
        release.wait(30)
        finished.set()
        return "late"

    try:
        out = await runner.run(HandlerSpec.of(wedged, in_thread=True), None, timeout=0.05)
        assert out.status == TIMEOUT and out.error == "handler timed out after 0.05s"
        assert out.straggler is not None and not out.straggler.done()
        settled = asyncio.ensure_future(out.settled())
        # settled() must not return before the thread does.
        await async_never(lambda: settled.done() or finished.is_set(), 0.2)
        release.set()
        await asyncio.wait_for(settled, 30)
        assert finished.is_set()
    finally:
        release.set()
        runner.close(wait=True)


async def test_encode_failure_is_a_failure_everywhere() -> None:
    runner = HandlerRunner()

    def bad(x: Any) -> object:
        return object()

    async def bad_async(x: Any) -> object:
        await asyncio.sleep(0)
        return {1, 2}

    for spec in (HandlerSpec.of(bad), HandlerSpec.of(bad_async)):
        out = await runner.run(spec, None, timeout=5.0, encode=orjson.dumps)
        assert out.status == FAILED
        assert out.error is not None and out.error.startswith("result is not serializable: ")
    good = await runner.run(HandlerSpec.of(lambda x: {"a": 1}), None, None, orjson.dumps)
    assert good.ok and good.encoded == b'{"a":1}'


async def test_call_is_start_without_an_outcome_for_a_completed_sync_run() -> None:
    runner = HandlerRunner()

    class AsyncLooking:
        def __call__(self, x: int) -> Any:
            return self.run(x)

        async def run(self, x: int) -> int:
            await asyncio.sleep(0)
            return x

    assert runner.call(HandlerSpec.of(lambda x: x + 1), 1, 5.0) == 2
    failed = runner.call(HandlerSpec.of(_raise), None, 5.0)
    assert isinstance(failed, Outcome)
    assert (failed.status, failed.error) == (FAILED, "ValueError: from a thread")
    rest = runner.call(HandlerSpec.of(AsyncLooking()), 3, 5.0)
    assert not isinstance(rest, Outcome)
    out = await rest
    assert (out.status, out.result) == (COMPLETED, 3)
