"""LocalEventBus and PriorityLocalEventBus, on whichever backend this run selected.

The first group ports the tests of the original Go bus (emit/handle, multiple handlers,
concurrent emit, EmitSync, buffer full, stats, priority order, handler panic, context
timeout); the rest cover threads, wake-ups, deferred handlers and shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import pytest

from helpers import async_never, async_wait_until
from meetq import (
    LocalEvent,
    LocalEventBus,
    Priority,
    PriorityLocalEventBus,
    QueueFullError,
    events,
)


async def test_emit_and_handle() -> None:
    got: list[Any] = []
    async with LocalEventBus(100, 2) as bus:
        bus.on(events.STREAM_STARTED, got.append)
        assert bus.emit(events.STREAM_STARTED, {"stream_id": "s1"}, source="media_service")
        await async_wait_until(lambda: got)
    ev = got[0]
    assert isinstance(ev, LocalEvent)
    assert (ev.type, ev.payload, ev.source) == (
        "media.stream_started",
        {"stream_id": "s1"},
        "media_service",
    )
    assert abs(ev.timestamp - time.time()) < 60


async def test_multiple_handlers_all_run() -> None:
    calls: list[str] = []
    async with LocalEventBus(100, 4) as bus:
        bus.on("t", lambda e: calls.append("a"))
        bus.on("t", lambda e: calls.append("b"))

        async def c(e: Any) -> None:
            calls.append("c")

        bus.on("t", c)
        bus.on("other", lambda e: calls.append("wrong"))
        bus.emit("t", {})
        await async_wait_until(lambda: len(calls) == 3)
        await async_wait_until(lambda: bus.get_stats()["processed_events"] == 1)
    assert sorted(calls) == ["a", "b", "c"]


async def test_concurrent_emit_from_tasks() -> None:
    seen: list[int] = []
    async with LocalEventBus(10_000, 4) as bus:
        bus.on("n", lambda e: seen.append(e.payload["i"]))

        async def producer(p: int) -> None:
            for i in range(250):
                assert bus.emit("n", {"i": p * 1000 + i})
                if i % 50 == 0:
                    await asyncio.sleep(0)

        await asyncio.gather(*(producer(p) for p in range(8)))
        await async_wait_until(lambda: len(seen) == 2000)
    assert sorted(seen) == sorted(p * 1000 + i for p in range(8) for i in range(250))


async def test_emit_sync_waits_for_room() -> None:
    """Go's EmitSync blocks until the event is queued; ours is `emit_wait`."""
    got: list[int] = []
    bus = LocalEventBus(2, 1)
    bus.on("s", lambda e: got.append(e.payload["i"]))
    assert await bus.emit_wait("s", {"i": 0}, timeout=1)
    assert bus.emit("s", {"i": 1})
    waiter = asyncio.ensure_future(bus.emit_wait("s", {"i": 2}, timeout=30))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not waiter.done()  # full, and nothing drains until the bus starts
    async with bus:
        assert await waiter is True
        await async_wait_until(lambda: len(got) == 3)
    assert got == [0, 1, 2]
    stats = bus.get_stats()
    assert stats["dropped_events"] == 0
    assert stats["total_events"] == 3


async def test_emit_wait_times_out_with_queue_full() -> None:
    bus = LocalEventBus(1, 1)  # never started: nothing drains
    assert bus.emit("x")
    with pytest.raises(QueueFullError):
        await bus.emit_wait("x", timeout=0.05)
    assert bus.get_stats()["dropped_events"] == 0


async def test_buffer_full_drops_and_counts() -> None:
    bus = LocalEventBus(buffer_size=3, workers=1)
    assert [bus.emit("x") for _ in range(5)] == [True, True, True, False, False]
    stats = bus.get_stats()
    assert stats["dropped_events"] == 2
    assert stats["pending_events"] == 3
    assert stats["buffer_size"] == 3  # the requested bound, not the ring's rounded capacity
    got: list[Any] = []
    bus.on("x", got.append)
    async with bus:
        await async_wait_until(lambda: len(got) == 3)


async def test_stats() -> None:
    async with LocalEventBus(100, 2) as bus:
        bus.on("ok", lambda e: None)

        def boom(e: Any) -> None:
            raise RuntimeError("boom")

        bus.on("bad", boom)
        bus.on("bad", lambda e: None)
        for _ in range(5):
            bus.emit("ok")
        for _ in range(3):
            bus.emit("bad")
        bus.emit("nobody-listens")
        await async_wait_until(lambda: bus.get_stats()["processed_events"] == 9)
        assert bus.get_stats() == {
            "total_events": 9,
            "processed_events": 9,
            "failed_events": 3,
            "dropped_events": 0,
            "pending_events": 0,
            "buffer_size": 100,
        }


