"""Timer wheel and TaskScheduler against the usual baselines, in one run, as ratios.

    python benchmarks/bench_scheduler.py            # prints the BENCHMARKS-scheduler table
    MEETQ_BENCH_SCALE=0.05 python benchmarks/bench_scheduler.py   # smoke run

(a) schedule + cancel of N timers, (b) schedule + fire of N timers spread over 1 s (CPU
time: `call_later` must really wait for its second, the others run a virtual clock 1 ms at a
time and call every fired callback), (c) immediate no-op tasks per second, (d) firing
lateness with many timers pending, (e) memory per pending timer. Contenders: the native
wheel, its pure twin, uvloop `call_later` (+ `TimerHandle.cancel`) and a `heapq` scheduler
with lazy cancellation (how asyncio's own loop does it). The functions are shared with
`test_bench_wheel.py` (pytest-benchmark).
"""

from __future__ import annotations

import asyncio
import gc
import heapq
import importlib
import logging
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import uvloop

from benchutil import scale
from meetq import Task, TaskScheduler
from meetq._pure import sched as _pure_sched
from meetq._pure import wheel as _wheel

NativeWheel: Any = importlib.import_module("meetq._meetq_rs").TimerWheel
PureWheel: Any = _wheel.TimerWheel
PureTask: Any = _pure_sched.Task


class PureScheduler(TaskScheduler):
    """The scheduler on its pure-Python core and wheel (takes the pure twin's Task)."""

    _Core = _pure_sched.SchedulerCore


CHUNK = 1000  # (c): tasks submitted per batch (the default buffer_size)
N_TIMERS = scale("timers", 1_000_000)
N_TASKS = max(CHUNK, scale("tasks", 200_000) // 1000 * 1000)
SPAN_MS = 1000  # (b): timers spread over one second

logging.getLogger("meetq.local.scheduler").setLevel(logging.ERROR)  # stop() reports drops


def noop() -> None:
    pass


def deadlines(n: int, span_ms: int, seed: int = 7) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(1, span_ms + 1) for _ in range(n)]


# -- (a) schedule + cancel ----------------------------------------------------------------


def cancel_wheel(cls: Any, ds: list[int]) -> None:
    w = cls(0)
    insert, cancel = w.insert, w.cancel
    handles = [insert(d, noop) for d in ds]
    for h in handles:
        cancel(h)
    assert len(w) == 0


def cancel_call_later(ds: list[int]) -> None:
    loop = uvloop.new_event_loop()
    try:
        call_later = loop.call_later
        handles = [call_later(d / 1000.0, noop) for d in ds]
        for h in handles:
            h.cancel()
    finally:
        loop.close()


def cancel_heapq(ds: list[int]) -> None:
    heap: list[list[Any]] = []
    push = heapq.heappush
    entries = []
    for seq, d in enumerate(ds):
        entry = [d, seq, noop]
        push(heap, entry)
        entries.append(entry)
    for entry in entries:
        entry[2] = None  # lazy cancel: skipped when popped


# -- (b) schedule + fire over one second --------------------------------------------------


def fire_wheel(cls: Any, ds: list[int]) -> None:
    w = cls(0)
    insert, advance = w.insert, w.advance
    for d in ds:
        insert(d, noop)
    fired = 0
    for now in range(SPAN_MS + 1):
        due = advance(now)
        for cb in due:
            cb()
        fired += len(due)
    assert fired == len(ds)


def fire_call_later(ds: list[int]) -> None:
    loop = uvloop.new_event_loop()
    try:
        done = loop.create_future()
        call_later = loop.call_later
        for d in ds:
            call_later(d / 1000.0, noop)
        call_later((SPAN_MS + 2) / 1000.0, done.set_result, None)
        loop.run_until_complete(done)
    finally:
        loop.close()


def fire_heapq(ds: list[int]) -> None:
    heap: list[list[Any]] = []
    push, pop = heapq.heappush, heapq.heappop
    for seq, d in enumerate(ds):
        push(heap, [d, seq, noop])
    fired = 0
    for now in range(SPAN_MS + 1):
        while heap and heap[0][0] <= now:
            cb = pop(heap)[2]
            if cb is not None:
                cb()
                fired += 1
    assert fired == len(ds)


# -- (c) scheduler throughput -------------------------------------------------------------


def run_loop(main: Callable[[], Any]) -> Any:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main())


def sync_noop(task: Any) -> None:
    pass


async def async_noop(task: Any) -> None:
    pass


