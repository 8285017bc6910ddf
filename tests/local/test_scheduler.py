"""TaskScheduler on the active backend's timer wheel (the suite runs once per backend).

Synchronization is by events, futures and `async_wait_until`; time bounds are generous
because the CI box is a loaded 2-core machine. "No earlier than asked" is exact, though:
the scheduler rounds deadlines up and reads the clock rounded down.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import threading
import time
from typing import Any

import pytest

from helpers import async_never, async_wait_until
from meetq import (
    MeetqError,
    Priority,
    QueueFullError,
    Task,
    TaskNotFoundError,
    TaskResult,
    TaskScheduler,
    TaskStatus,
)

SLACK = 0.5  # seconds a timer may be late on a loaded machine before a test fails


STATS_KEYS = {
    "total_tasks",
    "completed_tasks",
    "failed_tasks",
    "cancelled_tasks",
    "retried_tasks",
    "active_tasks",
    "delayed_tasks",
    "pending_tasks",
}


def books_balance(s: TaskScheduler) -> bool:
    """Every submitted task is counted exactly once: finished, running or waiting."""
    st = s.get_stats()
    assert set(st) == STATS_KEYS
    finished = st["completed_tasks"] + st["failed_tasks"] + st["cancelled_tasks"]
    waiting = st["active_tasks"] + st["delayed_tasks"] + st["pending_tasks"]
    return bool(st["total_tasks"] == finished + waiting)


class Gate:
    """An async handler that signals it started and holds its worker until released."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.cancelled = False

    async def __call__(self, task: Task) -> str:
        self.started.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        return "released"


async def test_sync_async_and_thread_handlers_complete() -> None:
    loop_thread = threading.get_ident()
    seen: dict[str, int] = {}

    def sync(task: Task) -> int:
        seen["sync"] = threading.get_ident()
        return int(task.payload["x"]) * 2

    async def coro(task: Task) -> str:
        await asyncio.sleep(0)
        return "async"

    def blocking(task: Task) -> str:
        seen["thread"] = threading.get_ident()
        return "thread"

    async with TaskScheduler(buffer_size=10, workers=2) as s:
        a = s.submit(Task(type="double", handler=sync, payload={"x": 21}))
        b = s.submit(Task(type="coro", handler=coro))
        c = s.submit(Task(type="blocking", handler=blocking, in_thread=True))
        results = [await s.wait(i) for i in (a, b, c)]
        assert [r.status for r in results] == [TaskStatus.COMPLETED] * 3
        assert all(isinstance(r, TaskResult) and r.error is None for r in results)
        assert all(r.start_time is not None and r.end_time >= r.start_time for r in results)
        assert s.status(a) is TaskStatus.COMPLETED and s.status(a) == "completed"
        assert seen["sync"] == loop_thread
        assert seen["thread"] != loop_thread
        assert s.get_stats()["completed_tasks"] == 3
        assert books_balance(s)


async def test_handler_return_value_is_kept_on_the_task() -> None:
    task = Task(type="t", handler=lambda t: {"ok": True})
    async with TaskScheduler() as s:
        await s.wait(s.submit(task))
    assert task.result == {"ok": True}
    assert task.status is TaskStatus.COMPLETED


async def test_strict_priority_with_a_busy_worker() -> None:
    gate = Gate()
    order: list[str] = []
    async with TaskScheduler(buffer_size=10, workers=1) as s:
        s.submit(Task(type="blocker", handler=gate))
        await gate.started.wait()
        ids = [
            s.submit(Task(type=name, priority=prio, handler=lambda t: order.append(t.type)))
            for name, prio in [
                ("low", Priority.LOW),
                ("normal", Priority.NORMAL),
                ("high-1", Priority.HIGH),
                ("critical", Priority.CRITICAL),
                ("high-2", Priority.HIGH),
                ("low-2", 0),
            ]
        ]
        assert s.get_stats()["pending_tasks"] == 6
        gate.release.set()
        for i in ids:
            await s.wait(i)
    assert order == ["critical", "high-1", "high-2", "normal", "low", "low-2"]


