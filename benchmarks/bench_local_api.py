"""The in-process layer measured through its public API only, against the stock tools, in
one run: every round runs every contender once, in a shuffled order, and each ratio is the
median over the rounds of (baseline time / contender time) within one round, so a load
spike on the shared machine hits both sides of a ratio alike.

    python benchmarks/bench_local_api.py                  # ~1 min, prints the table
    python benchmarks/bench_local_api.py --rounds 15 --json out.json
    MEETQ_BENCH_SCALE=0.02 python benchmarks/bench_local_api.py --rounds 2   # smoke

Workloads (N from MEETQ_BENCH_SCALE):
- sched: `TaskScheduler.submit(Task(type=, handler=, delay=d))` then `cancel(id)` of
  every one, in batches of 1,000 delayed tasks (d spread over 1-30 s) against
  `loop.call_later(d, f)` then `handle.cancel()` of the same delays, both on uvloop;
- bus: `LocalEventBus.emit(type, payload, source)` once per event from the loop, a fresh
  payload dict each, in bursts of the default `buffer_size` (1,000), each burst awaited
  until the handler has seen all of it, against pyee's `emit(type, payload)` of the same
  dicts (pyee runs the handler inside `emit`);
- bus-loop: the events/s of `emit` in a loop (chunks of 4,096, one shared payload) with a
  sync no-op handler, until the handler has seen them all; beside it its floor, the same
  loop appending to a deque and draining it into the handler (`emit_loop_floor`).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import uvloop

from benchutil import scale
from meetq import LocalEventBus, Task, TaskScheduler, backend
from meetq._pure import ring as _pure_ring
from meetq._pure import sched as _pure_sched

N_TIMERS = max(1000, scale("api_timers", 200_000) // 1000 * 1000)
N_EVENTS = max(1000, scale("api_events", 200_000) // 1000 * 1000)
BURST = 1000  # LocalEventBus's default buffer_size
CHUNK = 4096


Times = tuple[float, float]  # (wall seconds, CPU seconds of this process)


class Clock:
    """Wall and CPU time together: on the shared, overloaded box the CPU time is what the
    code cost; the wall time also counts the waits for a core."""

    def __init__(self) -> None:
        self.wall = time.perf_counter()
        self.cpu = time.process_time()

    def read(self) -> Times:
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


def run(main: Callable[[], Any]) -> Times:
    """Runs `main()` on a fresh uvloop loop; returns the (wall, cpu) times it reports."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        wall, cpu = runner.run(main())
        return float(wall), float(cpu)


def delays(n: int, seed: int = 11) -> list[float]:
    rng = random.Random(seed)
    return [rng.uniform(1.0, 30.0) for _ in range(n)]


DELAYS = delays(BURST)


def sync_noop(task: Any) -> None:
    pass


# -- scheduler: delayed submit + cancel vs call_later + cancel -----------------------------


class PureScheduler(TaskScheduler):
    """The same scheduler on the pure-Python core (takes the pure twin's Task)."""

    _Core = _pure_sched.SchedulerCore


class PureBus(LocalEventBus):
    _Ring = _pure_ring.RingBuffer


