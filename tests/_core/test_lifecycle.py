"""`Component` and `Supervisor`: idempotent start/stop, supervised tasks that are logged
and restarted when they die, and a stop that never leaks a task."""

from __future__ import annotations

import asyncio
import logging

import pytest

from helpers import async_wait_until
from meetq._core.lifecycle import FAILED, NEW, RUNNING, STOPPED, Component, Supervisor


class Worker(Component):
    _component_name = "worker"

    def __init__(self, deaths: int = 0, max_restarts: int | None = None) -> None:
        super().__init__(max_restarts=max_restarts)
        self.deaths = deaths
        self.runs = 0
        self.starts = 0
        self.stops = 0
        self.serving = asyncio.Event()

    async def _on_start(self) -> None:
        self.starts += 1
        self.supervise("loop", self._loop)

    async def _on_stop(self) -> None:
        self.stops += 1

    async def _loop(self) -> None:
        self.runs += 1
        if self.runs <= self.deaths:
            raise RuntimeError(f"death {self.runs}")
        self.serving.set()
        await asyncio.Event().wait()


async def test_start_stop_are_idempotent_and_async_with_works() -> None:
    w = Worker()
    assert w.state == NEW and not w.healthy
    async with w:
        await w.start()
        await asyncio.wait_for(w.serving.wait(), 10)
        assert w.state == RUNNING and w.healthy
    await w.stop()
    assert w.state == STOPPED and (w.starts, w.stops) == (1, 1)
    assert not w.healthy


async def test_a_dying_task_is_logged_and_restarted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, "meetq.lifecycle")
    w = Worker(deaths=2)
    async with w:
        await asyncio.wait_for(w.serving.wait(), 30)
        assert w.healthy
        assert w.runs == 3
        assert w.last_error == "loop: RuntimeError: death 2"
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2
    assert all(r.exc_info is not None for r in errors)  # with the traceback
    assert "worker: loop died; restarting" in errors[0].getMessage()


async def test_giving_up_marks_the_component_failed() -> None:
    w = Worker(deaths=100, max_restarts=1)
    await w.start()
    try:
        await async_wait_until(lambda: w.state == FAILED, timeout=30)
        assert not w.healthy
        assert w.runs == 2
    finally:
        await w.stop()
    assert w.state == STOPPED


async def test_stop_cancels_and_awaits_every_task_even_when_on_stop_raises() -> None:
    class Broken(Worker):
        async def _on_stop(self) -> None:
            raise RuntimeError("flush failed")

    w = Broken()
    await w.start()
    await asyncio.wait_for(w.serving.wait(), 10)
    task = w.supervisor.task("loop")
    assert task is not None
    with pytest.raises(RuntimeError, match="flush failed"):
        await w.stop()
    assert task.done() and task.cancelled()
    assert w.state == STOPPED


async def test_a_failing_start_takes_down_what_it_started() -> None:
    class HalfStarted(Worker):
        async def _on_start(self) -> None:
            self.supervise("loop", self._loop)
            raise OSError("no server")

    w = HalfStarted()
    with pytest.raises(OSError):
        await w.start()
    assert w.state == STOPPED and w.stops == 1
    assert w.supervisor.running == []


async def test_supervisor_grace_lets_tasks_return() -> None:
    sup = Supervisor("s")
    done = asyncio.Event()
    finished: list[str] = []

    async def ends_when_told() -> None:
        await done.wait()
        finished.append("clean")

    sup.supervise("t", ends_when_told)
    asyncio.get_running_loop().call_soon(done.set)
    await sup.stop(grace=10.0)
    assert finished == ["clean"]
    assert sup.running == []


async def test_a_task_that_returns_is_not_restarted() -> None:
    sup = Supervisor("s")
    runs: list[int] = []

    async def once() -> None:
        runs.append(1)

    task = sup.supervise("t", once)
    await asyncio.wait_for(task, 10)
    assert runs == [1] and sup.healthy
    await sup.stop()
