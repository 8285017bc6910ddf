"""Micro benchmarks of the pipelined batch publisher (DESIGN.md "RESP encoder", issue 4 (a)).

Run: `pytest benchmarks/test_bench_resp.py --benchmark-only` (from the repo root, with
`-c pyproject.toml`), or `make bench`. Groups to compare within:
- `encode`: one batch of 1,000 RPUSH commands with a 100-byte payload, encoded by the
  native encoder, its pure twin and redis-py 5's `Connection.pack_commands`.
- `publish`: 10,000 RPUSH of 100-byte payloads in one round trip against one private
  redis-server: `RespConnection.execute_many` vs a redis-py pipeline (transaction=False),
  and `RedisMessageQueue.publish_batch` of 10,000 messages (id, JSON encoding, dedupe,
  priority list, stats and doorbell included). Target (a): publish_batch >= 3x redis-py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis.asyncio
import uvloop
from redis.asyncio.connection import Connection

from benchutil import record_rate
from helpers import RedisServer
from meetq import Message, RedisMessageQueue, _native
from meetq._pure import resp as _resp
from meetq._redis.connection import RespConnection

PAYLOAD = b"x" * 100
ENCODE_BATCH = [("RPUSH", "bench:q", PAYLOAD)] * 1_000
PUBLISH_N = 10_000


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    lp = uvloop.new_event_loop()
    try:
        yield lp
    finally:
        lp.close()


def _runner(loop: asyncio.AbstractEventLoop, make: Callable[[], Any]) -> Callable[[], Any]:
    return lambda: loop.run_until_complete(make())


@pytest.mark.benchmark(group="encode")
def test_encode_native(benchmark: Any) -> None:
    native = (_native.native_modules or {}).get("resp")
    if native is None:
        pytest.skip("native extension not built")
    out = benchmark(native.encode_commands, ENCODE_BATCH)
    assert len(out) == len(_resp.encode_commands(ENCODE_BATCH))


@pytest.mark.benchmark(group="encode")
def test_encode_pure(benchmark: Any) -> None:
    benchmark(_resp.encode_commands, ENCODE_BATCH)


@pytest.mark.benchmark(group="encode")
def test_encode_redis_py(benchmark: Any) -> None:
    conn = Connection()
    benchmark(conn.pack_commands, ENCODE_BATCH)


@pytest.mark.benchmark(group="publish")
def test_publish_native_resp_connection(
    benchmark: Any, server: RedisServer, loop: asyncio.AbstractEventLoop
) -> None:
    conn: RespConnection = loop.run_until_complete(RespConnection.connect(server.url))
    batch = [("RPUSH", "bench:resp", PAYLOAD)] * PUBLISH_N

    async def publish() -> None:
        replies = await conn.execute_many(batch)
        assert len(replies) == PUBLISH_N
        await conn.execute("DEL", "bench:resp")

    try:
        benchmark.pedantic(_runner(loop, publish), rounds=30, warmup_rounds=2)
    finally:
        loop.run_until_complete(conn.close())
    record_rate(benchmark, "msgs", PUBLISH_N)


@pytest.mark.benchmark(group="publish")
def test_publish_redis_py_pipeline(
    benchmark: Any, server: RedisServer, loop: asyncio.AbstractEventLoop
) -> None:
    client = redis.asyncio.Redis.from_url(server.url)

    async def publish() -> None:
        pipe = client.pipeline(transaction=False)
        for _ in range(PUBLISH_N):
            pipe.rpush("bench:rpy", PAYLOAD)
        replies = await pipe.execute()
        assert len(replies) == PUBLISH_N
        await client.delete("bench:rpy")

    try:
        benchmark.pedantic(_runner(loop, publish), rounds=30, warmup_rounds=2)
    finally:
        loop.run_until_complete(client.aclose())
    record_rate(benchmark, "msgs", PUBLISH_N)


@pytest.mark.benchmark(group="publish")
def test_publish_batch_queue(
    benchmark: Any, server: RedisServer, loop: asyncio.AbstractEventLoop
) -> None:
    queue = RedisMessageQueue(server.url, "bench_pub")
    msgs = [Message(type="noop", payload={"pad": "x" * 80}) for _ in range(PUBLISH_N)]

    async def publish() -> None:
        for m in msgs:
            m.id = ""
        ids = await queue.publish_batch(msgs)
        assert len(ids) == PUBLISH_N

    async def reset() -> None:
        client = redis.asyncio.Redis.from_url(server.url)
        await client.flushdb()
        await client.aclose()

    def setup() -> None:
        loop.run_until_complete(reset())

    try:
        benchmark.pedantic(_runner(loop, publish), setup=setup, rounds=15, warmup_rounds=1)
    finally:
        loop.run_until_complete(queue.stop())
    record_rate(benchmark, "msgs", PUBLISH_N)