async def test_delay_fires_no_earlier_than_asked_and_soon_after() -> None:
    ran: dict[str, float] = {}
    async with TaskScheduler() as s:
        t0 = time.monotonic()
        tid = s.submit(
            Task(type="d", handler=lambda t: ran.setdefault("at", time.monotonic()), delay=0.05)
        )
        assert s.status(tid) is TaskStatus.PENDING
        assert s.get_stats()["delayed_tasks"] == 1
        await s.wait(tid)
    assert ran["at"] - t0 >= 0.05
    assert ran["at"] - t0 < 0.05 + SLACK


async def test_scheduled_at_uses_wall_clock_seconds() -> None:
    ran: dict[str, float] = {}
    async with TaskScheduler() as s:
        when = time.time() + 0.04
        tid = s.submit(
            Task(type="d", handler=lambda t: ran.setdefault("at", time.time()), scheduled_at=when)
        )
        await s.wait(tid)
    # The wall clock is only read once at submit; allow for its coarser resolution.
    assert ran["at"] >= when - 0.002
    assert ran["at"] < when + SLACK


async def test_an_earlier_deadline_rearms_the_single_timer() -> None:
    ran = asyncio.Event()
    async with TaskScheduler() as s:
        late = s.submit(Task(type="late", handler=lambda t: None, delay=3600))
        t0 = time.monotonic()
        early = s.submit(Task(type="early", handler=lambda t: ran.set(), delay=0.02))
        await asyncio.wait_for(ran.wait(), SLACK + 0.02)
        assert time.monotonic() - t0 >= 0.02
        assert s.status(early) is TaskStatus.COMPLETED
        assert s.status(late) is TaskStatus.PENDING
        dropped = await s.stop()
    assert [t.id for t in dropped] == [late]
    assert dropped[0].status is TaskStatus.CANCELLED


async def test_2000_random_timers_fire_in_deadline_order() -> None:
    rng = random.Random(20260101)
    fired: list[tuple[float, float, float]] = []  # (due no earlier than, no later than, ran at)

    def record(task: Task) -> None:
        fired.append((*task.payload["due"], time.monotonic()))

    async with TaskScheduler(buffer_size=2000, workers=4) as s:
        ids = []
        for _ in range(2000):
            delay = rng.uniform(0.0, 0.4)
            task = Task(type="t", handler=record, delay=delay)
            before = time.monotonic()
            ids.append(s.submit(task))
            # The scheduler reads the clock inside submit(): bracket that read.
            task.payload["due"] = (before + delay, time.monotonic() + delay)
        for tid in ids:
            assert (await s.wait(tid)).status is TaskStatus.COMPLETED
    assert len(fired) == 2000
    for due_lo, _, at in fired:
        assert at >= due_lo, "fired early"
    # Deadlines are whole milliseconds (rounded up): the true deadline of a task lies in
    # [due_lo, due_hi + 1 ms], and the true deadlines must never decrease.
    for (x_lo, _, _), (_, y_hi, _) in itertools.pairwise(fired):
        assert x_lo <= y_hi + 0.001
    assert max(at - hi for _, hi, at in fired) < SLACK


async def test_retry_then_success_with_backoff() -> None:
    attempts: list[float] = []

    def flaky(task: Task) -> str:
        attempts.append(time.monotonic())
        if len(attempts) < 3:
            raise ConnectionError(f"attempt {len(attempts)}")
        return "ok"

    async with TaskScheduler() as s:
        task = Task(type="flaky", handler=flaky, max_retries=3, retry_backoff=0.02)
        result = await s.wait(s.submit(task))
        assert result.status is TaskStatus.COMPLETED
        assert task.retry_count == 2
        assert task.result == "ok"
        assert s.get_stats()["retried_tasks"] == 2
    # Equal jitter: the n-th retry waits between half and all of backoff * 2**(n-1).
    assert attempts[1] - attempts[0] >= 0.01
    assert attempts[2] - attempts[1] >= 0.02


