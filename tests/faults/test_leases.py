"""Issue 12 item 2 with real worker processes: a lease is renewed only while its process
shows progress, never past what the message allows, and a prefetched message is renewed
or handed back. (A sync handler blocking in time.sleep blocks its whole event loop, so
these need a process of their own.)"""

from __future__ import annotations

import asyncio

import redis.asyncio

from fault_workers import WorkerProcess, check_queue, read_log, worker_processes
from helpers import async_wait_until, redis_client
from meetq import Message, RedisMessageQueue


async def _started_by(r: redis.asyncio.Redis, log_key: str, mid: str, pid: int) -> bool:
    log = await read_log(r, log_key)
    return any(kind == "S" and i == mid and p == pid for kind, i, p in log.entries)


async def _completed(r: redis.asyncio.Redis, log_key: str, ids: set[str]) -> bool:
    return (await read_log(r, log_key)).completed >= ids


async def test_a_wedged_sync_handler_lets_its_lease_lapse(redis_url: str) -> None:
    """Issue 12 item 2: the renewer extended the lease of a sync handler blocked in
    time.sleep forever. Past its `timeout` plus a margin the lease lapses and another
    worker gets the message."""
    name, log_key = "wedged", "wedged:log"
    q = RedisMessageQueue(redis_url, name)
    loop = asyncio.get_running_loop()
    async with redis_client(redis_url) as r:
        mid = await q.publish(
            Message(type="sync_ok", payload={"sleep": 60, "first_only": True}, timeout=1.0)
        )
        with worker_processes(redis_url, name, log_key, workers=1, visibility_timeout=0.5) as [a]:
            await async_wait_until(lambda: _started_by(r, log_key, mid, a.pid), timeout=30)
            b = await loop.run_in_executor(
                None, WorkerProcess(redis_url, name, log_key, workers=1).start
            )
            try:
                await async_wait_until(lambda: _completed(r, log_key, {mid}), timeout=20)
                log = await read_log(r, log_key)
                assert log.pids([mid]) == {b.pid}
                await async_wait_until(lambda: _processed(q, 1), timeout=10)
            finally:
                b.close()
    await q.stop()


async def _processed(q: RedisMessageQueue, n: int) -> bool:
    return bool((await q.get_stats())["total_processed"] >= n)


async def test_prefetched_messages_behind_a_long_sync_handler_run_once(redis_url: str) -> None:
    """Issue 12 item 2: messages fetched in the same batch behind a long sync handler had
    no lease renewal: another worker ran them, then the first ran them again."""
    name, log_key = "behind", "behind:log"
    q = RedisMessageQueue(redis_url, name)
    loop = asyncio.get_running_loop()
    async with redis_client(redis_url) as r:
        slow = Message(type="sync_ok", payload={"sleep": 3.0}, timeout=30.0)
        rest = [Message(type="ok") for _ in range(5)]
        ids = await q.publish_batch([slow, *rest])
        config = {"workers": 1, "prefetch": 8, "visibility_timeout": 0.5}
        with worker_processes(redis_url, name, log_key, **config) as [a]:
            await async_wait_until(lambda: _started_by(r, log_key, ids[0], a.pid), timeout=30)
            b = await loop.run_in_executor(
                None, WorkerProcess(redis_url, name, log_key, workers=1).start
            )
            try:
                await async_wait_until(lambda: _completed(r, log_key, set(ids)), timeout=30)
                await async_wait_until(lambda: _processed(q, len(ids)), timeout=30)
                log = await read_log(r, log_key)
                runs = {mid: log.starts(mid) for mid in ids}
                assert runs == dict.fromkeys(ids, 1), (runs, log.entries, a.pid, a.stderr())
                check = await check_queue(r, name, ids, log_key)
                assert check.ok, check.describe()
            finally:
                b.close()
    await q.stop()


async def test_a_hanging_async_handler_without_a_timeout_is_not_held_forever(
    redis_url: str,
) -> None:
    """Issue 12 item 2: an async handler awaiting forever with timeout=0 held its lease
    forever. With no timeout of its own a message runs at most the queue's
    `max_handler_time`, then fails like a timeout (here: to the DLQ)."""
    name, log_key = "hang0", "hang0:log"
    q = RedisMessageQueue(redis_url, name)
    async with redis_client(redis_url) as r:
        mid = await q.publish(Message(type="hang", timeout=0))
        config = {"workers": 2, "visibility_timeout": 0.5, "max_handler_time": 1.0}
        with worker_processes(redis_url, name, log_key, **config):
            await async_wait_until(lambda: _dead(q, 1), timeout=20)
            ok = await q.publish(Message(type="ok"))
            await async_wait_until(lambda: _completed(r, log_key, {ok}), timeout=10)
        [entry] = await q.dead_letters()
        assert entry.id == mid and "timed out" in entry.reason
    await q.stop()


async def _dead(q: RedisMessageQueue, n: int) -> bool:
    return await q.dead_letter_count() >= n
