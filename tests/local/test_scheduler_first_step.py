"""An async handler's first step, which the native core takes itself inside an idle runner
(the pure core through the shell): what it raises, returns or sets there is the run's, in
the runner's task and context, whichever path takes it; both backends agree."""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

from meetq import Task, TaskScheduler, TaskStatus

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("first_step_var", default="unset")


async def test_what_a_first_step_raises_fails_the_run() -> None:
    async def boom(_t: Any) -> None:
        raise ValueError("no")

    async def own_cancel(_t: Any) -> None:
        raise asyncio.CancelledError

    async def unprintable(_t: Any) -> None:
        class Odd(Exception):
            def __str__(self) -> str:
                raise RuntimeError

        raise Odd

    async with TaskScheduler(workers=2) as s:
        for _ in range(2):  # a new runner, then an idle one
            ids = [s.submit(Task(type="f", handler=h)) for h in (boom, own_cancel, unprintable)]
            results = [await s.wait(i) for i in ids]
            assert [r.status for r in results] == [TaskStatus.FAILED] * 3
            assert [r.error for r in results] == [
                "ValueError: no",
                "handler was cancelled",
                "<Odd: unprintable>",
            ]
        stats = s.get_stats()
        assert stats["failed_tasks"] == 6 and stats["active_tasks"] == 0


async def test_first_step_runs_in_the_runner_task_and_context() -> None:
    seen: list[tuple[Any, Any, str, str]] = []

    async def sets_then_suspends(_t: Any) -> str:
        first = asyncio.current_task()
        VAR.set("mine")
        await asyncio.sleep(0)
        seen.append((first, asyncio.current_task(), VAR.get(), "suspended"))
        return "late"

    async def quick(_t: Any) -> str:
        seen.append((asyncio.current_task(), None, VAR.get(), "quick"))
        return "early"

    VAR.set("submitter")
    me = asyncio.current_task()
    async with TaskScheduler(workers=1) as s:
        warm = s.submit(Task(type="q", handler=quick))  # makes the one runner
        assert (await s.wait(warm)).status is TaskStatus.COMPLETED
        a = s.submit(Task(type="s", handler=sets_then_suspends))
        b = s.submit(Task(type="q", handler=quick))
        results = [await s.wait(a), await s.wait(b)]
    assert [r.status for r in results] == [TaskStatus.COMPLETED] * 2
    assert VAR.get() == "submitter"  # the handler's set stayed in the runner's context
    (warm_task, _, warm_var, _), (first, after, var, _), (quick_task, _, _, _) = seen
    assert first is not None and first is after and first is not me
    assert warm_task is first  # the same long-lived runner serves every run
    assert var == "mine" and warm_var == "unset"
    assert quick_task is first


async def test_a_run_cancelled_in_its_own_first_step_ends_cancelled() -> None:
    s = TaskScheduler()
    ids: list[str] = []

    async def cancels_itself(_t: Any) -> str:
        assert s.cancel(ids[0])
        return "ignored"

    async with s:
        ids.append(s.submit(Task(type="c", handler=cancels_itself)))
        result = await s.wait(ids[0])
        assert result.status is TaskStatus.CANCELLED
        assert s.get_stats()["cancelled_tasks"] == 1
        assert s.get_stats()["active_tasks"] == 0