async def test_retries_exhausted_fail_with_the_error_kept() -> None:
    calls = 0

    async def broken(task: Task) -> None:
        nonlocal calls
        calls += 1
        raise ValueError("bad payload")

    async with TaskScheduler() as s:
        tid = s.submit(Task(type="b", handler=broken, max_retries=2, retry_backoff=0.001))
        result = await s.wait(tid)
        assert result.status is TaskStatus.FAILED
        assert result.error is not None and "ValueError: bad payload" in result.error
        assert calls == 3
        st = s.get_stats()
        assert (st["failed_tasks"], st["retried_tasks"]) == (1, 2)


async def test_default_is_no_retry() -> None:
    async with TaskScheduler() as s:
        task = Task(type="b", handler=lambda t: 1 / 0)
        assert task.max_retries == 0 and task.timeout == 30
        result = await s.wait(s.submit(task))
        assert result.status is TaskStatus.FAILED
        assert "ZeroDivisionError" in (result.error or "")
        assert s.get_stats()["retried_tasks"] == 0


async def test_timeout_cancels_the_handler() -> None:
    gate = Gate()
    async with TaskScheduler() as s:
        t0 = time.monotonic()
        result = await s.wait(s.submit(Task(type="slow", handler=gate, timeout=0.05)))
        assert result.status is TaskStatus.TIMEOUT
        assert time.monotonic() - t0 >= 0.05
        assert gate.cancelled
        assert "timed out" in (result.error or "")
        assert s.get_stats()["failed_tasks"] == 1


async def test_timeout_retries_while_retries_are_left() -> None:
    starts = 0

    async def hang(task: Task) -> None:
        nonlocal starts
        starts += 1
        await asyncio.Event().wait()

    async with TaskScheduler() as s:
        task = Task(type="h", handler=hang, timeout=0.02, max_retries=1, retry_backoff=0.001)
        result = await s.wait(s.submit(task))
        assert result.status is TaskStatus.TIMEOUT
        assert starts == 2
        assert s.get_stats()["retried_tasks"] == 1


async def test_thread_handler_timeout() -> None:
    release = threading.Event()
    async with TaskScheduler() as s:
        tid = s.submit(
            Task(type="t", handler=lambda t: release.wait(10), in_thread=True, timeout=0.05)
        )
        result = await s.wait(tid)
        release.set()  # threads cannot be interrupted; let it finish
        assert result.status is TaskStatus.TIMEOUT


async def test_cancel_pending_delayed_and_running() -> None:
    gate = Gate()
    ran: list[str] = []
    async with TaskScheduler(workers=1) as s:
        running = s.submit(Task(type="running", handler=gate))
        await gate.started.wait()
        pending = s.submit(Task(type="pending", handler=lambda t: ran.append("pending")))
        delayed = s.submit(Task(type="delayed", handler=lambda t: ran.append("delayed"), delay=60))
        st = s.get_stats()
        assert (st["active_tasks"], st["delayed_tasks"], st["pending_tasks"]) == (1, 1, 1)
        assert books_balance(s)
        assert s.cancel(pending) is True
        assert s.cancel(delayed) is True
        assert s.cancel(running) is True
        assert s.status(pending) is TaskStatus.CANCELLED
        assert (await s.wait(running)).status is TaskStatus.CANCELLED
        assert gate.cancelled
        assert (await s.wait(delayed)).status is TaskStatus.CANCELLED
        assert s.cancel(pending) is False, "already finished"
        assert s.cancel("no-such-task") is False
        done = s.submit(Task(type="ok", handler=lambda t: None))
        await s.wait(done)
        assert s.cancel(done) is False
        st = s.get_stats()
        assert st["cancelled_tasks"] == 3
        assert (st["delayed_tasks"], st["pending_tasks"], st["active_tasks"]) == (0, 0, 0)
        assert books_balance(s)
    assert ran == []


