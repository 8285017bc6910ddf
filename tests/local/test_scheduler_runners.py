"""The scheduler runs async handlers in long-lived runner tasks (meetq._core.runners): a
run cancelled before its runner resumed it still sees the CancelledError where it waits,
and the runner then serves the next run with its cancel count reset."""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import Any

import pytest

from meetq import Task, TaskScheduler, TaskStatus


@pytest.mark.parametrize("warm", [False, True], ids=["new-runner", "idle-runner"])
async def test_cancel_before_the_runner_resumes_reaches_the_handler(warm: bool) -> None:
    seen: list[str] = []

    async def suspends_once(_t: Any) -> None:
        await asyncio.sleep(0)

    async def waits(_t: Any) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    async def times_out(_t: Any) -> str:
        task = asyncio.current_task()
        try:
            async with asyncio.timeout(0.01):
                await asyncio.Event().wait()
        except TimeoutError:
            pass
        assert task is not None and task.cancelling() == 0
        return "ok"

    async with TaskScheduler(workers=1) as s:
        if warm:  # the runner exists and waits for work
            warmup = await s.wait(s.submit(Task(type="s", handler=suspends_once)))
            assert warmup.status == TaskStatus.COMPLETED
        tid = s.submit(Task(type="w", handler=waits))
        # the pump runs first (call_soon order): the first step suspends and its runner is
        # woken but not yet resumed when this task cancels the run
        await asyncio.sleep(0)
        assert s.status(tid) == TaskStatus.PROCESSING
        assert s.cancel(tid)
        res = await asyncio.wait_for(s.wait(tid), 30)
        assert res.status == TaskStatus.CANCELLED
        assert seen == ["cancelled"]
        tid2 = s.submit(Task(type="t", handler=times_out))
        res2 = await asyncio.wait_for(s.wait(tid2), 30)
        assert res2.status == TaskStatus.COMPLETED, res2.error
        assert s.get_stats()["active_tasks"] == 0


async def test_many_suspending_runs_hold_at_most_workers_runners() -> None:
    running: set[asyncio.Task[Any] | None] = set()
    peak = 0
    tasks: set[asyncio.Task[Any] | None] = set()

    async def h(_t: Any) -> None:
        nonlocal peak
        me = asyncio.current_task()
        assert me not in running, "two runs at once in one task"
        running.add(me)
        tasks.add(me)
        peak = max(peak, len(running))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert asyncio.current_task() is me
        running.discard(me)

    async with TaskScheduler(workers=3) as s:
        ids = [s.submit(Task(type="h", handler=h)) for _ in range(50)]
        for tid in ids:
            res = await asyncio.wait_for(s.wait(tid), 30)
            assert res.status == TaskStatus.COMPLETED, res.error
    assert peak == 3
    assert 1 <= len(tasks) <= 4  # runners are reused (one more at most: the pump's borrow)


async def test_a_finished_task_in_a_cycle_is_collected() -> None:
    """The native core keeps the tasks in its books out of the cycle collector's sight
    (a burst of submits made every collection walk them) and hands them back to it when
    they finish: a task whose handler refers back to it is still collected."""

    class Marker:
        pass

    async with TaskScheduler() as s:
        refs = []
        for delay in (0.0, 30.0):
            box: list[Any] = []

            def handler(_t: Any, box: list[Any] = box) -> None:
                box.append(None)

            task = Task(type="c", handler=handler, delay=delay)
            marker = Marker()
            box.extend([task, marker])
            refs.append(weakref.ref(marker))
            tid = s.submit(task)
            if delay:
                assert s.cancel(tid)
            res = await asyncio.wait_for(s.wait(tid), 30)
            assert res.status == (TaskStatus.CANCELLED if delay else TaskStatus.COMPLETED)
            assert gc.is_tracked(task)
            del task, marker, box, handler
        gc.collect()
        assert [r() for r in refs] == [None, None]
