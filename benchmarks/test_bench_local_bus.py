"""Emit -> dispatch throughput of the in-process bus, against its pure twin and the usual
Python alternatives, all in one run (ratios: `python benchmarks/report.py`).

Every contender carries the same kind of event object (type, payload, source, timestamp)
to a no-op handler; the asyncio.Queue bus is the idiomatic hand-written baseline.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import uvloop

import bench_local_api
from benchutil import record_rate, scale
from meetq import LocalEventBus
from meetq._native import BACKEND
from meetq._pure import ring as _ring

N = scale("events", 200_000)
CHUNK = 4096


class Event:
    __slots__ = ("payload", "source", "timestamp", "type")

    def __init__(self, type: str, payload: Any, source: str) -> None:
        self.type = type
        self.payload = payload
        self.source = source
        self.timestamp = time.time()


class PureBus(LocalEventBus):
    _Ring = _ring.RingBuffer


def noop(ev: Any) -> None:
    pass


async def anoop(ev: Any) -> None:
    pass


def run(coro_fn: Callable[[], Any]) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(coro_fn())


def meetq_bus(cls: type[LocalEventBus], handler: Any) -> Callable[[], None]:
    async def main() -> None:
        bus = cls(buffer_size=2 * CHUNK, workers=1, batch_size=1024)
        bus.on("e", handler)
        await bus.start()
        emit = bus.emit
        payload = {"k": 1}
        stats = bus.get_stats
        for _ in range(0, N, CHUNK):
            for _ in range(CHUNK):
                emit("e", payload, "bench")
            while stats()["pending_events"]:
                await asyncio.sleep(0)
        await bus.stop()
        assert stats()["processed_events"] == N - N % CHUNK + (CHUNK if N % CHUNK else 0)

    return lambda: run(main)


def queue_bus(handler: Any, is_async: bool) -> Callable[[], None]:
    """The hand-written baseline: asyncio.Queue + a worker + a handler table."""

    async def main() -> None:
        q: asyncio.Queue[Event] = asyncio.Queue(2 * CHUNK)
        handlers: dict[str, list[Any]] = {"e": [handler]}
        processed = 0

        async def worker() -> None:
            nonlocal processed
            while True:
                ev = await q.get()
                for fn in handlers.get(ev.type, ()):
                    try:
                        if is_async:
                            await fn(ev)
                        else:
                            fn(ev)
                    except Exception:
                        pass
                processed += 1

        task = asyncio.create_task(worker())
        put = q.put_nowait
        payload = {"k": 1}
        for _ in range(0, N, CHUNK):
            for _ in range(CHUNK):
                put(Event("e", payload, "bench"))
            while not q.empty():
                await asyncio.sleep(0)
        while processed < N - N % CHUNK:
            await asyncio.sleep(0)
        task.cancel()

    return lambda: run(main)


def record(benchmark: Any, fn: Callable[[], None], events: int = N) -> None:
    benchmark.pedantic(fn, rounds=5, iterations=1, warmup_rounds=1)
    benchmark.extra_info["events"] = events
    record_rate(benchmark, "events", events)
    benchmark.extra_info["backend"] = BACKEND


@pytest.mark.benchmark(group="bus-sync-handler")
def test_meetq_native_sync(benchmark: Any) -> None:
    if BACKEND != "native":
        pytest.skip("no native build")
    record(benchmark, meetq_bus(LocalEventBus, noop))


@pytest.mark.benchmark(group="bus-sync-handler")
def test_meetq_pure_sync(benchmark: Any) -> None:
    record(benchmark, meetq_bus(PureBus, noop))


@pytest.mark.benchmark(group="bus-sync-handler")
def test_asyncio_queue_sync(benchmark: Any) -> None:
    record(benchmark, queue_bus(noop, is_async=False))


def pyee_main() -> None:
    from pyee import EventEmitter

    ee = EventEmitter()
    ee.on("e", noop)
    emit = ee.emit
    payload = {"k": 1}
    for _ in range(N):
        emit("e", Event("e", payload, "bench"))


def blinker_main() -> None:
    from blinker import Signal

    sig = Signal()
    sig.connect(noop)
    send = sig.send
    payload = {"k": 1}
    for _ in range(N):
        send(Event("e", payload, "bench"))


@pytest.mark.benchmark(group="bus-sync-handler")
def test_pyee_sync(benchmark: Any) -> None:
    record(benchmark, pyee_main)


@pytest.mark.benchmark(group="bus-sync-handler")
def test_blinker_sync(benchmark: Any) -> None:
    record(benchmark, blinker_main)


@pytest.mark.benchmark(group="bus-async-handler")
def test_meetq_native_async(benchmark: Any) -> None:
    if BACKEND != "native":
        pytest.skip("no native build")
    record(benchmark, meetq_bus(LocalEventBus, anoop))


@pytest.mark.benchmark(group="bus-async-handler")
def test_meetq_pure_async(benchmark: Any) -> None:
    record(benchmark, meetq_bus(PureBus, anoop))


@pytest.mark.benchmark(group="bus-async-handler")
def test_asyncio_queue_async(benchmark: Any) -> None:
    record(benchmark, queue_bus(anoop, is_async=True))


def drain_path(ring_type: Any) -> Callable[[], None]:
    """The batch path alone: fill the ring with events, drain it in batches of 256."""

    def main() -> None:
        ring = ring_type(CHUNK)
        emit = ring.emit
        drain = ring.drain
        payload = {"k": 1}
        for _ in range(0, N, CHUNK):
            for _ in range(CHUNK):
                emit("e", payload, "bench")
            while drain(256):
                pass

    return main


def native_ring() -> Any:
    from meetq._native import RingBuffer

    return RingBuffer


def deque_main() -> None:
    from collections import deque

    q: deque[Event] = deque()
    payload = {"k": 1}
    for _ in range(0, N, CHUNK):
        for _ in range(CHUNK):
            q.append(Event("e", payload, "bench"))
        while q:
            q.popleft()


@pytest.mark.benchmark(group="ring-emit-drain")
def test_ring_native_drain(benchmark: Any) -> None:
    if BACKEND != "native":
        pytest.skip("no native build")
    record(benchmark, drain_path(native_ring()))


@pytest.mark.benchmark(group="ring-emit-drain")
def test_ring_pure_drain(benchmark: Any) -> None:
    record(benchmark, drain_path(_ring.RingBuffer))


@pytest.mark.benchmark(group="ring-emit-drain")
def test_deque_baseline_drain(benchmark: Any) -> None:
    record(benchmark, deque_main)


def cross_thread(cls: type[LocalEventBus] | None) -> Callable[[], None]:
    """One foreign thread emits; the loop consumes. Baseline: call_soon_threadsafe."""
    n = N // 4

    async def main() -> None:
        loop = asyncio.get_running_loop()
        done = asyncio.Event()
        count = 0

        def handler(ev: Any) -> None:
            nonlocal count
            count += 1
            if count == n:
                done.set()

        payload = {"k": 1}
        if cls is not None:
            bus = cls(buffer_size=4 * CHUNK, workers=1, batch_size=1024)
            bus.on("e", handler)
            await bus.start()
            emit = bus.emit

            def produce() -> None:
                for _ in range(n):
                    while not emit("e", payload, "thread"):
                        time.sleep(0)
        else:
            q: asyncio.Queue[Event] = asyncio.Queue()

            async def worker() -> None:
                while True:
                    handler(await q.get())

            task = asyncio.create_task(worker())

            def produce() -> None:
                for _ in range(n):
                    loop.call_soon_threadsafe(q.put_nowait, Event("e", payload, "thread"))

        t = threading.Thread(target=produce)
        t.start()
        await done.wait()
        t.join()
        if cls is not None:
            await bus.stop()
        else:
            task.cancel()

    return lambda: run(main)


@pytest.mark.benchmark(group="cross-thread-emit")
def test_cross_thread_native(benchmark: Any) -> None:
    if BACKEND != "native":
        pytest.skip("no native build")
    record(benchmark, cross_thread(LocalEventBus), N // 4)


@pytest.mark.benchmark(group="cross-thread-emit")
def test_cross_thread_pure(benchmark: Any) -> None:
    record(benchmark, cross_thread(PureBus), N // 4)


@pytest.mark.benchmark(group="cross-thread-emit")
def test_cross_thread_call_soon_threadsafe(benchmark: Any) -> None:
    record(benchmark, cross_thread(None), N // 4)


# -- the public API: emit(type, payload, source) once per event vs pyee ------------------


@pytest.mark.benchmark(group="bus public API: single emits, fresh payloads")
def test_meetq_native_single_emits(benchmark: Any) -> None:
    if BACKEND != "native":
        pytest.skip("no native build")
    record(benchmark, bench_local_api.bus_single_emits, bench_local_api.N_EVENTS)


@pytest.mark.benchmark(group="bus public API: single emits, fresh payloads")
def test_meetq_pure_single_emits(benchmark: Any) -> None:
    record(
        benchmark,
        lambda: bench_local_api.bus_single_emits(cls=bench_local_api.PureBus),
        bench_local_api.N_EVENTS,
    )


@pytest.mark.benchmark(group="bus public API: single emits, fresh payloads")
def test_pyee_single_emits(benchmark: Any) -> None:
    record(benchmark, bench_local_api.pyee_single_emits, bench_local_api.N_EVENTS)