async def test_cancel_during_retry_backoff() -> None:
    async with TaskScheduler() as s:
        tid = s.submit(Task(type="f", handler=lambda t: 1 / 0, max_retries=5, retry_backoff=60))
        await async_wait_until(lambda: s.get_stats()["retried_tasks"] == 1)
        assert s.status(tid) is TaskStatus.PENDING
        assert s.cancel(tid)
        assert (await s.wait(tid)).status is TaskStatus.CANCELLED
        assert s.get_stats()["delayed_tasks"] == 0


async def test_queue_full_bounds_ready_tasks_only() -> None:
    gate = Gate()
    async with TaskScheduler(buffer_size=2, workers=1) as s:
        s.submit(Task(type="blocker", handler=gate))
        await gate.started.wait()
        a = s.submit(Task(type="a", handler=lambda t: None))
        b = s.submit(Task(type="b", handler=lambda t: None))
        with pytest.raises(QueueFullError):
            s.submit(Task(type="c", handler=lambda t: None))
        # Delayed tasks never hit the bound; due while the lanes are full, they wait.
        late = [s.submit(Task(type="late", handler=lambda t: None, delay=0.01)) for _ in range(3)]
        await async_wait_until(lambda: s.get_stats()["delayed_tasks"] == 0)
        st = s.get_stats()
        assert st["pending_tasks"] == 5
        assert st["total_tasks"] == 6
        with pytest.raises(QueueFullError):
            s.submit(Task(type="c", handler=lambda t: None))
        gate.release.set()
        for tid in [a, b, *late]:
            assert (await s.wait(tid)).status is TaskStatus.COMPLETED
        assert books_balance(s)


async def test_unknown_ids_raise_task_not_found() -> None:
    async with TaskScheduler() as s:
        with pytest.raises(TaskNotFoundError):
            await s.wait("missing")
        with pytest.raises(TaskNotFoundError):
            s.status("missing")


async def test_finished_results_are_bounded_by_count_and_age() -> None:
    async with TaskScheduler(max_results=5) as s:
        ids = [s.submit(Task(type="t", handler=lambda t: None)) for _ in range(10)]
        await async_wait_until(lambda: s.get_stats()["completed_tasks"] == 10)
        for old in ids[:5]:
            with pytest.raises(TaskNotFoundError):
                s.status(old)
        assert all(s.status(i) is TaskStatus.COMPLETED for i in ids[5:])
    async with TaskScheduler(result_ttl=0.05) as s:
        first = s.submit(Task(type="t", handler=lambda t: None))
        await s.wait(first)

        def first_forgotten() -> bool:
            # Expiry happens as later tasks finish; keep finishing tasks until it does.
            s.submit(Task(type="t", handler=lambda t: None))
            try:
                s.status(first)
            except TaskNotFoundError:
                return True
            return False

        await async_wait_until(first_forgotten, timeout=5, interval=0.01)


async def test_stop_finishes_ready_and_running_work_and_reports_delayed() -> None:
    gate = Gate()
    ran: list[str] = []
    s = TaskScheduler(workers=1)
    await s.start()
    # Runs (inline) and fails first, so it is waiting for its retry when stop() begins.
    retrying = s.submit(Task(type="r", handler=lambda t: 1 / 0, max_retries=3, retry_backoff=30))
    running = s.submit(Task(type="running", handler=gate))
    await gate.started.wait()
    assert s.get_stats()["retried_tasks"] == 1
    ready = s.submit(Task(type="ready", handler=lambda t: ran.append("ready")))
    delayed = s.submit(Task(type="delayed", handler=lambda t: ran.append("x"), delay=30))
    stop = asyncio.ensure_future(s.stop())
    await async_wait_until(lambda: s.status(delayed) is TaskStatus.CANCELLED)
    assert not stop.done()
    with pytest.raises(MeetqError):
        s.submit(Task(type="late", handler=lambda t: None))
    gate.release.set()
    dropped = await stop
    assert [t.id for t in dropped] == [retrying, delayed]
    assert all(t.status is TaskStatus.CANCELLED for t in dropped)
    assert s.status(running) is TaskStatus.COMPLETED
    assert s.status(ready) is TaskStatus.COMPLETED
    assert ran == ["ready"]
    st = s.get_stats()
    assert (st["active_tasks"], st["pending_tasks"], st["delayed_tasks"]) == (0, 0, 0)
    assert books_balance(s)