async def test_priority_order() -> None:
    order: list[str] = []
    bus = PriorityLocalEventBus(100, 1)
    bus.on("p", lambda e: order.append(e.payload["name"]))
    for prio, name in [
        (Priority.LOW, "low1"),
        (Priority.NORMAL, "normal1"),
        (Priority.CRITICAL, "crit1"),
        (Priority.HIGH, "high1"),
        (Priority.LOW, "low2"),
        (Priority.CRITICAL, "crit2"),
    ]:
        assert bus.emit_with_priority(prio, "p", {"name": name}, "test")
    assert bus.emit("p", {"name": "normal2"})
    async with bus:
        await async_wait_until(lambda: len(order) == 7)
    assert order == ["crit1", "crit2", "high1", "normal1", "normal2", "low1", "low2"]


async def test_priority_bus_shares_one_bound() -> None:
    bus = PriorityLocalEventBus(2, 1)
    assert bus.emit_with_priority(Priority.LOW, "p")
    assert bus.emit_with_priority(Priority.CRITICAL, "p")
    assert not bus.emit_with_priority(Priority.CRITICAL, "p")
    assert bus.get_stats()["dropped_events"] == 1


async def test_handler_panic_does_not_stop_others(caplog: pytest.LogCaptureFixture) -> None:
    got: list[int] = []

    def panics(e: Any) -> None:
        raise ValueError("handler panic")

    async def async_panics(e: Any) -> None:
        raise KeyError("async panic")

    async with LocalEventBus(100, 2) as bus:
        bus.on("x", panics)
        bus.on("x", async_panics)
        bus.on("x", lambda e: got.append(e.payload["i"]))
        with caplog.at_level(logging.WARNING, logger="meetq.local.bus"):
            for i in range(10):
                bus.emit("x", {"i": i})
            await async_wait_until(lambda: bus.get_stats()["processed_events"] == 10)
    assert sorted(got) == list(range(10))
    assert bus.get_stats()["failed_events"] == 20
    assert "handler panic" in caplog.text and "async panic" in caplog.text


async def test_handler_timeout_cancels_and_counts_failed() -> None:
    cancelled = asyncio.Event()
    fast: list[int] = []

    async def hangs(e: Any) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async with LocalEventBus(100, 2, handler_timeout=0.05) as bus:
        bus.on("hang", hangs)
        bus.on("fast", lambda e: fast.append(1))
        bus.emit("hang")
        bus.emit("fast")
        await asyncio.wait_for(cancelled.wait(), 10)
        await async_wait_until(lambda: bus.get_stats()["processed_events"] == 2)
    assert fast == [1]
    assert bus.get_stats()["failed_events"] == 1


async def test_handler_raising_cancelled_error_does_not_kill_a_worker() -> None:
    async def cancels(e: Any) -> None:
        raise asyncio.CancelledError

    got: list[int] = []
    async with LocalEventBus(100, 1) as bus:
        bus.on("c", cancels)
        bus.on("ok", lambda e: got.append(1))
        bus.emit("c")
        bus.emit("ok")
        await async_wait_until(lambda: got)
    assert bus.get_stats()["failed_events"] == 1


async def test_a_timed_out_thread_handler_holds_its_worker_until_it_returns() -> None:
    started = threading.Event()
    release = threading.Event()
    after: list[int] = []

    def blocking(e: Any) -> None:
        started.set()
        release.wait(10)

    async with LocalEventBus(100, 1, handler_timeout=0.02) as bus:
        bus.on("t", blocking, in_thread=True)
        bus.on("next", lambda e: after.append(1))
        bus.emit("t")
        await async_wait_until(started.is_set)
        await async_wait_until(lambda: bus.get_stats()["failed_events"] == 1)  # timed out
        bus.emit("next")
        # The one worker is still held by the thread that cannot be stopped.
        await async_never(lambda: after or bus.get_stats()["pending_events"] != 1, 0.2)
        release.set()
        await async_wait_until(lambda: after == [1])
    assert bus.get_stats()["processed_events"] == 2


async def test_a_sync_handler_is_not_timed() -> None:
    done: list[int] = []

    def slow(e: Any) -> None:
        time.sleep(0.03)  # longer than the timeout: still a success
        done.append(1)

    async with LocalEventBus(10, 1, handler_timeout=0.001) as bus:
        bus.on("s", slow)
        bus.emit("s")
        await async_wait_until(lambda: done == [1])
        await async_wait_until(lambda: bus.get_stats()["processed_events"] == 1)
    assert bus.get_stats()["failed_events"] == 0


async def test_eight_threads_times_500_none_lost() -> None:
    seen: list[tuple[int, int]] = []
    give_up = threading.Event()  # bounds the producers if the bus ever stopped draining
    async with LocalEventBus(256, 4) as bus:
        bus.on("t", lambda e: seen.append((e.payload["p"], e.payload["i"])))

        def produce(p: int) -> None:
            for i in range(500):
                while not bus.emit("t", {"p": p, "i": i}, source=f"thread-{p}"):
                    if give_up.wait(0.0005):  # buffer full: let the loop drain
                        return

        threads = [threading.Thread(target=produce, args=(p,)) for p in range(8)]
        for t in threads:
            t.start()
        try:
            await async_wait_until(lambda: len(seen) == 4000, timeout=90)
        finally:
            give_up.set()
            for t in threads:
                await asyncio.to_thread(t.join, 10)
    assert sorted(seen) == [(p, i) for p in range(8) for i in range(500)]
    for p in range(8):  # per producer, order is preserved
        assert [i for q, i in seen if q == p] == list(range(500))


