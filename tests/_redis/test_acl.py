"""meetq under least-privilege ACL users (meetq._redis.acl): a worker user runs the whole
queue but touches no other key, a publisher user publishes but cannot consume."""

from __future__ import annotations

import pytest
import redis
import redis.asyncio

from helpers import RedisServer, async_wait_until, redis_client
from meetq import Message, RedisMessageQueue
from meetq._redis.acl import PUBLISHER_RULES, WORKER_RULES, setuser_command


async def _users(r: redis.asyncio.Redis) -> None:
    await r.execute_command(*setuser_command("worker", "wpw", WORKER_RULES))
    await r.execute_command(*setuser_command("publisher", "ppw", PUBLISHER_RULES))
    await r.set("other:app:key", "precious")


def _url(server: RedisServer, user: str, pw: str) -> str:
    return f"redis://{user}:{pw}@127.0.0.1:{server.port}/0"


async def test_worker_user_runs_the_queue_and_nothing_else(redis_server: RedisServer) -> None:
    async with redis_client(redis_server.url) as admin:
        await _users(admin)
        url = _url(redis_server, "worker", "wpw")
        seen: list[int] = []
        q = RedisMessageQueue(url, "acl-q", workers=2, max_deliveries=3)
        q.register_handler("t", lambda m: seen.append(m.payload["i"]))

        def boom(m: Message) -> None:
            raise RuntimeError("fails on purpose")

        q.register_handler("bad", boom)
        async with q:
            await q.publish_batch([Message(type="t", payload={"i": i}) for i in range(20)])
            await q.publish(Message(type="t", payload={"i": 20}), delay=0.05)
            await q.publish(Message(type="bad", payload={}))
            await async_wait_until(lambda: len(seen) == 21, timeout=30)
            await async_wait_until(q.dead_letter_count, timeout=30)

            async def all_acked() -> bool:  # acks are batched: the last ones follow shortly
                return (await q.get_stats())["total_processed"] == 21

            await async_wait_until(all_acked, timeout=30)
            assert await q.requeue_dead_letters(10) == 1
        assert sorted(seen) == list(range(21))
        worker = redis.asyncio.Redis.from_url(url)
        try:
            for command in (("GET", "other:app:key"), ("SET", "other:app:key", "x"),
                            ("DEL", "other:app:key"), ("FLUSHALL",), ("CONFIG", "GET", "*"),
                            ("KEYS", "*")):  # fmt: skip
                with pytest.raises(redis.exceptions.NoPermissionError):
                    await worker.execute_command(*command)
            with pytest.raises(redis.exceptions.ResponseError, match="can't access"):  # nor Lua
                await worker.eval("return redis.call('GET', 'other:app:key')", 0)
        finally:
            await worker.aclose()
        assert await admin.get("other:app:key") == b"precious"


async def test_publisher_user_publishes_but_cannot_consume(redis_server: RedisServer) -> None:
    async with redis_client(redis_server.url) as admin:
        await _users(admin)
        url = _url(redis_server, "publisher", "ppw")
        publisher = RedisMessageQueue(url, "acl-p")
        try:
            ids = await publisher.publish_batch(
                [Message(type="t", payload={"i": i}) for i in range(5)]
            )
            ids.append(await publisher.publish(Message(id="given-id", type="t", payload={})))
            ids.append(await publisher.publish(Message(type="t", payload={}), delay=30))
            assert len(ids) == 7
        finally:
            await publisher.stop()
        # A worker started with the publisher's credentials gets nothing out of the queue.
        seen: list[str] = []
        thief = RedisMessageQueue(url, "acl-p", workers=1, block_timeout=0.1)
        thief.register_handler("t", lambda m: seen.append(m.id))
        await thief.start()
        try:

            async def refused_in_lua() -> bool:  # its dequeue ran and Redis refused it
                log = await admin.execute_command("ACL", "LOG")
                entries = [dict(zip(e[::2], e[1::2], strict=True)) for e in log]
                return any(
                    e[b"username"] == b"publisher" and e[b"context"] == b"lua" for e in entries
                )

            await async_wait_until(refused_in_lua, timeout=30)
            raw = redis.asyncio.Redis.from_url(url)
            try:
                with pytest.raises(redis.exceptions.NoPermissionError):
                    await raw.lpop("meetq:{acl-p}:ready:1")
                with pytest.raises(redis.exceptions.NoPermissionError):
                    await raw.blpop(["meetq:{acl-p}:wake"], timeout=0.01)
            finally:
                await raw.aclose()
        finally:
            await thief.stop()
        assert seen == []
        assert await admin.llen("meetq:{acl-p}:ready:1") == 6
        assert await admin.zcard("meetq:{acl-p}:inflight") == 0