async def test_stop_with_discard_cancels_ready_and_running() -> None:
    gate = Gate()
    s = TaskScheduler(workers=1)
    await s.start()
    running = s.submit(Task(type="running", handler=gate))
    await gate.started.wait()
    ready = s.submit(Task(type="ready", handler=lambda t: None))
    assert await s.stop(discard=True) == []
    assert gate.cancelled
    assert s.status(running) is TaskStatus.CANCELLED
    assert s.status(ready) is TaskStatus.CANCELLED
    assert books_balance(s)


async def test_stop_timeout_cancels_work_that_does_not_finish() -> None:
    gate = Gate()
    s = TaskScheduler(workers=2)
    await s.start()
    stuck = s.submit(Task(type="stuck", handler=gate, timeout=None))
    await gate.started.wait()
    t0 = time.monotonic()
    await s.stop(timeout=0.05)
    # asyncio's own timeout (uvloop: whole ms on a cached clock) may end a hair early.
    assert time.monotonic() - t0 >= 0.04
    assert gate.cancelled
    assert (await s.wait(stuck)).status is TaskStatus.CANCELLED


async def test_no_retries_once_stopping() -> None:
    gate = Gate()

    async def fail_after_gate(task: Task) -> None:
        await gate(task)
        raise RuntimeError("boom")

    s = TaskScheduler()
    await s.start()
    tid = s.submit(Task(type="f", handler=fail_after_gate, max_retries=5, retry_backoff=0.001))
    await gate.started.wait()
    stop = asyncio.ensure_future(s.stop())
    await async_wait_until(lambda: s._closed)
    gate.release.set()
    assert await stop == []
    assert s.status(tid) is TaskStatus.FAILED
    assert s.get_stats()["retried_tasks"] == 0


async def test_tasks_submitted_before_start_run_after_start() -> None:
    s = TaskScheduler()
    now = s.submit(Task(type="now", handler=lambda t: None))
    soon = s.submit(Task(type="soon", handler=lambda t: None, delay=0.01))
    assert s.status(now) is TaskStatus.PENDING
    async with s:
        assert (await s.wait(now)).status is TaskStatus.COMPLETED
        assert (await s.wait(soon)).status is TaskStatus.COMPLETED


async def test_many_waiters_and_invalid_submissions() -> None:
    gate = Gate()
    async with TaskScheduler() as s:
        tid = s.submit(Task(type="g", handler=gate, id="fixed-id"))
        assert tid == "fixed-id"
        with pytest.raises(ValueError, match="already scheduled"):
            s.submit(Task(type="g", handler=gate, id="fixed-id"))
        with pytest.raises(ValueError, match="no handler"):
            s.submit(Task(type="g"))
        with pytest.raises(ValueError, match="priority"):
            s.submit(Task(type="g", handler=gate, priority=7))
        waiters = [asyncio.ensure_future(s.wait(tid)) for _ in range(3)]
        await gate.started.wait()
        gate.release.set()
        results: list[Any] = await asyncio.gather(*waiters)
        assert {r.status for r in results} == {TaskStatus.COMPLETED}


async def test_a_handler_returning_any_awaitable_is_awaited() -> None:
    loop = asyncio.get_running_loop()

    def returns_future(task: Task) -> asyncio.Future[int]:
        fut: asyncio.Future[int] = loop.create_future()
        loop.call_soon(fut.set_result, 42)
        return fut

    task = Task(type="f", handler=returns_future)
    async with TaskScheduler() as s:
        assert (await s.wait(s.submit(task))).status is TaskStatus.COMPLETED
    assert task.result == 42


