"""Replicas and failover (issue 12 item 6): READONLY and friends are retried with backoff
within the budget, then surface as ONE clear `MeetqError` with the cause kept; a worker
pointed at a replica logs one warning and one error (not one a second), reports itself
unhealthy, serves as soon as its server is promoted, and `stop()` always stops every thread
and connection it started, even when its final flush fails."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import pytest
import redis.asyncio
from redis.exceptions import ReadOnlyError

from helpers import RedisServer, async_wait_until
from meetq import MeetqConnectionError, MeetqError, Message, RedisMessageQueue


async def _replica_of(master: RedisServer, factory: Callable[..., RedisServer]) -> RedisServer:
    replica = factory("--replicaof", "127.0.0.1", str(master.port))
    r = redis.asyncio.Redis.from_url(replica.url)
    try:

        async def synced() -> bool:
            info = await r.info("replication")
            return bool(info.get("master_link_status") == "up")

        await async_wait_until(synced, timeout=20)
    finally:
        await r.aclose()
    return replica


async def _clients_of_others(url: str) -> list[str]:
    """CLIENT LIST of `url` without this inspecting connection and replication links."""
    r = redis.asyncio.Redis.from_url(url)
    try:
        me = await r.client_id()
        return [
            f"{c['name']}/{c['cmd']}"
            for c in await r.client_list()
            if int(c["id"]) != me and "M" not in c["flags"] and "S" not in c["flags"]
        ]
    finally:
        await r.aclose()


async def test_publish_to_a_replica_is_one_meetq_error_with_the_cause(
    redis_factory: Callable[..., RedisServer],
) -> None:
    master = redis_factory()
    replica = await _replica_of(master, redis_factory)
    for resp_connection in (True, False):
        q = RedisMessageQueue(replica.url, "ro", retry_budget=0.3, resp_connection=resp_connection)
        try:
            calls = (
                lambda q=q: q.publish(Message(type="t")),
                lambda q=q: q.publish_batch([Message(type="t"), Message(type="t")]),
                lambda q=q: q.publish(Message(type="t", id="given-id")),
            )
            for call in calls:
                with pytest.raises(MeetqConnectionError) as info:
                    await call()
                assert isinstance(info.value, MeetqError)
                assert isinstance(info.value.__cause__, ReadOnlyError)
                assert "ReadOnlyError: You can't write against a read only replica" in str(
                    info.value
                )
            assert (await q.get_stats())["total_published"] == 0  # reads still work
        finally:
            await q.stop()


async def test_worker_on_a_replica_reports_once_then_serves_after_promotion(
    redis_factory: Callable[..., RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, "meetq")
    master = redis_factory()
    replica = await _replica_of(master, redis_factory)
    # a message stored before the failover, replicated to the replica (WAIT: replication
    # is asynchronous, and a loaded box could promote the replica before it arrived)
    await RedisMessageQueue(master.url, "fo").publish(Message(type="t", payload={"n": 1}))
    async with redis.asyncio.Redis.from_url(master.url) as m:
        assert await m.execute_command("WAIT", 1, 20_000) == 1
    seen: list[int] = []
    q = RedisMessageQueue(replica.url, "fo", workers=1, retry_budget=0.5, visibility_timeout=5)
    q.register_handler("t", lambda msg: seen.append(msg.payload["n"]))
    await q.start()
    try:
        await async_wait_until(lambda: q.error is not None, timeout=20)
        assert not q.healthy and q.state == "running"
        assert isinstance(q.error, MeetqConnectionError)
        assert isinstance(q.error.__cause__, ReadOnlyError)
        fetcher_logs = [
            r for r in caplog.records if r.name == "meetq.redis" and "fetcher" in r.getMessage()
        ]
        warnings = [r for r in fetcher_logs if r.levelno == logging.WARNING]
        errors = [r for r in fetcher_logs if r.levelno == logging.ERROR]
        assert len(warnings) == 1 and len(errors) == 1
        assert seen == []
        # promotion: the same server becomes a master, and the worker serves again
        async with redis.asyncio.Redis.from_url(replica.url) as r:
            await r.execute_command("REPLICAOF", "NO", "ONE")
        await async_wait_until(lambda: seen == [1], timeout=20)
        await async_wait_until(lambda: q.healthy, timeout=20)
        assert q.error is None
        assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1
    finally:
        await q.stop()
    assert not q.leases.renewing
    assert await _clients_of_others(replica.url) == []


async def test_stop_closes_everything_even_when_the_final_flush_fails(
    redis_factory: Callable[..., RedisServer],
) -> None:
    server = redis_factory()
    other = redis_factory()
    started = asyncio.Event()
    finish = asyncio.Event()

    async def handler(msg: Message) -> None:
        started.set()
        await finish.wait()

    q = RedisMessageQueue(server.url, "flush", workers=1, retry_budget=0.3, stop_grace=10)
    q.register_handler("t", handler)
    await q.start()
    try:
        await q.publish(Message(type="t"))
        await asyncio.wait_for(started.wait(), 20)
        # a failover demotes our server while the handler runs: its ack cannot be written
        async with redis.asyncio.Redis.from_url(server.url) as r:
            await r.execute_command("REPLICAOF", "127.0.0.1", str(other.port))
        finish.set()
    finally:
        stopping = asyncio.ensure_future(q.stop())
        with contextlib.suppress(MeetqError):  # reporting a lost flush is fine; leaking is not
            await asyncio.wait_for(stopping, 30)
    assert q.state == "stopped"
    assert not q.leases.renewing
    assert await _clients_of_others(server.url) == []
