"""The queue's parts on their own: a `Publisher` that never consumes, a `QueueAdmin` that
needs no worker, one `QueueConfig` for the knobs."""

from __future__ import annotations

import asyncio

import pytest

from helpers import async_wait_until, redis_client
from meetq import Message, Priority, RedisMessageQueue
from meetq.queue import Publisher, QueueAdmin, QueueConfig


async def test_publisher_and_admin_work_without_a_worker(redis_url: str) -> None:
    pub = Publisher(redis_url, "parts")
    admin = QueueAdmin(redis_url, "parts")
    try:
        ids = await pub.publish_batch([Message(type="t", priority=Priority.HIGH) for _ in range(5)])
        mid = await pub.publish(Message(type="t"), delay=60)
        assert len(set(ids)) == 5 and mid not in ids
        stats = await admin.get_stats()
        assert stats["total_published"] == 6
        assert stats["queue_length"]["high"] == 5 and stats["delayed_count"] == 1
        assert "local" not in stats  # no worker, no process-local counters
        assert await admin.dead_letter_count() == 0
        assert await admin.dead_letters() == []
    finally:
        await pub.close()
        await admin.close()
    # what they published is consumed by a queue of the same name
    q = RedisMessageQueue(redis_url, "parts", workers=1)
    seen: list[str] = []
    q.register_handler("t", lambda m: seen.append(m.id))
    async with q:
        await async_wait_until(lambda: sorted(seen) == sorted(ids))


async def test_publisher_and_admin_never_close_a_given_client(redis_url: str) -> None:
    async with redis_client(redis_url) as r:
        async with QueueAdmin(r, "given") as admin:
            pub = Publisher(r, "given")
            await pub.publish(Message(type="t"))
            await pub.close()
            assert (await admin.get_stats())["total_published"] == 1
        assert await r.ping()


def test_config_is_one_checked_object_and_keywords_still_work() -> None:
    cfg = QueueConfig(workers=2, prefetch=3, visibility_timeout=1.0)
    assert (cfg.capacity, cfg.fetch_max, cfg.lease_ms, cfg.ack_wait) == (5, 2, 1000, 0.02)
    with pytest.raises(ValueError):
        QueueConfig(workers=0)
    with pytest.raises(ValueError):
        QueueConfig(visibility_timeout=0)
    with pytest.raises(TypeError):
        cfg.with_changes(no_such_knob=1)
    q = RedisMessageQueue("redis://127.0.0.1:1/0", "cfg", 3, config=cfg, block_timeout=0.5)
    assert q.config.workers == 3  # the keyword wins over the config object
    assert q.config.prefetch == 3 and q.config.block_timeout == 0.5
    assert RedisMessageQueue("redis://127.0.0.1:1/0", "d").config == QueueConfig()
    with pytest.raises(ValueError):
        RedisMessageQueue("redis://127.0.0.1:1/0", "bad{name}")


async def test_start_and_stop_are_idempotent_and_report_state(redis_url: str) -> None:
    q = RedisMessageQueue(redis_url, "state", workers=1)
    done = asyncio.Event()
    q.register_handler("t", lambda m: done.set())
    assert q.state == "new" and not q.healthy
    await q.start()
    await q.start()
    assert q.state == "running" and q.healthy
    await q.publish(Message(type="t"))
    await asyncio.wait_for(done.wait(), 10)
    await q.stop()
    await q.stop()
    assert q.state == "stopped" and not q.leases.renewing
