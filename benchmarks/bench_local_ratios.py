"""The ratios BENCHMARKS.md tracks for the bus, the ring, the timer wheel and the scheduler,
measured interleaved: every round runs every contender of a group once, in a shuffled
order, and each ratio is the median over the rounds of (contender time / meetq native
time) within one round. CPU time (this process, all its threads) and wall time both.

    python benchmarks/bench_local_ratios.py               # ~5 min on a quiet box
    python benchmarks/bench_local_ratios.py --rounds 7 --json out.json
    MEETQ_BENCH_SCALE=0.02 python benchmarks/bench_local_ratios.py --rounds 2   # smoke

The workloads are the pytest-benchmark ones (`test_bench_local_bus.py`,
`bench_scheduler.py`), run here without pytest so the groups can be interleaved.
"""

from __future__ import annotations

import argparse
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

import bench_scheduler as bs
import test_bench_local_bus as tb
from meetq import LocalEventBus, backend

Times = tuple[float, float]


def timed(fn: Callable[[], Any]) -> Callable[[], Times]:
    def run() -> Times:
        gc.collect()
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        return time.perf_counter() - w0, time.process_time() - c0

    return run


DS_CANCEL = bs.deadlines(bs.N_TIMERS, 30_000)
DS_FIRE = bs.deadlines(bs.N_TIMERS, bs.SPAN_MS)

# group -> (count, unit, {contender: fn}); the first contender is the reference. Group (b)
# is CPU time by construction (call_later must really wait its second); read its CPU column.
GROUPS: dict[str, tuple[int, str, dict[str, Callable[[], Times]]]] = {
    "bus-sync-handler": (
        tb.N,
        "events",
        {
            "meetq native": timed(tb.meetq_bus(LocalEventBus, tb.noop)),
            "meetq pure": timed(tb.meetq_bus(tb.PureBus, tb.noop)),
            "asyncio.Queue bus": timed(tb.queue_bus(tb.noop, is_async=False)),
            "pyee": timed(lambda: tb.pyee_main()),
            "blinker": timed(lambda: tb.blinker_main()),
        },
    ),
    "bus-async-handler": (
        tb.N,
        "events",
        {
            "meetq native": timed(tb.meetq_bus(LocalEventBus, tb.anoop)),
            "meetq pure": timed(tb.meetq_bus(tb.PureBus, tb.anoop)),
            "asyncio.Queue bus": timed(tb.queue_bus(tb.anoop, is_async=True)),
        },
    ),
    "ring-emit-drain": (
        tb.N,
        "events",
        {
            "ring native": timed(tb.drain_path(tb.native_ring())),
            "ring pure": timed(tb.drain_path(tb._ring.RingBuffer)),
            "deque": timed(lambda: tb.deque_main()),
        },
    ),
    "cross-thread-emit": (
        tb.N // 4,
        "events",
        {
            "meetq native": timed(tb.cross_thread(LocalEventBus)),
            "meetq pure": timed(tb.cross_thread(tb.PureBus)),
            "call_soon_threadsafe": timed(tb.cross_thread(None)),
        },
    ),
    "(a) wheel schedule + cancel": (
        bs.N_TIMERS,
        "timers",
        {
            "native wheel": timed(lambda: bs.cancel_wheel(bs.NativeWheel, DS_CANCEL)),
            "pure wheel": timed(lambda: bs.cancel_wheel(bs.PureWheel, DS_CANCEL)),
            "uvloop call_later": timed(lambda: bs.cancel_call_later(DS_CANCEL)),
            "heapq": timed(lambda: bs.cancel_heapq(DS_CANCEL)),
        },
    ),
    "(b) wheel schedule + fire over 1 s": (
        bs.N_TIMERS,
        "timers",
        {
            "native wheel": timed(lambda: bs.fire_wheel(bs.NativeWheel, DS_FIRE)),
            "pure wheel": timed(lambda: bs.fire_wheel(bs.PureWheel, DS_FIRE)),
            "uvloop call_later": timed(lambda: bs.fire_call_later(DS_FIRE)),
            "heapq": timed(lambda: bs.fire_heapq(DS_FIRE)),
        },
    ),
    "(c) scheduler, immediate no-op tasks": (
        bs.N_TASKS,
        "tasks",
        {
            "TaskScheduler sync handler": timed(lambda: bs.scheduler_tasks(bs.N_TASKS)),
            "TaskScheduler async handler": timed(
                lambda: bs.scheduler_tasks(bs.N_TASKS, bs.async_noop)
            ),
            "asyncio.PriorityQueue + 8 workers": timed(lambda: bs.queue_tasks(bs.N_TASKS)),
        },
    ),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", help="also write the raw times here")
    ap.add_argument("--only", help="run only the groups whose name contains this")
    args = ap.parse_args()
    print(
        f"backend {backend()}, python {sys.version.split()[0]}, uvloop {uvloop.__version__}, "
        f"load average {os.getloadavg()[0]:.1f}; {args.rounds} interleaved rounds per group"
    )
    rng = random.Random(9)
    raw: dict[str, dict[str, list[Times]]] = {}
    for group, (count, unit, contenders) in GROUPS.items():
        if args.only and args.only not in group:
            continue
        times: dict[str, list[Times]] = {name: [] for name in contenders}
        for _ in range(args.rounds):
            order = list(contenders)
            rng.shuffle(order)
            for name in order:
                times[name].append(contenders[name]())
        raw[group] = times
        ref = next(iter(contenders))
        print(f"\n### {group} ({count:,} {unit}; ratio = contender time / {ref} time)\n")
        print("| contender | rate (CPU) | ratio, CPU: median (min-max) | ratio, wall: median |")
        print("|---|---|---|---|")
        for name, ts in times.items():
            cpu = [t[1] / r[1] for t, r in zip(ts, times[ref], strict=True)]
            wall = [t[0] / r[0] for t, r in zip(ts, times[ref], strict=True)]
            rate = count / statistics.median(t[1] for t in ts)
            print(
                f"| {name} | {rate:,.0f} {unit}/s | {statistics.median(cpu):.2f} "
                f"({min(cpu):.2f}-{max(cpu):.2f}) | {statistics.median(wall):.2f} |"
            )
    print(f"\nload average after the run: {os.getloadavg()[0]:.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(raw, f, indent=1)


if __name__ == "__main__":
    main()
