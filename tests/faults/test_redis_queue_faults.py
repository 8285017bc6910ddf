"""Fault injection with real processes: SIGKILLed workers, Redis restarts, cut connections,
garbage in the queue's keys. Every test is bounded in time and stops what it started."""

from __future__ import annotations

import asyncio
import collections
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio

from helpers import (
    RedisServer,
    async_wait_until,
    redis_client,
    script_process,
    tcp_addrs,
    until_disconnected,
)
from meetq import Message, RedisMessageQueue
from meetq._redis.keys import QueueKeys
from proxy import Proxy

WORKER = Path(__file__).parent.parent / "support" / "queue_worker.py"


def worker_process(url: str, queue: str, done_key: str, visibility: float) -> Any:
    """A worker subprocess, once it is ready; always stopped."""
    return script_process(WORKER, url, queue, done_key, str(visibility))


@pytest.mark.slow
async def test_sigkill_worker_loses_nothing(redis_url: str) -> None:
    name, done_key, total = "kill", "kill:done", 400
    q = RedisMessageQueue(redis_url, name, workers=8, visibility_timeout=1.0)
    done_b: list[str] = []

    async def ok(msg: Message) -> None:
        done_b.append(msg.id)

    q.register_handler("ok", ok)
    async with redis_client(redis_url) as r:
        ids = await q.publish_batch(
            [Message(type="ok", payload={"n": n, "sleep": 0.002}) for n in range(total)]
        )
        loop = asyncio.get_running_loop()
        with worker_process(redis_url, name, done_key, 1.0) as proc:
            await async_wait_until(lambda: _llen_at_least(r, done_key, 100), timeout=30)
            addrs = tcp_addrs(proc.pid)
            proc.send_signal(signal.SIGKILL)
            await loop.run_in_executor(None, proc.wait, 10)
            await until_disconnected(r, addrs)  # what it wrote last may still be executed
        # what the dead worker held: its leases stay in `inflight` until they expire
        in_flight = {x.decode() for x in await r.zrange(QueueKeys(name).named("inflight"), 0, -1)}
        done_a = [x.decode() for x in await r.lrange(done_key, 0, -1)]
        assert 100 <= len(done_a) < total
        async with q:
            await async_wait_until(lambda: len(set(done_a) | set(done_b)) == total, timeout=30)
        counts = collections.Counter(done_a + done_b)
        assert set(counts) == set(ids)
        duplicates = {i for i, c in counts.items() if c > 1}
        assert duplicates <= in_flight
        stats = await q.get_stats()
        assert stats["queue_length"]["total"] == stats["processing_count"] == 0
        assert stats["dead_letter_count"] == 0


async def _llen_at_least(r: redis.asyncio.Redis, key: str, n: int) -> bool:
    return bool(await r.llen(key) >= n)


async def _publish_steadily(q: RedisMessageQueue, total: int, confirmed: list[str]) -> None:
    """Publishes `total` messages in small batches, recording ids whose publish returned."""
    n = 0
    while n < total:
        batch = [Message(type="ok", payload={"n": n + i}) for i in range(5)]
        confirmed.extend(await q.publish_batch(batch))
        n += len(batch)
        await asyncio.sleep(0.002)  # a steady producer, not synchronization


@pytest.mark.slow
async def test_redis_restart_with_aof_loses_nothing(
    redis_factory: Callable[..., RedisServer],
) -> None:
    server = redis_factory("--appendonly", "yes", "--appendfsync", "always")
    url = server.url
    name, total = "restart", 1500
    consumer = RedisMessageQueue(url, name, workers=8, visibility_timeout=1.0)
    publisher = RedisMessageQueue(url, name, retry_budget=30.0)
    seen: set[str] = set()
    consumer.register_handler("ok", lambda m: seen.add(m.id))
    confirmed: list[str] = []
    loop = asyncio.get_running_loop()
    try:
        async with consumer:
            producing = asyncio.ensure_future(_publish_steadily(publisher, total, confirmed))
            try:
                await async_wait_until(lambda: len(seen) >= 200, timeout=30)
                await loop.run_in_executor(None, server.kill)
                await loop.run_in_executor(None, server.start)
                await asyncio.wait_for(producing, 60)
            finally:
                producing.cancel()
            await async_wait_until(lambda: seen >= set(confirmed), timeout=30)
            assert len(confirmed) == total
    finally:
        await publisher.stop()