def sched_submit_cancel(
    n: int = N_TIMERS, cls: type[TaskScheduler] = TaskScheduler, task_cls: Any = Task
) -> Times:
    async def main() -> Times:
        s = cls()
        await s.start()
        submit, cancel = s.submit, s.cancel
        t0 = Clock()
        for _ in range(n // BURST):
            ids = [submit(task_cls(type="t", handler=sync_noop, delay=d)) for d in DELAYS]
            for tid in ids:
                cancel(tid)
        elapsed = t0.read()
        st = s.get_stats()
        assert st["cancelled_tasks"] == n and st["delayed_tasks"] == 0, st
        await s.stop()
        return elapsed

    return run(main)


def call_later_cancel(n: int = N_TIMERS) -> Times:
    def noop() -> None:
        pass

    async def main() -> Times:
        loop = asyncio.get_running_loop()
        call_later = loop.call_later
        t0 = Clock()
        for _ in range(n // BURST):
            handles = [call_later(d, noop) for d in DELAYS]
            for h in handles:
                h.cancel()
        return t0.read()

    return run(main)


# -- bus: single emits (fresh payloads) vs pyee -------------------------------------------


def bus_single_emits(n: int = N_EVENTS, cls: type[LocalEventBus] = LocalEventBus) -> Times:
    async def main() -> Times:
        bus = cls()  # default buffer_size
        seen = 0
        burst_done: asyncio.Future[None] | None = None
        target = 0

        def handler(ev: Any) -> None:
            nonlocal seen
            seen += 1
            if seen == target and burst_done is not None:
                burst_done.set_result(None)

        bus.on("e", handler)
        await bus.start()
        emit = bus.emit
        loop = asyncio.get_running_loop()
        t0 = Clock()
        for b in range(n // BURST):
            target = (b + 1) * BURST
            burst_done = loop.create_future()
            for i in range(BURST):
                emit("e", {"i": i}, "bench")
            if seen < target:
                await burst_done
        elapsed = t0.read()
        await bus.stop()
        assert seen == n and bus.get_stats()["dropped_events"] == 0
        return elapsed

    return run(main)


def pyee_single_emits(n: int = N_EVENTS) -> Times:
    from pyee import EventEmitter

    async def main() -> Times:
        ee = EventEmitter()
        seen = 0

        def handler(payload: Any) -> None:
            nonlocal seen
            seen += 1

        ee.on("e", handler)
        emit = ee.emit
        t0 = Clock()
        for _ in range(n // BURST):
            for i in range(BURST):
                emit("e", {"i": i})
        elapsed = t0.read()
        assert seen == n
        return elapsed

    return run(main)


# -- bus: emit in a loop, sync no-op handler ----------------------------------------------


def bus_emit_loop(n: int = N_EVENTS, cls: type[LocalEventBus] = LocalEventBus) -> Times:
    async def main() -> Times:
        bus = cls(buffer_size=2 * CHUNK, workers=1, batch_size=1024)
        bus.on("e", sync_noop)
        await bus.start()
        emit = bus.emit
        stats = bus.get_stats
        payload = {"k": 1}
        t0 = Clock()
        left = n
        while left:
            k = min(CHUNK, left)
            left -= k
            for _ in range(k):
                emit("e", payload, "bench")
            while stats()["pending_events"]:
                await asyncio.sleep(0)
        elapsed = t0.read()
        await bus.stop()
        assert stats()["processed_events"] == n
        return elapsed

    return run(main)


def emit_loop_floor(n: int = N_EVENTS) -> Times:
    """The emit loop's floor: the same Python loop shape with no bus (append a 3-tuple to a
    deque per event, drain it per chunk). Its rate moves with the machine alone (the host,
    the neighbours), so the emit loop's rate over it says what the bus itself costs."""

    async def main() -> Times:
        q: collections.deque[tuple[str, Any, str]] = collections.deque()
        push, pop = q.append, q.popleft
        payload = {"k": 1}
        t0 = Clock()
        left = n
        while left:
            k = min(CHUNK, left)
            left -= k
            for _ in range(k):
                push(("e", payload, "bench"))
            while q:
                sync_noop(pop())
            await asyncio.sleep(0)
        return t0.read()

    return run(main)


CONTENDERS: dict[str, Callable[[], Times]] = {
    "sched_submit_cancel": sched_submit_cancel,
    "call_later_cancel": call_later_cancel,
    "bus_single_emits": bus_single_emits,
    "pyee_single_emits": pyee_single_emits,
    "bus_emit_loop": bus_emit_loop,
    "emit_loop_floor": emit_loop_floor,
}
# (contender, baseline, target ratio, what the ratio means)
RATIOS = [
    ("sched_submit_cancel", "call_later_cancel", 2.0, "delayed submit + cancel vs call_later"),
    ("bus_single_emits", "pyee_single_emits", 2.5, "single emits -> handler vs pyee emit"),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--json", help="also write the raw times here")
    args = ap.parse_args()
    print(
        f"backend {backend()}, python {sys.version.split()[0]}, uvloop {uvloop.__version__}, "
        f"load average {os.getloadavg()[0]:.1f}; timers {N_TIMERS:,}, events {N_EVENTS:,}, "
        f"{args.rounds} interleaved rounds"
    )
    rng = random.Random(5)
    times: dict[str, list[Times]] = {name: [] for name in CONTENDERS}
    for _ in range(args.rounds):
        order = list(CONTENDERS)
        rng.shuffle(order)
        for name in order:
            gc.collect()
            times[name].append(CONTENDERS[name]())
    results: dict[str, Any] = {"times": times, "ratios": {}, "load": os.getloadavg()}
    for clock, k in (("CPU time", 1), ("wall time", 0)):
        print(f"\n{clock}:\n")
        print("| ratio | median (min-max over rounds) | target | met |")
        print("|---|---|---|---|")
        for contender, base, target, label in RATIOS:
            ratios = [b[k] / c[k] for b, c in zip(times[base], times[contender], strict=True)]
            med = statistics.median(ratios)
            results["ratios"][f"{contender} {clock}"] = ratios
            print(
                f"| {label} | {med:.2f}x ({min(ratios):.2f}-{max(ratios):.2f}) | "
                f">= {target}x | {'met' if med >= target else 'NOT met'} |"
            )
        rate = [N_EVENTS / t[k] for t in times["bus_emit_loop"]]
        med_rate = statistics.median(rate)
        print(
            f"| emit in a loop, sync no-op handler | {med_rate / 1e6:.2f} M events/s "
            f"({min(rate) / 1e6:.2f}-{max(rate) / 1e6:.2f}) | >= 3 M/s | "
            f"{'met' if med_rate >= 3e6 else 'NOT met'} |"
        )
        loop_floor = zip(times["bus_emit_loop"], times["emit_loop_floor"], strict=True)
        floor = [c[k] / f[k] for c, f in loop_floor]
        print(
            f"| emit loop time / its floor's (same round) | {statistics.median(floor):.2f}x "
            f"({min(floor):.2f}-{max(floor):.2f}) | - | - |"
        )
    print("\n| contender | median wall | median CPU | rate (CPU) |")
    print("|---|---|---|---|")
    for name, ts in times.items():
        count = N_TIMERS if name in ("sched_submit_cancel", "call_later_cancel") else N_EVENTS
        wall = statistics.median(t[0] for t in ts)
        cpu = statistics.median(t[1] for t in ts)
        print(f"| {name} | {wall * 1e3:,.1f} ms | {cpu * 1e3:,.1f} ms | {count / cpu:,.0f}/s |")
    print(f"\nload average after the run: {os.getloadavg()[0]:.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