async def test_foreign_thread_emit_wakes_an_idle_consumer() -> None:
    got = asyncio.Event()
    loop = asyncio.get_running_loop()
    async with LocalEventBus(16, 2) as bus:
        bus.on("wake", lambda e: loop.call_soon(got.set))
        await async_wait_until(lambda: bus._idle is not None)  # every worker parked, armed
        threading.Thread(target=bus.emit, args=("wake", {})).start()
        await asyncio.wait_for(got.wait(), 5)


async def test_one_wake_up_per_burst() -> None:
    bus = LocalEventBus(10_000, 1)
    wakes = 0
    original = bus._wake

    def counting_wake() -> None:
        nonlocal wakes
        wakes += 1
        original()

    bus._wake = counting_wake  # type: ignore[method-assign]
    async with bus:
        await async_wait_until(lambda: bus._idle is not None)  # the worker is parked, armed
        for _ in range(5_000):
            bus.emit("burst")
        await async_wait_until(lambda: bus.get_stats()["processed_events"] == 5000)
    assert wakes <= 2  # the edge, plus at most the stop() nudge


async def test_in_thread_handler_runs_off_the_loop() -> None:
    threads: list[int] = []
    async with LocalEventBus(100, 2) as bus:
        bus.on("t", lambda e: threads.append(threading.get_ident()), in_thread=True)
        bus.emit("t")
        await async_wait_until(lambda: bus.get_stats()["processed_events"] == 1)
    assert threads and threads[0] != threading.get_ident()


async def test_async_handlers_run_concurrently_across_workers() -> None:
    running = 0
    peak = 0
    gate = asyncio.Event()

    async def handler(e: Any) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await gate.wait()
        running -= 1

    async with LocalEventBus(100, 4) as bus:
        bus.on("a", handler)
        for _ in range(8):
            bus.emit("a")
        await async_wait_until(lambda: peak == 4)
        gate.set()
        await async_wait_until(lambda: bus.get_stats()["processed_events"] == 8)
    assert peak == 4  # `workers` bounds concurrency


async def test_stop_drains_queued_events() -> None:
    got: list[int] = []
    bus = LocalEventBus(1000, 2)
    bus.on("d", lambda e: got.append(e.payload["i"]))
    for i in range(500):
        bus.emit("d", {"i": i})
    await bus.start()
    assert await bus.stop() == 0
    assert sorted(got) == list(range(500))


async def test_stop_can_discard_and_reports_count() -> None:
    bus = LocalEventBus(1000, 1)
    for _ in range(300):
        bus.emit("d")
    await bus.start()
    discarded = await bus.stop(discard=True)
    assert discarded + bus.get_stats()["processed_events"] == 300
    assert bus.get_stats()["pending_events"] == 0


async def test_stop_waits_for_running_async_handlers_and_leaks_no_task() -> None:
    started, release, finished = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def slow(e: Any) -> None:
        started.set()
        await release.wait()
        finished.set()

    before = asyncio.all_tasks()
    bus = LocalEventBus(10, 2)
    bus.on("s", slow)
    await bus.start()
    bus.emit("s")
    await asyncio.wait_for(started.wait(), 10)
    stopping = asyncio.ensure_future(bus.stop())
    for _ in range(20):
        await asyncio.sleep(0)  # bare yields: stop() runs as far as it can
    assert not stopping.done()  # it waits for the running handler
    release.set()
    await asyncio.wait_for(stopping, 10)
    assert finished.is_set()
    assert asyncio.all_tasks() == before


async def test_restart_after_stop() -> None:
    got: list[int] = []
    bus = LocalEventBus(10, 1)
    bus.on("r", lambda e: got.append(1))
    async with bus:
        bus.emit("r")
        await async_wait_until(lambda: got)
    bus.emit("r")  # queued while stopped, processed after the next start
    async with bus:
        await async_wait_until(lambda: len(got) == 2)


async def test_off_removes_handlers() -> None:
    got: list[str] = []

    def a(e: Any) -> None:
        got.append("a")

    async with LocalEventBus(10, 1) as bus:
        bus.on("x", a)
        bus.on("x", lambda e: got.append("b"))
        bus.off("x", a)
        bus.emit("x")
        await async_wait_until(lambda: got)
        bus.off("x")
        bus.emit("x")
        await async_wait_until(lambda: bus.get_stats()["processed_events"] == 2)
    assert got == ["b"]


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        LocalEventBus(0, 1)
    with pytest.raises(ValueError):
        LocalEventBus(10, 0)
