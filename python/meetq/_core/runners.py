"""A pool of long-lived runner tasks, each running one async handler at a time.

For a component whose handlers are started from a loop callback (the scheduler's pump),
where there is no task at all: a task made per run (`start_eager`) costs more than most
handlers. Instead an idle runner task is *borrowed* for the handler's first step (it is
made the current task, its context the current context, while the coroutine takes that
step), so `asyncio.current_task()`, `asyncio.timeout()` and context variables there are the
runner's; a handler that finishes in that step costs no task and no loop iteration. A
handler that suspends is handed to that runner, which resumes it in its own step and runs
nothing else until it ends. So the runner is the handler's task for the whole run, as a
bus worker is (`tests/_core/test_handler_task.py`); runs of one runner share its context.

    pool = RunnerPool(loop, finish, name="meetq-task")
    runner, value = pool.first_step(coro, key)  # raises what the first step raised
    # (None, result): finished; else it suspended and `runner` is running it: once it
    # ends, `finish(key, cancelled, error, result)` is called inside the runner's task.
    runner.cancel()                              # cancels that run (the runner lives on)
    await pool.close()

`runner.cancel()` cancels the run it holds: a run that has not resumed yet (its runner is
woken, or brand new) sees the CancelledError as it resumes; a resumed one through its
runner's task, whose cancel count is reset after each run, so the next run's
`asyncio.timeout()` counts right. (So a runner stands for its run where a component tracks
a task: `done()`, `cancel()`.)
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Coroutine
from typing import Any

from meetq._core.eager import Resume

try:  # the registry asyncio's C tasks use for current_task(); 3.11-3.13
    from asyncio.tasks import _current_tasks as _CURRENT  # type: ignore[attr-defined]

    _current = _CURRENT.get
except ImportError:  # pragma: no cover - newer Pythons keep it per thread
    _current = asyncio.current_task
from asyncio.tasks import _enter_task, _leave_task

Finish = Callable[[Any, bool, "BaseException | None", Any], None]


class Runner:
    """One long-lived task and the run it holds (`job`: key, coroutine, what it yielded)."""

    __slots__ = ("context", "job", "resumed", "task", "thrown", "wake")

    def __init__(self) -> None:
        self.context = contextvars.Context()
        self.job: tuple[Any, Coroutine[Any, Any, Any], Any] | None = None
        self.wake: asyncio.Future[None] | None = None
        self.task: asyncio.Task[None] = None  # type: ignore[assignment]
        self.resumed = False  # the held run is in the runner's own steps
        self.thrown = False  # the held run was cancelled before it resumed

    def done(self) -> bool:
        """False: a held run ends only through the pool's `finish`."""
        return False

    def cancel(self, msg: Any = None) -> bool:
        """Cancels the held run (see the module docs)."""
        if self.resumed:
            return self.task.cancel(msg)
        self.thrown = True
        return True


async def _thrown(coro: Coroutine[Any, Any, Any]) -> Any:
    """The rest of a run cancelled before its runner resumed it: the handler sees the
    CancelledError where it waits, as it would in a task of its own."""
    try:
        first = coro.throw(asyncio.CancelledError())
    except StopIteration as done:
        return done.value
    return await Resume(coro, first)


class RunnerPool:
    """Runner tasks, made as needed (at most as many as runs suspended at once)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, finish: Finish, name: str) -> None:
        self._loop = loop
        self._finish = finish
        self._name = name
        self._idle: list[Runner] = []
        self._all: list[Runner] = []
        self._closed = False

    def first_step(self, coro: Coroutine[Any, Any, Any], key: Any) -> tuple[Runner | None, Any]:
        """Takes `coro`'s first step inside an idle runner: (None, result) when it finished,
        (runner, None) when it suspended (the runner now runs it, then calls `finish` with
        `key`). Raises what the step raised (a CancelledError of its own included)."""
        idle = self._idle
        runner = idle.pop() if idle else self._new_runner()
        loop = self._loop
        caller = _current(loop)
        try:
            if caller is runner.task:  # called from this runner's own step (its finish)
                yielded = coro.send(None)
            else:
                if caller is not None:
                    _leave_task(loop, caller)
                _enter_task(loop, runner.task)
                try:
                    yielded = runner.context.run(coro.send, None)
                finally:
                    _leave_task(loop, runner.task)
                    if caller is not None:
                        _enter_task(loop, caller)
        except StopIteration as done:
            idle.append(runner)
            return None, done.value
        except BaseException:
            idle.append(runner)
            raise
        self.hand_over(runner, key, coro, yielded)
        return runner, None

    def hand_over(
        self, runner: Runner, key: Any, coro: Coroutine[Any, Any, Any], yielded: Any
    ) -> None:
        """`runner` (taken from `idle`) took `coro`'s first step, which suspended with
        `yielded`: it now runs the rest. (The native scheduler core takes first steps
        itself, with `idle`, `runner.task` and `runner.context`, then calls this.)"""
        runner.job = (key, coro, yielded)
        wake = runner.wake
        if wake is not None:
            runner.wake = None
            wake.set_result(None)

    @property
    def idle(self) -> list[Runner]:
        """The idle runners (the last one is borrowed next)."""
        return self._idle

    def _new_runner(self) -> Runner:
        runner = Runner()
        name = f"{self._name}-runner-{len(self._all)}"
        runner.task = self._loop.create_task(self._serve(runner), name=name, context=runner.context)
        self._all.append(runner)
        return runner

    async def _serve(self, runner: Runner) -> None:
        me = runner.task
        while True:
            if runner.job is None:
                if self._closed:
                    return
                runner.wake = wake = self._loop.create_future()
                try:
                    await wake
                except asyncio.CancelledError:
                    runner.wake = None
                    if runner.job is None:
                        return  # close(), or a stray cancel of an idle runner: it ends
                    runner.thrown = True  # close() with a run held: it is cancelled
            job = runner.job
            assert job is not None
            runner.job = None
            key, coro, first = job
            cancelled, error, result = False, None, None
            rest = _thrown(coro) if runner.thrown else Resume(coro, first)
            runner.resumed, runner.thrown = True, False
            try:
                result = await rest
            except asyncio.CancelledError:
                cancelled = True
            except Exception as exc:
                error = exc
            runner.resumed = False
            while me.cancelling():  # the cancels were the run's, not the runner's
                me.uncancel()
            self._idle.append(runner)
            self._finish(key, cancelled, error, result)

    async def close(self) -> None:
        """Ends every runner (call once no run is in progress)."""
        self._closed = True
        tasks = [r.task for r in self._all]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._all.clear()
        self._idle.clear()
