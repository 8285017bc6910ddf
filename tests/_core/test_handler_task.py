"""Every component that runs handlers runs an async handler in a task that runs nothing
else meanwhile, from its very first step: `asyncio.current_task()` there is that task (the
same one after it suspends; a new task per run, except in the bus, whose worker tasks run
one handler at a time), and an `asyncio.timeout()` entered there cancels the handler, never
a component's task (the queue worker, the gateway's protocol) and never fails for want of
a task (the scheduler's pump and Pub/Sub's reader run in loop callbacks)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from helpers import async_wait_until
from meetq import (
    LocalEventBus,
    Message,
    PubSubMessage,
    RedisMessageQueue,
    RedisPubSubQueue,
    ServiceRoute,
    ServiceWorker,
    TaskDispatcher,
    TaskRequest,
    TaskScheduler,
    TaskStatus,
)
from meetq import Task as SchedTask
from meetq._core.eager import start_eager
from meetq._core.runner import HandlerRunner, HandlerSpec, Outcome

RUNS = 3


class Probe:
    """Two async handlers and what they saw. `waits` enters a timeout in its first step,
    suspends under it, then lets a short inner timeout expire and catches it (bound to the
    wrong task, that expiry cancelled the component); `quick` enters a timeout and never
    suspends."""

    def __init__(self) -> None:
        self.waited: list[tuple[asyncio.Task[Any] | None, asyncio.Task[Any] | None]] = []
        self.quick_tasks: list[asyncio.Task[Any] | None] = []
        self.outer = asyncio.current_task()

    async def waits(self, _arg: Any) -> str:
        first = asyncio.current_task()
        async with asyncio.timeout(30):
            await asyncio.sleep(0)
        try:
            async with asyncio.timeout(0.01):
                await asyncio.Event().wait()
        except TimeoutError:
            pass
        self.waited.append((first, asyncio.current_task()))
        return "waited"

    async def quick(self, _arg: Any) -> str:
        task = asyncio.current_task()
        async with asyncio.timeout(30):  # noqa: ASYNC100 (entering it is the point)
            pass
        self.quick_tasks.append(task)
        return "quick"

    def done(self) -> bool:
        return len(self.waited) == RUNS and len(self.quick_tasks) == RUNS

    def check(self, task_per_run: bool = True) -> None:
        firsts = [first for first, _ in self.waited]
        assert all(first is not None for first in firsts + self.quick_tasks)
        assert all(first is after for first, after in self.waited), "task changed mid-run"
        runs = firsts + self.quick_tasks
        if task_per_run:
            assert len({id(t) for t in runs}) == len(runs), "two runs shared a task"
        assert self.outer not in runs


def handlers(probe: Probe) -> list[Callable[[Any], Coroutine[Any, Any, str]]]:
    return [probe.waits, probe.quick]


async def test_start_eager_runs_the_first_step_inside_a_new_task() -> None:
    me = asyncio.current_task()
    seen: list[Any] = []

    async def quick() -> int:
        seen.append(asyncio.current_task())
        return 7

    task, value = start_eager(quick())
    assert task is None and value == 7
    assert seen[0] is not None and seen[0] is not me
    assert asyncio.current_task() is me  # the caller is the current task again

    async def waits() -> Any:
        first = asyncio.current_task()
        await asyncio.sleep(0)
        return first, asyncio.current_task()

    task, value = start_eager(waits())
    assert task is not None and value is None
    first, after = await task
    assert first is task and after is task

    async def fails() -> None:
        raise KeyError("x")

    try:
        start_eager(fails())
    except KeyError:
        pass
    else:
        raise AssertionError("the first step's error must reach the caller")


def test_start_eager_in_a_loop_callback_has_a_task() -> None:
    """Outside any task (a loop callback) the first step still runs in one."""
    loop = asyncio.new_event_loop()
    seen: list[Any] = []

    async def handler() -> None:
        async with asyncio.timeout(5):  # noqa: ASYNC100 (entering it is the point)
            seen.append(asyncio.current_task())

    try:
        loop.call_soon(lambda: seen.append(start_eager(handler(), loop)))
        loop.call_soon(loop.stop)
        loop.run_forever()
    finally:
        loop.close()
    assert seen[0] is not None and seen[1] == (None, None)


async def test_runner() -> None:
    probe = Probe()
    runner = HandlerRunner()
    try:
        for _ in range(RUNS):
            for fn in handlers(probe):
                step = runner.start(HandlerSpec.of(fn), None, 30)
                outcome = step if isinstance(step, Outcome) else await step
                assert outcome.ok, outcome.error
    finally:
        runner.close()
    probe.check()


async def test_bus() -> None:
    probe = Probe()
    bus = LocalEventBus(workers=2)
    for fn in handlers(probe):
        bus.on("e", fn)
    async with bus:
        for i in range(RUNS):
            assert bus.emit("e", {"i": i})
        await async_wait_until(probe.done, timeout=30)
        bus.emit("after", {})
        await async_wait_until(lambda: bus.get_stats()["processed_events"] == RUNS + 1)
    assert bus.get_stats()["failed_events"] == 0
    probe.check()


@pytest.mark.parametrize("fn_name", ["waits", "quick"])
async def test_bus_one_async_handler_runs_in_a_worker_task(fn_name: str) -> None:
    # one handler per event: the worker that popped the event awaits it in its own task
    probe = Probe()
    bus = LocalEventBus(workers=2)
    bus.on("e", getattr(probe, fn_name))
    async with bus:
        for i in range(RUNS):
            assert bus.emit("e", {"i": i})
        await async_wait_until(
            lambda: len(probe.waited) + len(probe.quick_tasks) == RUNS, timeout=30
        )
        await async_wait_until(lambda: bus.get_stats()["processed_events"] == RUNS)
    assert bus.get_stats()["failed_events"] == 0
    probe.check(task_per_run=False)


async def test_scheduler() -> None:
    probe = Probe()
    async with TaskScheduler(workers=2) as s:
        ids = [
            s.submit(SchedTask(type="t", handler=fn)) for _ in range(RUNS) for fn in handlers(probe)
        ]
        for tid in ids:
            res = await asyncio.wait_for(s.wait(tid), 30)
            assert res.status == TaskStatus.COMPLETED, res.error
    # runs share the scheduler's runner tasks, each running one handler at a time
    probe.check(task_per_run=False)


async def test_queue(redis_url: str) -> None:
    probe = Probe()
    q = RedisMessageQueue(redis_url, "handler-task")
    q.register_handler("waits", probe.waits)
    q.register_handler("quick", probe.quick)
    async with q:
        for _ in range(RUNS):
            await q.publish(Message(type="waits"))
            await q.publish(Message(type="quick"))
        await async_wait_until(probe.done, timeout=30)

        async def settled() -> bool:
            stats = await q.get_stats()
            return bool(stats["total_processed"] == 2 * RUNS)

        await async_wait_until(settled, timeout=30)
        assert (await q.get_stats())["total_failed"] == 0
    probe.check()


async def test_pubsub(redis_url: str) -> None:
    probe = Probe()
    ps = RedisPubSubQueue(redis_url)
    for fn in handlers(probe):
        ps.subscribe("ch", fn)
    async with ps:
        for i in range(RUNS):
            await ps.publish("ch", PubSubMessage(type="t", payload={"i": i}))
        await async_wait_until(probe.done, timeout=30)
        await async_wait_until(lambda: ps.get_stats()["total_processed"] == RUNS, timeout=30)
        assert ps.get_stats()["total_failed"] == 0
    probe.check()


async def test_service_worker(redis_url: str) -> None:
    probe = Probe()
    route = ServiceRoute("probe-service", "handler-task-tasks", ["waits", "quick"])
    worker = ServiceWorker(redis_url, "probe-service", queue_name="handler-task-tasks")
    worker.register_handler("waits", probe.waits)
    worker.register_handler("quick", probe.quick)
    async with worker, TaskDispatcher(redis_url, routes=[route]) as d:
        for _ in range(RUNS):
            for kind in ("waits", "quick"):
                resp = await asyncio.wait_for(d.dispatch_and_wait(TaskRequest(type=kind)), 30)
                assert str(resp.status) == "completed", resp
    probe.check()