async def test_one_loop_timer_and_no_periodic_poll() -> None:
    s = TaskScheduler()
    wakeups = 0
    on_timer = s._on_timer

    def counting_on_timer() -> None:
        nonlocal wakeups
        wakeups += 1
        on_timer()

    s._on_timer = counting_on_timer  # type: ignore[method-assign]
    async with s:
        s.submit(Task(type="far", handler=lambda t: None, delay=3600))
        near = s.submit(Task(type="near", handler=lambda t: None, delay=0.1))
        await s.wait(near)
        # A poll at any useful rate would have woken dozens of times in 100 ms; the one
        # timer wakes for the deadline (plus a re-arm if the loop clock woke it a tick early).
        assert 1 <= wakeups <= 3
        # ...and is now armed for the far task, an hour away.
        assert s._timer is not None
        assert s._timer_at - time.monotonic() * 1000 > 3_500_000


async def test_cancel_of_a_running_thread_handler_reports_at_once_and_holds_the_worker() -> None:
    started = threading.Event()
    release = threading.Event()

    def blocking(task: Task) -> None:
        started.set()
        release.wait(10)

    async with TaskScheduler() as s:
        tid = s.submit(Task(type="t", handler=blocking, in_thread=True))
        await async_wait_until(started.is_set)
        assert s.get_stats()["active_tasks"] == 1
        assert s.cancel(tid)
        result = await s.wait(tid)
        assert result.status is TaskStatus.CANCELLED
        # A thread cannot be interrupted: its worker stays taken until it returns.
        assert s.get_stats()["active_tasks"] == 1
        release.set()
        await async_wait_until(lambda: s.get_stats()["active_tasks"] == 0)


async def test_a_timed_out_thread_run_is_retried_only_after_its_thread_returns() -> None:
    running = 0
    overlaps: list[int] = []
    release = threading.Event()
    lock = threading.Lock()

    def blocking(task: Task) -> str:
        nonlocal running
        with lock:
            running += 1
            overlaps.append(running)
        try:
            if task.retry_count == 0:
                release.wait(10)
            return "done"
        finally:
            with lock:
                running -= 1

    async with TaskScheduler(workers=4) as s:
        task = Task(
            type="t",
            handler=blocking,
            in_thread=True,
            timeout=0.02,
            max_retries=1,
            retry_backoff=0.001,
        )
        tid = s.submit(task)
        await async_wait_until(lambda: task._why == 2)  # the first run timed out
        # Not retried while the first thread still runs (its backoff is 1 ms).
        await async_never(lambda: task.retry_count != 0 or s.get_stats()["active_tasks"] != 1, 0.2)
        release.set()
        result = await s.wait(tid)
    assert result.status is TaskStatus.COMPLETED
    assert task.retry_count == 1
    assert overlaps == [1, 1]


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_handlers_own_cancelled_error_is_a_failure(kind: str) -> None:
    def sync(task: Task) -> None:
        raise asyncio.CancelledError

    async def coro(task: Task) -> None:
        await asyncio.sleep(0)
        raise asyncio.CancelledError

    async with TaskScheduler() as s:
        tid = s.submit(Task(type="c", handler=sync if kind == "sync" else coro))
        result = await s.wait(tid)
        assert result.status is TaskStatus.FAILED
        assert result.error == "handler was cancelled"
        assert s.get_stats()["failed_tasks"] == 1
        assert books_balance(s)


async def test_a_sync_handler_is_not_timed_and_never_rerun() -> None:
    calls = 0

    def slow(task: Task) -> str:
        nonlocal calls
        calls += 1
        time.sleep(0.03)  # longer than its timeout: still a success
        return "ok"

    async with TaskScheduler() as s:
        task = Task(type="s", handler=slow, timeout=0.001, max_retries=3)
        result = await s.wait(s.submit(task))
    assert result.status is TaskStatus.COMPLETED
    assert calls == 1 and task.result == "ok"
