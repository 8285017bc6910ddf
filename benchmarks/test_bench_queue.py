"""`RedisMessageQueue` drain in `make bench` (issue 4 (b), meetq side only).

Group `queue-drain`: 20,000 queued no-op jobs (~100-byte payload) drained by this process,
sync and async handlers, each round on a freshly filled queue. The full measurement with
latency and commands per job is `python benchmarks/bench_queue_self.py`; the side-by-side
peer runs are in `benchmarks/peers/`.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import uvloop

from benchutil import record_rate, scale
from helpers import RedisServer
from meetq import Message, RedisMessageQueue

JOBS = scale("queue_drain", 20_000)
PAYLOAD = {"user_id": 12345, "meeting_id": 67890, "blob": "x" * 48}


@pytest.mark.benchmark(group="queue-drain")
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_drain_native(benchmark: Any, server: RedisServer, kind: str) -> None:
    loop = uvloop.new_event_loop()
    name = f"bench-drain-{kind}"
    q = RedisMessageQueue(server.url, name, workers=100)
    count = 0
    done = asyncio.Event()

    def noop(msg: Message) -> None:
        nonlocal count
        count += 1
        if count == JOBS:
            done.set()

    async def anoop(msg: Message) -> None:
        noop(msg)

    q.register_handler("noop", noop if kind == "sync" else anoop)

    async def fill() -> None:
        nonlocal count
        count = 0
        done.clear()
        for i in range(0, JOBS, 5000):
            n = min(5000, JOBS - i)
            await q.publish_batch([Message(type="noop", payload=PAYLOAD) for _ in range(n)])

    async def drain() -> None:
        await q.start()
        await done.wait()
        await q.stop()

    try:
        benchmark.pedantic(
            lambda: loop.run_until_complete(drain()),
            setup=lambda: loop.run_until_complete(fill()),
            rounds=3,
            iterations=1,
        )
        record_rate(benchmark, "tasks", JOBS)
    finally:
        loop.run_until_complete(q.stop())
        loop.close()