@pytest.mark.slow
async def test_cut_connections_lose_nothing(redis_server: RedisServer) -> None:
    proxy = Proxy(redis_server.port)
    await proxy.start()
    url = f"redis://127.0.0.1:{proxy.port}/0"
    name, total = "proxy", 1500
    consumer = RedisMessageQueue(url, name, workers=8, visibility_timeout=1.0)
    publisher = RedisMessageQueue(url, name, retry_budget=30.0)
    seen: set[str] = set()
    consumer.register_handler("ok", lambda m: seen.add(m.id))
    confirmed: list[str] = []
    try:
        async with consumer:
            producing = asyncio.ensure_future(_publish_steadily(publisher, total, confirmed))
            try:
                for threshold in (200, 600, 1000):
                    await async_wait_until(lambda t=threshold: len(seen) >= t, timeout=30)
                    proxy.cut()
                await asyncio.wait_for(producing, 60)
            finally:
                producing.cancel()
            await async_wait_until(lambda: seen >= set(confirmed), timeout=30)
            assert len(confirmed) == total
            # and the worker still serves after the cuts
            last = await publisher.publish(Message(type="ok"))
            await async_wait_until(lambda: last in seen, timeout=10)
    finally:
        await publisher.stop()
        await proxy.stop()


@pytest.mark.slow
async def test_silent_connections_are_replaced(redis_server: RedisServer) -> None:
    """Every connection goes silent at once (a half-open path: nothing closes, nothing
    arrives). The publisher's reply timeout fails its call and it retries on a fresh
    connection within its budget; the worker's doorbell wait notices by its own timeout,
    reconnects and serves the new messages, including any whose dequeue reply was lost in
    the silence (their leases expire and they come back)."""
    proxy = Proxy(redis_server.port)
    await proxy.start()
    url = f"redis://127.0.0.1:{proxy.port}/0"
    name = "silent"
    consumer = RedisMessageQueue(url, name, workers=4, visibility_timeout=2.0, block_timeout=0.3)
    publisher = RedisMessageQueue(url, name, retry_budget=15.0)
    seen: set[str] = set()
    consumer.register_handler("ok", lambda m: seen.add(m.id))
    try:
        async with consumer:
            first = await publisher.publish_batch([Message(type="ok") for _ in range(20)])
            await async_wait_until(lambda: seen >= set(first), timeout=10)
            # every ack applied, so only the doorbell wait is in flight when it goes quiet
            await async_wait_until(lambda: _processed_at_least(publisher, 20), timeout=10)
            proxy.silence()
            second = await asyncio.wait_for(
                publisher.publish_batch([Message(type="ok") for _ in range(20)]), 30
            )
            # the doorbell connection's reply timeout is block_timeout + 5 s
            await async_wait_until(lambda: seen >= set(second), timeout=30)
            proxy.cut()  # the silenced connections that remain, so stop() is quick
    finally:
        await proxy.stop()
        await publisher.stop()


async def _processed_at_least(q: RedisMessageQueue, n: int) -> bool:
    stats = await q.get_stats()
    return int(stats["total_processed"]) >= n


@pytest.mark.slow
async def test_garbage_and_failures_dead_letter_while_worker_serves(redis_url: str) -> None:
    name, done_key = "junk", "junk:done"
    k = QueueKeys(name)
    q = RedisMessageQueue(redis_url, name)  # publisher and DLQ reader, never started
    async with redis_client(redis_url) as r:
        with worker_process(redis_url, name, done_key, 5.0):
            await r.hset(k.named("msg"), mapping={"j1": b"2\x00\x01garbage", "j2": b"", "j3": b"9"})
            await r.rpush(k.ready(2), "j1", "j2", "j3", "nobody")
            await r.zadd(k.named("delayed"), {"j4": 0})
            await q.publish(Message(type="unheard-of", max_retries=3))
            await q.publish(Message(type="boom", max_retries=1))
            await q.publish(Message(type="hang", timeout=0.2))
            oks = await q.publish_batch([Message(type="ok") for _ in range(20)])
            await async_wait_until(lambda: _llen_at_least(r, done_key, 20), timeout=30)
            await async_wait_until(lambda: _dlq_size(q, 8), timeout=30)
            reasons = sorted(e.reason for e in await q.dead_letters(20))
            done = [x.decode() for x in await r.lrange(done_key, 0, -1)]
            assert sorted(done) == sorted(oks)
            # and still serving
            await q.publish(Message(type="ok", id="after"))
            await async_wait_until(lambda: _llen_at_least(r, done_key, 21), timeout=10)
    text = "\n".join(reasons)
    assert text.count("malformed message") == 3, text
    assert text.count("missing body") == 2, text
    assert "no handler for message type 'unheard-of'" in text
    assert "RuntimeError: handler exploded" in text
    assert "handler timed out after 0.2s" in text


async def _dlq_size(q: RedisMessageQueue, n: int) -> bool:
    return await q.dead_letter_count() == n