def scheduler_tasks(n: int, handler: Callable[[Any], Any] = sync_noop) -> float:
    """Submits n immediate no-op tasks, a default-sized buffer (1,000) at a time, each
    batch as soon as the previous one finished; returns seconds."""

    async def main() -> float:
        s = TaskScheduler(buffer_size=CHUNK, workers=8)
        await s.start()
        t0 = time.perf_counter()
        for _ in range(n // CHUNK):
            last = ""
            for _ in range(CHUNK):
                last = s.submit(Task(type="noop", handler=handler))
            await s.wait(last)
        elapsed = time.perf_counter() - t0
        assert s.get_stats()["completed_tasks"] == n // CHUNK * CHUNK
        await s.stop()
        return elapsed

    return float(run_loop(main))


def queue_tasks(n: int) -> float:
    """Baseline: the hand-written asyncio.PriorityQueue + 8 workers equivalent (no ids,
    statuses or results), fed the same way."""

    async def main() -> float:
        q: asyncio.PriorityQueue[tuple[int, int, Task]] = asyncio.PriorityQueue(CHUNK)
        loop = asyncio.get_running_loop()
        batch_done = loop.create_future()
        finished = 0

        async def worker() -> None:
            nonlocal finished
            while True:
                _, _, task = await q.get()
                assert task.handler is not None
                task.handler(task)
                finished += 1
                if finished % CHUNK == 0:
                    batch_done.set_result(None)

        workers = [asyncio.ensure_future(worker()) for _ in range(8)]
        t0 = time.perf_counter()
        seq = 0
        for _ in range(n // CHUNK):
            batch_done = loop.create_future()
            for _ in range(CHUNK):
                task = Task(type="noop", handler=sync_noop)
                q.put_nowait((-int(task.priority), seq, task))
                seq += 1
            await batch_done
        elapsed = time.perf_counter() - t0
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        return elapsed

    return float(run_loop(main))


# -- (d) lateness -------------------------------------------------------------------------


def percentiles(lateness: list[float]) -> tuple[float, float, float]:
    """(min, p50, p99) in ms; a negative min means some timers fired early."""
    q = statistics.quantiles(lateness, n=100, method="inclusive")
    return min(lateness) * 1000.0, q[49] * 1000.0, q[98] * 1000.0


def scheduler_lateness(
    pending: int, probes: int = 1000, wheel: Any = None
) -> tuple[float, float, float]:
    """Lateness of 1,000 delayed probe tasks (due 5..500 ms out) while `pending` other
    timers (due in 1..60 minutes) wait in the same wheel (`wheel` given: the pure core
    and its pure wheel)."""

    cls, task_cls = (TaskScheduler, Task) if wheel is None else (PureScheduler, PureTask)

    async def main() -> list[float]:
        s = cls(buffer_size=probes, workers=8)
        await s.start()
        rng = random.Random(3)
        for _ in range(pending):
            s.submit(task_cls(type="far", handler=sync_noop, delay=rng.uniform(60, 3600)))
        late: list[float] = []
        ids = []

        def probe(task: Task) -> None:
            late.append(time.monotonic() - task.payload["due"])

        for _ in range(probes):
            delay = rng.uniform(0.005, 0.5)
            task = task_cls(type="probe", handler=probe, delay=delay, payload={})
            task.payload["due"] = time.monotonic() + delay
            ids.append(s.submit(task))
        for tid in ids:
            await s.wait(tid)
        await s.stop()
        return late

    return percentiles(run_loop(main))


def call_later_lateness(pending: int, probes: int = 1000) -> tuple[float, float, float]:
    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        rng = random.Random(3)
        handles = [loop.call_later(rng.uniform(60, 3600), noop) for _ in range(pending)]
        late: list[float] = []
        done = loop.create_future()

        def probe(due: float) -> None:
            late.append(time.monotonic() - due)
            if len(late) == probes and not done.done():
                done.set_result(None)

        for _ in range(probes):
            delay = rng.uniform(0.005, 0.5)
            loop.call_later(delay, probe, time.monotonic() + delay)
        await done
        for h in handles:
            h.cancel()
        return late

    return percentiles(run_loop(main))


# -- (e) memory ---------------------------------------------------------------------------

_MEMORY_SNIPPET = """
import asyncio, gc, sys, uvloop
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
def noop(): pass
kind, n = sys.argv[1], int(sys.argv[2])
if kind == "native":
    from meetq._meetq_rs import TimerWheel
    w = TimerWheel(0); keep = None
elif kind == "pure":
    from meetq._pure.wheel import TimerWheel
    w = TimerWheel(0); keep = None
else:
    loop = uvloop.new_event_loop() if kind == "uvloop" else asyncio.new_event_loop()
gc.collect(); before = rss()
if kind in ("native", "pure"):
    handles = [w.insert(i % 3_600_000 + 1, noop) for i in range(n)]
else:
    handles = [loop.call_later(i % 3600 + 1, noop) for i in range(n)]
gc.collect(); after = rss()
print((after - before) / n)
"""


def memory_per_timer(kind: str, n: int) -> float:
    """RSS growth per pending timer, in a fresh interpreter (handles kept, as a caller would)."""
    out = subprocess.run(
        [sys.executable, "-c", _MEMORY_SNIPPET, kind, str(n)],
        check=True,
        capture_output=True,
        text=True,
    )
    return float(out.stdout.strip())


# -- the table ----------------------------------------------------------------------------


def best_of(fn: Callable[[], Any], rounds: int, clock: Callable[[], float]) -> float:
    times = []
    for _ in range(rounds):
        gc.collect()
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return min(times)


def main() -> None:
    ds_cancel = deadlines(N_TIMERS, 30_000)
    ds_fire = deadlines(N_TIMERS, SPAN_MS)
    rounds = 2
    print(f"timers: {N_TIMERS:,}, tasks: {N_TASKS:,}, best of {rounds}\n")

    rows: list[tuple[str, str, str]] = []
    for label, clock, contenders in [
        (
            "(a) schedule + cancel",
            time.perf_counter,
            {
                "native wheel": lambda: cancel_wheel(NativeWheel, ds_cancel),
                "pure wheel": lambda: cancel_wheel(PureWheel, ds_cancel),
                "uvloop call_later": lambda: cancel_call_later(ds_cancel),
                "heapq": lambda: cancel_heapq(ds_cancel),
            },
        ),
        (
            "(b) schedule + fire over 1 s (CPU)",
            time.process_time,
            {
                "native wheel": lambda: fire_wheel(NativeWheel, ds_fire),
                "pure wheel": lambda: fire_wheel(PureWheel, ds_fire),
                "uvloop call_later": lambda: fire_call_later(ds_fire),
                "heapq": lambda: fire_heapq(ds_fire),
            },
        ),
    ]:
        times = {name: best_of(fn, rounds, clock) for name, fn in contenders.items()}
        native = times["native wheel"]
        for name, t in times.items():
            rows.append(
                (label, name, f"{N_TIMERS / t:,.0f} timers/s; native is {t / native:.1f}x faster")
            )

    sched = min(scheduler_tasks(N_TASKS) for _ in range(rounds))
    sched_async = min(scheduler_tasks(N_TASKS, async_noop) for _ in range(rounds))
    queue = min(queue_tasks(N_TASKS) for _ in range(rounds))
    rows.append(
        (
            "(c) immediate no-op tasks",
            "TaskScheduler, sync handler",
            f"{N_TASKS / sched:,.0f} tasks/s; {queue / sched:.2f}x the asyncio.Queue pool",
        )
    )
    rows.append(
        (
            "(c) immediate no-op tasks",
            "TaskScheduler, async handler",
            f"{N_TASKS / sched_async:,.0f} tasks/s; {queue / sched_async:.2f}x the pool",
        )
    )
    rows.append(
        (
            "(c) immediate no-op tasks",
            "asyncio.PriorityQueue + 8 workers",
            f"{N_TASKS / queue:,.0f} tasks/s",
        )
    )

    for pending in (scale("pending", 10_000), scale("pending", 100_000)):
        label = f"(d) lateness, {pending:,} pending"
        for name, fn in [
            ("TaskScheduler (native wheel)", lambda p=pending: scheduler_lateness(p)),
            (
                "TaskScheduler (pure wheel)",
                lambda p=pending: scheduler_lateness(p, wheel=PureWheel),
            ),
            ("uvloop call_later", lambda p=pending: call_later_lateness(p)),
        ]:
            lo, p50, p99 = min((fn() for _ in range(rounds)), key=lambda r: r[2])  # best p99
            rows.append((label, name, f"p50 {p50:.2f} ms, p99 {p99:.2f} ms (min {lo:+.2f} ms)"))

    n_mem = scale("memory", 1_000_000)
    mem = {k: memory_per_timer(k, n_mem) for k in ("native", "pure", "uvloop", "asyncio")}
    for kind, per in mem.items():
        rows.append(
            (
                "(e) memory per pending timer",
                kind,
                f"{per:.0f} B; {per / mem['asyncio']:.2f}x an asyncio TimerHandle, "
                f"{per / mem['uvloop']:.2f}x a uvloop one",
            )
        )

    print("| benchmark | contender | result |")
    print("|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
