"""Timer wheel and TaskScheduler micro benchmarks (ratios: `python benchmarks/report.py`).

Same contenders and workloads as `bench_scheduler.py`, which also prints lateness and
memory: (a) schedule + cancel, (b) schedule + fire over one second (CPU time), (c)
immediate no-op tasks. `MEETQ_BENCH_SCALE=0.05` shrinks every count for a smoke run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

import bench_local_api
from bench_scheduler import (
    N_TASKS,
    N_TIMERS,
    SPAN_MS,
    NativeWheel,
    PureTask,
    PureWheel,
    async_noop,
    cancel_call_later,
    cancel_heapq,
    cancel_wheel,
    deadlines,
    fire_call_later,
    fire_heapq,
    fire_wheel,
    queue_tasks,
    scheduler_tasks,
)
from benchutil import record_rate

DS_CANCEL = deadlines(N_TIMERS, 30_000)
DS_FIRE = deadlines(N_TIMERS, SPAN_MS)


def measure(benchmark: Any, fn: Callable[[], Any], count: int, unit: str) -> None:
    benchmark.pedantic(fn, rounds=3, iterations=1, warmup_rounds=0)
    record_rate(benchmark, unit, count)


CANCEL = {
    "native_wheel": lambda: cancel_wheel(NativeWheel, DS_CANCEL),
    "pure_wheel": lambda: cancel_wheel(PureWheel, DS_CANCEL),
    "uvloop_call_later": lambda: cancel_call_later(DS_CANCEL),
    "heapq": lambda: cancel_heapq(DS_CANCEL),
}
FIRE = {
    "native_wheel": lambda: fire_wheel(NativeWheel, DS_FIRE),
    "pure_wheel": lambda: fire_wheel(PureWheel, DS_FIRE),
    "uvloop_call_later": lambda: fire_call_later(DS_FIRE),
    "heapq": lambda: fire_heapq(DS_FIRE),
}


@pytest.mark.benchmark(group=f"timers: schedule + cancel {N_TIMERS:,}")
@pytest.mark.parametrize("contender", list(CANCEL))
def test_schedule_cancel(benchmark: Any, contender: str) -> None:
    measure(benchmark, CANCEL[contender], N_TIMERS, "ops")


@pytest.mark.benchmark(
    group=f"timers: schedule + fire {N_TIMERS:,} over 1 s (CPU time)", timer=time.process_time
)
@pytest.mark.parametrize("contender", list(FIRE))
def test_schedule_fire(benchmark: Any, contender: str) -> None:
    measure(benchmark, FIRE[contender], N_TIMERS, "ops")


TASKS = {
    "native_scheduler_sync": lambda: scheduler_tasks(N_TASKS),
    "native_scheduler_async": lambda: scheduler_tasks(N_TASKS, async_noop),
    "asyncio_priority_queue_8_workers": lambda: queue_tasks(N_TASKS),
}


@pytest.mark.benchmark(group=f"scheduler: {N_TASKS:,} immediate no-op tasks")
@pytest.mark.parametrize("contender", list(TASKS))
def test_immediate_tasks(benchmark: Any, contender: str) -> None:
    measure(benchmark, TASKS[contender], N_TASKS, "tasks")


# -- the public API: TaskScheduler.submit(Task(delay=d)) + cancel vs call_later + cancel --

API = {
    "native_scheduler_submit_cancel": lambda: bench_local_api.sched_submit_cancel(),
    "pure_scheduler_submit_cancel": lambda: bench_local_api.sched_submit_cancel(
        cls=bench_local_api.PureScheduler, task_cls=PureTask
    ),
    "uvloop_call_later_cancel": lambda: bench_local_api.call_later_cancel(),
}


@pytest.mark.benchmark(
    group=f"scheduler public API: delayed submit + cancel {bench_local_api.N_TIMERS:,}"
)
@pytest.mark.parametrize("contender", list(API))
def test_public_submit_cancel(benchmark: Any, contender: str) -> None:
    measure(benchmark, API[contender], bench_local_api.N_TIMERS, "ops")
