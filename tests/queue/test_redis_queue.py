"""RedisMessageQueue semantics against a real redis-server (no mocks, no sleeps as sync)."""

from __future__ import annotations

import asyncio
import itertools
import random
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import redis
import redis.asyncio

from helpers import (
    REDIS_SERVER,
    async_wait_until,
    free_port,
    outlive_first_lease,
    redis_client,
    reply_objects,
    wait_until,
)
from meetq import (
    MeetqConnectionError,
    Message,
    MessageTooLargeError,
    Priority,
    RedisMessageQueue,
)
from meetq._redis import scripts as _scripts
from meetq._redis.keys import QueueKeys
from meetq.queue.fetcher import WAITING


async def snapshot(r: redis.asyncio.Redis, name: str) -> dict[str, Any]:
    """An atomic view (MULTI) of where every id of the queue is."""
    k = QueueKeys(name)
    pipe = r.pipeline(transaction=True)
    for level in (3, 2, 1, 0):
        pipe.lrange(k.ready(level), 0, -1)
    pipe.zrange(k.named("delayed"), 0, -1)
    pipe.zrange(k.named("inflight"), 0, -1)
    pipe.zrange(k.named("dlq"), 0, -1)
    pipe.hkeys(k.named("msg"))
    res = await pipe.execute()
    ready = [x.decode() for lst in res[:4] for x in lst]
    return {
        "ready": ready,
        "delayed": [x.decode() for x in res[4]],
        "inflight": [x.decode() for x in res[5]],
        "dlq": [x.decode() for x in res[6]],
        "msg": {x.decode() for x in res[7] if b"\0" not in x},
    }


def check_exactly_one_place(snap: dict[str, Any]) -> None:
    places = snap["ready"] + snap["delayed"] + snap["inflight"] + snap["dlq"]
    assert len(places) == len(set(places)), "an id is in two places at once"
    assert set(places) == snap["msg"], "stored bodies and queued ids disagree"


# ---------------------------------------------------------------- never started


async def test_publish_stats_and_dlq_ops_work_without_start(redis_url: str) -> None:
    q = RedisMessageQueue(redis_url, "idle")
    try:
        mid = await q.publish(Message(type="a", priority=Priority.HIGH))
        ids = await q.publish_batch([Message(type="a") for _ in range(3)])
        assert mid and len(ids) == 3 and len(set(ids)) == 3
        stats = await q.get_stats()
        assert stats["total_published"] == 4
        assert stats["queue_length"] == {
            "critical": 0,
            "high": 1,
            "normal": 3,
            "low": 0,
            "total": 4,
        }
        assert stats["processing_count"] == 0 and stats["workers"] == 4
        assert await q.dead_letter_count() == 0
        assert await q.requeue_dead_letters(10) == 0
        assert await q.purge_dead_letters() == 0
        assert await q.dead_letters() == []
    finally:
        await q.stop()


async def test_stop_never_closes_a_client_it_was_given(redis_url: str) -> None:
    async with redis_client(redis_url) as r:
        q = RedisMessageQueue(r, "given")
        await q.start()
        await q.stop()
        q2 = RedisMessageQueue(r, "given")
        await q2.stop()
        assert await r.ping()


# ---------------------------------------------------------------- ordering and wake-up


async def test_strict_priority_then_fifo(redis_url: str) -> None:
    q = RedisMessageQueue(redis_url, "prio", workers=1)
    seen: list[tuple[int, int]] = []
    done = asyncio.Event()

    def handler(msg: Message) -> None:
        seen.append((int(msg.priority), msg.payload["n"]))
        if len(seen) == 40:
            done.set()

    q.register_handler("job", handler)
    msgs = [Message(type="job", priority=Priority(n % 4), payload={"n": n}) for n in range(40)]
    random.Random(1).shuffle(msgs)
    await q.publish_batch(msgs)
    async with q:
        await asyncio.wait_for(done.wait(), 10)
    expected = sorted(
        ((int(m.priority), m.payload["n"]) for m in msgs),
        key=lambda pn: -pn[0],
    )
    # FIFO within a priority = publish order, which the stable sort above keeps.
    assert seen == expected


async def test_idle_worker_starts_new_message_within_milliseconds(redis_url: str) -> None:
    q = RedisMessageQueue(redis_url, "wake", workers=2, block_timeout=5.0)
    started: asyncio.Queue[float] = asyncio.Queue()

    async def handler(msg: Message) -> None:
        started.put_nowait(time.perf_counter())

    q.register_handler("ping", handler)
    async with q:
        await q.publish(Message(type="ping"))
        await asyncio.wait_for(started.get(), 5)
        latencies = []
        for _ in range(20):
            # let the fetcher go idle (blocked on the doorbell) before publishing
            await async_wait_until(lambda: q.fetcher.state == WAITING, timeout=5)
            t0 = time.perf_counter()
            await q.publish(Message(type="ping"))
            latencies.append(await asyncio.wait_for(started.get(), 5) - t0)
    latencies.sort()
    # generous bounds: a poll interval would show up as hundreds of milliseconds
    assert latencies[len(latencies) // 2] < 0.05, latencies
    assert latencies[-1] < 0.5, latencies


# ---------------------------------------------------------------- failures and the DLQ


async def test_retries_with_backoff_then_success(redis_url: str) -> None:
    q = RedisMessageQueue(redis_url, "retry", workers=1, retry_backoff=0.05)
    attempts: list[tuple[int, float]] = []
    done = asyncio.Event()

    def handler(msg: Message) -> dict[str, int]:
        attempts.append((msg.retry_count, time.monotonic()))
        if msg.retry_count < 2:
            raise RuntimeError(f"boom {msg.retry_count}")
        done.set()
        return {"ok": 1}

    q.register_handler("flaky", handler)
    async with q:
        await q.publish(Message(type="flaky", max_retries=3))
        await asyncio.wait_for(done.wait(), 10)
        stats = await async_wait_until(_stats_when(q, "total_processed", 1))
    assert [a for a, _ in attempts] == [0, 1, 2]
    gaps = [b - a for (_, a), (_, b) in itertools.pairwise(attempts)]
    assert gaps[0] >= 0.05 * 0.7 and gaps[1] >= 0.1 * 0.7, gaps  # exponential: 0.05, 0.1
    assert stats["total_failed"] == 2 and stats["total_retried"] == 2
    assert stats["total_dead_letter"] == 0 and stats["delayed_count"] == 0


def _stats_when(q: RedisMessageQueue, field: str, value: int) -> Any:
    async def check() -> dict[str, Any] | None:
        stats = await q.get_stats()
        return stats if stats[field] == value else None

    return check


async def test_exhausted_retries_go_to_dlq_and_can_be_requeued_or_purged(redis_url: str) -> None:
    q = RedisMessageQueue(redis_url, "dlq", workers=1, retry_backoff=0.01)
    calls: list[int] = []

    def handler(msg: Message) -> None:
        calls.append(msg.retry_count)
        if msg.payload.get("fail", True):
            raise ValueError("bad input")

    q.register_handler("bad", handler)
    async with q:
        ids = await q.publish_batch(
            [Message(type="bad", max_retries=1, payload={"n": n}) for n in range(3)]
        )
        await async_wait_until(lambda: _count(q.dead_letter_count(), 3))
        stats = await q.get_stats()
        assert stats["total_failed"] == 6 and stats["total_retried"] == 3
        assert stats["total_dead_letter"] == 3 and stats["dead_letter_count"] == 3
        entries = await q.dead_letters(10)
        assert sorted(e.id for e in entries) == sorted(ids)
        for e in entries:
            assert e.reason == "ValueError: bad input"
            assert e.retries == 2 and e.deliveries == 2
            assert e.message is not None and e.message.type == "bad"
            assert abs(e.failed_at - time.time()) < 60
        # requeue resets the retry count: each gets max_retries + 1 fresh attempts
        calls.clear()
        assert await q.requeue_dead_letters(2) == 2
        await async_wait_until(lambda: len(calls) == 4 and _count(q.dead_letter_count(), 3))
        assert sorted(calls) == [0, 0, 1, 1]
        assert await q.purge_dead_letters() == 3
        assert await q.dead_letter_count() == 0
    async with redis_client(redis_url) as r:
        snap = await snapshot(r, "dlq")
        assert snap["msg"] == set() and snap["dlq"] == []


async def _count(aw: Any, n: int) -> bool:
    return bool(await aw == n)


async def test_dlq_is_bounded_by_count(redis_url: str) -> None:
    q = RedisMessageQueue(redis_url, "bounded", workers=1, dead_letter_max=5)
    q.register_handler("x", _raise)
    async with q:
        await q.publish_batch([Message(type="x") for _ in range(12)])
        await async_wait_until(_stats_when(q, "total_dead_letter", 12))
        assert await q.dead_letter_count() == 5
    async with redis_client(redis_url) as r:
        snap = await snapshot(r, "bounded")
        check_exactly_one_place(snap)


def _raise(msg: Message) -> None:
    raise RuntimeError("always")


async def test_unknown_type_goes_to_dlq_at_once(redis_url: str) -> None:
    q = RedisMessageQueue(redis_url, "unknown", workers=1)
    done = asyncio.Event()
    q.register_handler("known", lambda m: done.set())
    async with q:
        await q.publish(Message(type="mystery", max_retries=5))
        await q.publish(Message(type="known"))
        await asyncio.wait_for(done.wait(), 5)
        await async_wait_until(lambda: _count(q.dead_letter_count(), 1))
        [entry] = await q.dead_letters()
        assert "no handler" in entry.reason and "mystery" in entry.reason
        assert entry.retries == 1 and entry.deliveries == 1
        stats = await q.get_stats()
        assert stats["total_retried"] == 0


async def test_handler_exception_and_timeout_reasons(redis_url: str) -> None:
    q = RedisMessageQueue(redis_url, "reasons", workers=2)

    async def slow(msg: Message) -> None:
        await asyncio.Event().wait()

    async def broken(msg: Message) -> None:
        raise KeyError("missing")

    q.register_handler("slow", slow)
    q.register_handler("broken", broken)
    async with q:
        await q.publish(Message(type="slow", timeout=0.1))
        await q.publish(Message(type="broken"))
        await async_wait_until(lambda: _count(q.dead_letter_count(), 2))
        reasons = sorted(e.reason for e in await q.dead_letters())
    assert reasons[0].startswith("KeyError")
    assert reasons[1] == "handler timed out after 0.1s"


async def test_thread_handler_timeout(redis_url: str) -> None:
    q = RedisMessageQueue(redis_url, "thread", workers=2)
    release = threading.Event()
    ok = asyncio.Event()

    def blocking(msg: Message) -> None:
        if msg.payload.get("hang"):
            release.wait(10)

    q.register_handler("t", blocking, in_thread=True)
    q.register_handler("ok", lambda m: ok.set())
    try:
        async with q:
            await q.publish(Message(type="t", timeout=0.1, payload={"hang": True}))
            await async_wait_until(lambda: _count(q.dead_letter_count(), 1))
            await q.publish(Message(type="ok"))
            await asyncio.wait_for(ok.wait(), 5)
    finally:
        release.set()


async def test_malformed_entries_go_to_dlq_and_worker_keeps_serving(redis_url: str) -> None:
    name = "garbage"
    k = QueueKeys(name)
    q = RedisMessageQueue(redis_url, name, workers=1)
    served: list[int] = []
    q.register_handler("ok", lambda m: served.append(m.payload["n"]))
    async with redis_client(redis_url) as r, q:
        await r.hset(
            k.named("msg"), mapping={"g1": b"1{not json", "g2": b"\xff\xfe", "g3": b'1{"type": 5}'}
        )
        await r.rpush(k.ready(1), "g1", "g2", "g3", "ghost")
        await r.zadd(k.named("delayed"), {"ghost2": 0})
        await q.publish(Message(type="ok", payload={"n": 1}))
        await async_wait_until(lambda: served == [1])
        await async_wait_until(lambda: _count(q.dead_letter_count(), 5))
        reasons = {e.id: e.reason for e in await q.dead_letters(10)}
        assert reasons["g1"].startswith("malformed message")
        assert reasons["g2"].startswith("malformed message")
        assert reasons["g3"].startswith("malformed message")
        assert reasons["ghost"].startswith("missing body")
        assert reasons["ghost2"].startswith("missing body")
        await q.publish(Message(type="ok", payload={"n": 2}))
        await async_wait_until(lambda: served == [1, 2])


async def test_dequeue_pops_in_priority_order_past_a_list_of_the_wrong_type(
    redis_url: str,
) -> None:
    """LMPOP takes the best list first and moves on to lower ones until `n` ids; a ready
    key holding something else makes LMPOP fail, and the per-list LPOPs skip just it."""
    name = "pop-order"
    k = QueueKeys(name)
    q = RedisMessageQueue(redis_url, name)
    async with redis_client(redis_url) as r:
        for level, ids in ((3, ["c1"]), (1, ["n1", "n2"]), (0, ["l1", "l2"])):
            await q.publish_batch(Message(type="t", id=i, priority=Priority(level)) for i in ids)
        assert await _dequeued_ids(r, name, 4) == ["c1", "n1", "n2", "l1"]
        await r.set(k.ready(2), "not a list")  # HIGH, above what is left
        await q.publish(Message(type="t", id="n3"))
        assert await _dequeued_ids(r, name, 5) == ["n3", "l2"]
        assert await _dequeued_ids(r, name, 5) == []
    await q.stop()


async def test_dequeue_reports_the_next_due_time(redis_url: str) -> None:
    """wait_ms is the time to the earliest delayed entry or lease deadline, including the
    leases the call itself just made; -1 when nothing is scheduled."""
    name = "next-due"
    q = RedisMessageQueue(redis_url, name)
    async with redis_client(redis_url) as r:
        assert (await _raw_dequeue(r, name, 10, 60_000))[:3] == [0, -1, 0]
        await q.publish(Message(type="t", id="later"), delay=30)
        reply = await _raw_dequeue(r, name, 10, 60_000)
        assert 25_000 < reply[1] <= 30_000
        await q.publish(Message(type="t", id="now"))
        reply = await _raw_dequeue(r, name, 10, 5_000)
        assert reply[3] == b"now"
        assert 4_000 < reply[1] <= 5_000  # the lease just made is due first
    await q.stop()


# ---------------------------------------------------------------- publish options


async def test_publish_is_idempotent_on_id(redis_url: str) -> None:
    q = RedisMessageQueue(redis_url, "idem", workers=1)
    seen: list[str] = []
    q.register_handler("x", lambda m: seen.append(m.id))
    msg = Message(type="x", id="fixed-id")
    assert await q.publish(msg) == "fixed-id"
    assert await q.publish(Message(type="x", id="fixed-id")) == "fixed-id"
    await q.publish_batch([Message(type="x", id="fixed-id"), Message(type="x", id="other")])
    stats = await q.get_stats()
    assert stats["total_published"] == 2 and stats["queue_length"]["total"] == 2
    async with q:
        await async_wait_until(_stats_when(q, "total_processed", 2))
    assert sorted(seen) == ["fixed-id", "other"]


async def test_publish_batch_mixes_kinds_and_stores_each_id_once(redis_url: str) -> None:
    """Made ids (MULTI/EXEC path), given ids (deduped by the script), repeats within the
    batch, ids already stored, delayed messages and every priority in one batch."""
    q = RedisMessageQueue(redis_url, "mixed", workers=4)
    await q.publish(Message(type="x", id="old", payload={"n": "old"}))
    batch = [Message(type="x", payload={"n": i}, priority=Priority(i % 4)) for i in range(600)] + [
        Message(type="x", id="old", payload={"n": "old-again"}),
        Message(type="x", id="twice", payload={"n": "twice-1"}, priority=Priority.HIGH),
        Message(type="x", id="twice", payload={"n": "twice-2"}, priority=Priority.HIGH),
        Message(type="x", payload={"n": "later"}, deliver_at=time.time() + 0.2),
    ]
    ids = await q.publish_batch(batch)
    assert len(ids) == 604 and len(set(ids)) == 603
    stats = await q.get_stats()
    assert stats["total_published"] == 1 + 600 + 1 + 1  # old, the 600, twice, later
    seen: list[Any] = []
    q.register_handler("x", lambda m: seen.append(m.payload["n"]))
    async with q:
        await async_wait_until(lambda: len(seen) == 603, timeout=10)
    assert sorted(n for n in seen if isinstance(n, int)) == list(range(600))
    assert {n for n in seen if isinstance(n, str)} == {"old", "twice-1", "later"}


async def test_delay_and_deliver_at(redis_url: str) -> None:
    q = RedisMessageQueue(redis_url, "delay", workers=2)
    started: dict[str, float] = {}
    q.register_handler("d", lambda m: started.__setitem__(m.payload["k"], time.time()))
    async with q:
        t0 = time.time()
        await q.publish(Message(type="d", payload={"k": "delay"}), delay=0.3)
        await q.publish(Message(type="d", payload={"k": "at"}), deliver_at=t0 + 0.2)
        await q.publish(Message(type="d", payload={"k": "now"}))
        stats = await q.get_stats()
        assert stats["delayed_count"] + len(started) >= 2
        await async_wait_until(lambda: len(started) == 3, timeout=5)
    assert started["now"] - t0 < 0.2
    assert 0.2 * 0.9 <= started["at"] - t0 < 1.5
    assert 0.3 * 0.9 <= started["delay"] - t0 < 1.5


async def test_reply_to_receives_result_and_failure(redis_url: str) -> None:
    q = RedisMessageQueue(redis_url, "reply", workers=2, result_ttl=30)

    async def handler(msg: Message) -> dict[str, Any]:
        if msg.payload.get("fail"):
            raise RuntimeError("nope")
        return {"echo": msg.payload["v"]}

    q.register_handler("r", handler)
    async with redis_client(redis_url) as r, q:
        # reply keys of the queue itself (CONTRACTS.md 4); anything else is refused
        a, b = "meetq:{reply}:reply:a", "meetq:{reply}:reply:b"
        mid = await q.publish(Message(type="r", payload={"v": 7}, reply_to=a))
        bad = await q.publish(Message(type="r", payload={"fail": 1}, reply_to=b))
        _, raw = await r.blpop([a], timeout=5)  # type: ignore[misc]
        [reply] = reply_objects(raw)
        assert reply["id"] == mid and reply["status"] == "completed"
        assert reply["result"] == {"echo": 7} and reply["error"] is None
        _, raw = await r.blpop([b], timeout=5)  # type: ignore[misc]
        reply = orjson.loads(raw)
        assert reply["id"] == bad and reply["status"] == "failed"
        assert reply["error"] == "RuntimeError: nope"


# ---------------------------------------------------------------- leases


async def _raw_dequeue(
    r: redis.asyncio.Redis,
    name: str,
    n: int,
    lease_ms: int,
    acks: list[str] | None = None,
    max_deliveries: int = 10,
) -> list[Any]:
    acks = acks or []
    args = [n, lease_ms, max_deliveries, 1000, 0, len(acks) // 2, *acks]
    res: list[Any] = await _scripts.dequeue(r, QueueKeys(name).all, args)
    return res


async def test_expired_lease_is_redelivered_and_stale_ack_is_ignored(redis_url: str) -> None:
    name = "lease"
    q = RedisMessageQueue(redis_url, name)
    async with redis_client(redis_url) as r:
        mid = await q.publish(Message(type="x"))
        first = await _raw_dequeue(r, name, 1, lease_ms=50)  # a worker that then "dies"
        assert first[3].decode() == mid and first[5] == 1
        token1 = first[4].decode()
        await async_wait_until(lambda: _lease_expired(r, name, mid))
        second = await _raw_dequeue(r, name, 1, lease_ms=60_000)
        assert second[3].decode() == mid and second[5] == 2  # a second delivery
        token2 = second[4].decode()
        assert token2 != token1
        stale = await _raw_dequeue(r, name, 0, 60_000, acks=[mid, token1])
        assert stale[0] == 0
        snap = await snapshot(r, name)
        assert snap["inflight"] == [mid] and mid in snap["msg"]
        fresh = await _raw_dequeue(r, name, 0, 60_000, acks=[mid, token2])
        assert fresh[0] == 1
        assert await snapshot(r, name) == {
            "ready": [],
            "delayed": [],
            "inflight": [],
            "dlq": [],
            "msg": set(),
        }
    await q.stop()


async def _dequeued_ids(r: redis.asyncio.Redis, name: str, n: int) -> list[str]:
    reply = await _raw_dequeue(r, name, n, 60_000)
    return [x.decode() for x in reply[3::5]]


async def _lease_expired(r: redis.asyncio.Redis, name: str, mid: str) -> bool:
    score = await r.zscore(QueueKeys(name).named("inflight"), mid)
    sec, usec = await r.time()
    return score is not None and score < sec * 1000 + usec / 1000


async def test_worker_picks_up_lease_of_lost_worker(redis_url: str) -> None:
    name = "lost"
    q = RedisMessageQueue(redis_url, name, workers=1)
    got: list[int] = []
    q.register_handler("x", lambda m: got.append(m.deliveries))
    async with redis_client(redis_url) as r:
        await q.publish(Message(type="x"))
        await _raw_dequeue(r, name, 1, lease_ms=100)
        async with q:
            await async_wait_until(lambda: got == [2], timeout=5)


async def test_lease_expiry_past_max_deliveries_dead_letters(redis_url: str) -> None:
    name = "poison"
    q = RedisMessageQueue(redis_url, name, workers=1, max_deliveries=1)
    async with redis_client(redis_url) as r:
        mid = await q.publish(Message(type="x"))
        await _raw_dequeue(r, name, 1, lease_ms=20)
        await async_wait_until(lambda: _lease_expired(r, name, mid))
        await _raw_dequeue(r, name, 1, lease_ms=1000, max_deliveries=1)
        [entry] = await q.dead_letters()
        assert entry.reason.startswith("lease expired after 1 deliveries")
    await q.stop()


async def test_cpu_bound_sync_handler_keeps_its_lease(redis_url: str) -> None:
    name = "busy"
    q = RedisMessageQueue(redis_url, name, workers=1, visibility_timeout=0.3)
    seen: list[tuple[int, bool]] = []
    sync = redis.Redis.from_url(redis_url)

    def handler(msg: Message) -> None:
        end = time.monotonic() + 1.2  # four lease lengths without yielding to the loop
        while time.monotonic() < end:
            pass
        score = sync.zscore(QueueKeys(name).named("inflight"), msg.id)
        sec, usec = sync.time()
        seen.append((msg.deliveries, score is not None and score > sec * 1000 + usec / 1000))

    q.register_handler("cpu", handler)
    try:
        async with q:
            await q.publish(Message(type="cpu", timeout=10))
            await async_wait_until(_stats_when(q, "total_processed", 1), timeout=10)
    finally:
        sync.close()
    assert seen == [(1, True)]


# ---------------------------------------------------------------- the invariant, stats, stop


async def test_every_message_in_exactly_one_place_during_a_run(redis_url: str) -> None:
    name = "inv"
    q = RedisMessageQueue(redis_url, name, workers=4, retry_backoff=0.01)
    done: set[int] = set()

    async def handler(msg: Message) -> None:
        await asyncio.sleep(0)
        n = msg.payload["n"]
        if n % 7 == 0 and msg.retry_count == 0:
            raise RuntimeError("first attempt fails")
        if n % 11 == 0:
            raise RuntimeError("always fails")
        done.add(n)

    q.register_handler("w", handler)
    total = 300
    async with redis_client(redis_url) as r, q:
        msgs = [
            Message(type="w", priority=Priority(n % 4), payload={"n": n}, max_retries=1)
            for n in range(total)
        ]
        await q.publish_batch(msgs[:150])
        checks = 0
        published = 150
        while True:
            if published < total:
                await q.publish_batch(msgs[published : published + 25])
                published += 25
            check_exactly_one_place(await snapshot(r, name))
            checks += 1
            stats = await q.get_stats()
            if stats["total_processed"] + stats["dead_letter_count"] == total:
                break  # (each sample's Redis reads yield the loop to the workers)
        assert checks > 3
        dead = {e.message.payload["n"] for e in await q.dead_letters(100) if e.message}
        assert dead == {n for n in range(total) if n % 11 == 0}
        assert done | dead == set(range(total))
        final = await snapshot(r, name)
        check_exactly_one_place(final)
        assert final["ready"] == final["delayed"] == final["inflight"] == []


async def test_stop_returns_unstarted_and_finishes_running(redis_url: str) -> None:
    name = "stop"
    q = RedisMessageQueue(redis_url, name, workers=1, prefetch=10)
    entered = asyncio.Event()
    release = asyncio.Event()
    finished: list[int] = []

    async def handler(msg: Message) -> None:
        entered.set()
        await release.wait()
        finished.append(msg.payload["n"])

    q.register_handler("s", handler)
    await q.publish_batch([Message(type="s", payload={"n": n}) for n in range(5)])
    await q.start()
    try:
        await asyncio.wait_for(entered.wait(), 5)
        await async_wait_until(_stats_when(q, "processing_count", 5))
        stopping = asyncio.ensure_future(q.stop())
        # the four unstarted ones go back to ready at once, while the handler still runs
        await async_wait_until(lambda: _ready_len(q, 4))
        assert not stopping.done()
        release.set()
        await asyncio.wait_for(stopping, 10)
    finally:
        release.set()
        await q.stop()
    assert finished == [0]
    stats = await q.get_stats()
    assert stats["total_processed"] == 1 and stats["processing_count"] == 0
    async with redis_client(redis_url) as r:
        snap = await snapshot(r, name)
        check_exactly_one_place(snap)
        assert len(snap["ready"]) == 4
        # released messages were not counted as deliveries
        leases = await r.hmget(QueueKeys(name).named("msg"), [i + "\0l" for i in snap["ready"]])
        assert leases == [b"-:0:0"] * 4


async def _ready_len(q: RedisMessageQueue, n: int) -> bool:
    return bool((await q.get_stats())["queue_length"]["total"] == n)


async def test_stop_past_grace_cancels_and_releases(redis_url: str) -> None:
    q = RedisMessageQueue(redis_url, "grace", workers=1, stop_grace=0.1)
    entered = asyncio.Event()

    async def hang(msg: Message) -> None:
        entered.set()
        await asyncio.Event().wait()

    q.register_handler("h", hang)
    await q.publish(Message(type="h", timeout=60))
    await q.start()
    try:
        await asyncio.wait_for(entered.wait(), 5)
    finally:
        await q.stop()
    stats = await q.get_stats()
    assert stats["queue_length"]["total"] == 1 and stats["processing_count"] == 0
    assert stats["total_failed"] == 0


async def test_publish_raises_connection_error_after_budget() -> None:
    q = RedisMessageQueue(f"redis://127.0.0.1:{free_port()}/0", "down", retry_budget=0.3)
    t0 = time.monotonic()
    with pytest.raises(MeetqConnectionError) as info:
        await q.publish(Message(type="x"))
    assert info.value.__cause__ is not None
    assert time.monotonic() - t0 < 5
    await q.stop()


async def test_stats_count_everything(redis_url: str) -> None:
    q = RedisMessageQueue(redis_url, "stats", workers=2, retry_backoff=60)
    q.register_handler("ok", lambda m: None)
    q.register_handler("bad", _raise)
    async with q:
        await q.publish_batch([Message(type="ok") for _ in range(5)])
        await q.publish(Message(type="bad", max_retries=1))
        await q.publish(Message(type="bad"))
        await async_wait_until(_stats_when(q, "total_failed", 2))
        stats = await async_wait_until(_stats_when(q, "total_processed", 5))
    assert stats["total_published"] == 7
    assert stats["total_processed"] == 5
    assert stats["total_retried"] == 1 and stats["delayed_count"] == 1
    assert stats["total_dead_letter"] == 1 and stats["dead_letter_count"] == 1
    assert stats["queue_length"]["total"] == 0 and stats["processing_count"] == 0
    assert stats["local"] == {"processed": 5, "failed": 2}


async def test_stop_of_an_idle_worker_is_prompt(redis_url: str) -> None:
    q = RedisMessageQueue(redis_url, "prompt", block_timeout=5.0)
    q.register_handler("x", lambda m: None)
    await q.start()
    await async_wait_until(lambda: q.fetcher.state == WAITING, timeout=5)
    t0 = time.monotonic()
    await q.stop()
    assert time.monotonic() - t0 < 2.0
    stats = await q.get_stats()
    assert stats["processing_count"] == 0


@pytest.mark.parametrize("resp_connection", [True, False])
async def test_given_client_and_both_connection_kinds(
    redis_url: str, resp_connection: bool
) -> None:
    seen: list[int] = []
    async with redis_client(redis_url) as r:
        q = RedisMessageQueue(r, "kinds", workers=2, resp_connection=resp_connection)
        q.register_handler("k", lambda m: seen.append(m.payload["n"]))
        async with q:
            await q.publish_batch([Message(type="k", payload={"n": n}) for n in range(50)])
            await async_wait_until(lambda: len(seen) == 50)
            await async_wait_until(lambda: q.fetcher.state == WAITING, timeout=5)
            await q.publish(Message(type="k", payload={"n": 50}))
            await async_wait_until(lambda: len(seen) == 51)
        assert sorted(seen) == list(range(51))
        assert await r.ping()


async def test_critical_overtakes_a_prefetched_backlog(redis_url: str) -> None:
    q = RedisMessageQueue(redis_url, "overtake", workers=1, prefetch=50)
    order: list[str] = []
    gate = asyncio.Event()

    async def handler(msg: Message) -> None:
        await gate.wait()
        order.append(msg.payload["k"])

    q.register_handler("o", handler)
    await q.publish_batch(
        [Message(type="o", priority=Priority.LOW, payload={"k": f"low{n}"}) for n in range(10)]
    )
    async with q:
        await async_wait_until(_stats_when(q, "processing_count", 10))
        await q.publish(Message(type="o", priority=Priority.CRITICAL, payload={"k": "crit"}))
        await async_wait_until(lambda: len(q.leases) == 11)  # fetched into the local buffers
        gate.set()
        await async_wait_until(lambda: len(order) == 11)
    assert order[:2] == ["low0", "crit"]
    assert order[2:] == [f"low{n}" for n in range(1, 10)]


@pytest.mark.parametrize("resp_connection", [True, False])
async def test_acl_user_in_url(redis_url: str, resp_connection: bool) -> None:
    async with redis_client(redis_url) as admin:
        await admin.execute_command(
            "ACL", "SETUSER", "worker", "on", ">s3cret:pw", "~meetq:*", "&*", "+@all"
        )
    port = redis_url.rsplit(":", 1)[1].split("/")[0]
    url = f"redis://worker:s3cret%3Apw@127.0.0.1:{port}/0"
    q = RedisMessageQueue(url, "acl", visibility_timeout=1.0, resp_connection=resp_connection)
    seen: list[tuple[str, int]] = []

    async with redis_client(redis_url) as r:

        async def slow(msg: Message) -> None:
            await outlive_first_lease(r, "acl", msg.id)  # the renewer authenticates too
            seen.append((msg.id, msg.deliveries))

        q.register_handler("a", slow)
        async with q:
            mid = await q.publish(Message(type="a"))
            await async_wait_until(lambda: seen, timeout=20)
            stats = await async_wait_until(_stats_when(q, "total_processed", 1))
    assert seen == [(mid, 1)]
    assert stats["total_published"] == 1


async def test_dlq_is_bounded_by_age(redis_url: str) -> None:
    q = RedisMessageQueue(redis_url, "aged", workers=1, dead_letter_max_age=0.2)
    q.register_handler("x", _raise)
    async with redis_client(redis_url) as r, q:
        first = await q.publish(Message(type="x"))
        await async_wait_until(lambda: _count(q.dead_letter_count(), 1))
        dlq_key = QueueKeys("aged").named("dlq")

        async def aged() -> bool:
            died = await r.zscore(dlq_key, first)
            sec, usec = await r.time()
            return died is not None and sec * 1000 + usec / 1000 - died > 250

        await async_wait_until(aged)
        second = await q.publish(Message(type="x"))
        await async_wait_until(_stats_when(q, "total_dead_letter", 2))
        assert [e.id for e in await q.dead_letters()] == [second]
        snap = await snapshot(r, "aged")
        check_exactly_one_place(snap)


async def test_script_flush_is_survived_without_delay(redis_url: str) -> None:
    q = RedisMessageQueue(redis_url, "flush", block_timeout=5.0)
    started = asyncio.Queue[float]()
    q.register_handler("f", lambda m: started.put_nowait(time.monotonic()))
    async with redis_client(redis_url) as r, q:
        for _ in range(3):
            await async_wait_until(lambda: q.fetcher.state == WAITING, timeout=5)
            await r.script_flush()
            t0 = time.monotonic()
            await q.publish(Message(type="f"))
            assert await asyncio.wait_for(started.get(), 5) - t0 < 1.0


async def test_replies_are_written_after_a_script_flush(redis_url: str) -> None:
    """The reply call rides the fetch connection as a plain future; a NOSCRIPT answer
    hands it to the retrying path (EVAL), so the replies and acks still land, once."""
    q = RedisMessageQueue(redis_url, "flushreply", workers=4, result_ttl=30)
    gate = asyncio.Event()
    running: list[str] = []

    async def handler(msg: Message) -> dict[str, Any]:
        running.append(msg.id)
        await gate.wait()
        return {"v": msg.payload["v"]}

    q.register_handler("r", handler)
    async with redis_client(redis_url) as r, q:
        key = "meetq:{flushreply}:reply:a"
        ids = [await q.publish(Message(type="r", payload={"v": i}, reply_to=key)) for i in range(3)]
        await async_wait_until(lambda: len(running) == 3)
        await r.script_flush()
        gate.set()
        replies: list[dict[str, Any]] = []
        while len(replies) < 3:
            _, raw = await r.blpop([key], timeout=5)  # type: ignore[misc]
            replies += reply_objects(raw)
        assert sorted(x["id"] for x in replies) == sorted(ids)
        assert sorted(x["result"]["v"] for x in replies) == [0, 1, 2]
        assert all(x["status"] == "completed" for x in replies)
        await async_wait_until(_stats_when(q, "total_processed", 3))
        await async_wait_until(lambda: not q.leases.held)
        assert await r.llen(key) == 0
        snap = await snapshot(r, "flushreply")
        check_exactly_one_place(snap)


async def test_async_callable_object_is_awaited(redis_url: str) -> None:
    seen: list[str] = []

    class Handler:
        async def __call__(self, msg: Message) -> None:
            await asyncio.sleep(0)
            seen.append(msg.id)

    q = RedisMessageQueue(redis_url, "callable")
    q.register_handler("c", Handler())
    async with q:
        mid = await q.publish(Message(type="c"))
        await async_wait_until(lambda: seen == [mid])
        await async_wait_until(_stats_when(q, "total_processed", 1))


async def test_stored_body_over_the_size_limit_is_dead_lettered(redis_url: str) -> None:
    big_publisher = RedisMessageQueue(redis_url, "size")
    q = RedisMessageQueue(redis_url, "size", max_message_size=500)
    served: list[int] = []
    q.register_handler("s", lambda m: served.append(len(m.payload["x"])))
    try:
        await big_publisher.publish(Message(type="s", payload={"x": "y" * 2000}))
        await big_publisher.publish(Message(type="s", payload={"x": "y" * 10}))
        async with q:
            await async_wait_until(lambda: served == [10])
            await async_wait_until(lambda: _count(q.dead_letter_count(), 1))
            [entry] = await q.dead_letters()
        assert entry.reason.startswith("malformed message: stored message is")
        assert "limit 500" in entry.reason
    finally:
        await big_publisher.stop()


@pytest.fixture
def tls_url(redis_factory: Any, tmp_path: Any) -> str:
    """A redis-server that also listens with TLS (self-signed certificate for 127.0.0.1)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl not available to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    tls_port = free_port()
    redis_factory(
        "--tls-port", str(tls_port), "--tls-cert-file", str(cert), "--tls-key-file", str(key),
        "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no",
    )  # fmt: skip
    return f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs={cert}"


@pytest.mark.parametrize("resp_connection", [True, False])
async def test_rediss_url(tls_url: str, resp_connection: bool) -> None:
    # A lease that outlasts the renewer's first TLS connect on a loaded box (at 0.3 s, and
    # once at 1 s under a load of 14 on 2 cores, it lapsed: the message ran twice, which the
    # check below catches). The test lasts about one lease.
    q = RedisMessageQueue(tls_url, "tls", visibility_timeout=2.0, resp_connection=resp_connection)
    seen: list[tuple[str, int]] = []

    async with redis_client(tls_url) as r:

        async def slow(msg: Message) -> None:
            await outlive_first_lease(r, "tls", msg.id)  # the renewer speaks TLS as well
            seen.append((msg.id, msg.deliveries))

        q.register_handler("t", slow)
        async with q:
            mid = await q.publish(Message(type="t"))
            await async_wait_until(lambda: seen, timeout=20)
            stats = await async_wait_until(_stats_when(q, "total_processed", 1))
    assert seen == [(mid, 1)]
    assert stats["total_published"] == 1


async def test_handler_raising_cancelled_error_is_a_failure_not_a_dead_worker(
    redis_url: str,
) -> None:
    q = RedisMessageQueue(redis_url, "cancelled", workers=1)
    ok: list[str] = []

    async def handler(msg: Message) -> None:
        if msg.payload.get("cancel"):
            fut = asyncio.get_running_loop().create_future()
            fut.cancel()
            await fut
        ok.append(msg.id)

    def sync_handler(msg: Message) -> None:
        raise asyncio.CancelledError

    q.register_handler("c", handler)
    q.register_handler("s", sync_handler)
    async with q:
        await q.publish(Message(type="c", payload={"cancel": True}))
        await q.publish(Message(type="s"))
        await async_wait_until(lambda: _count(q.dead_letter_count(), 2))
        mid = await q.publish(Message(type="c"))
        await async_wait_until(lambda: ok == [mid])
        reasons = sorted(e.reason for e in await q.dead_letters())
    assert reasons == ["CancelledError: ", "handler was cancelled"]


@pytest.fixture
def sentinel_port(redis_server: Any, tmp_path: Any) -> Iterator[int]:
    """A redis-sentinel process watching `redis_server` as "mymaster"; always stopped."""
    port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor mymaster 127.0.0.1 {redis_server.port} 1\n"
    )
    proc = subprocess.Popen(
        [REDIS_SERVER, str(conf), "--sentinel"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        sync = redis.Redis(port=port, socket_timeout=1)
        wait_until(lambda: _sentinel_knows_master(sync), timeout=10)
        sync.close()
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def _sentinel_knows_master(sync: redis.Redis) -> bool:
    try:
        return bool(sync.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster"))
    except redis.RedisError:
        return False


async def test_sentinel_managed_client(sentinel_port: int) -> None:
    sentinel = redis.asyncio.Sentinel([("127.0.0.1", sentinel_port)], socket_timeout=1.0)
    master = sentinel.master_for("mymaster", socket_timeout=3.0)
    seen: list[int] = []
    q = RedisMessageQueue(master, "sentinel", workers=2, visibility_timeout=1.0, block_timeout=0.5)

    async def slow(msg: Message) -> None:
        await outlive_first_lease(master, "sentinel", msg.id)  # renewed via the shared client
        assert msg.deliveries == 1
        seen.append(msg.payload["n"])

    q.register_handler("s", slow)
    try:
        async with q:
            await q.publish_batch([Message(type="s", payload={"n": n}) for n in range(4)])
            await async_wait_until(lambda: len(seen) == 4, timeout=10)
            await async_wait_until(_stats_when(q, "total_processed", 4))
            await async_wait_until(lambda: q.fetcher.state == WAITING, timeout=5)
            await q.publish(Message(type="s", payload={"n": 4}))
            await async_wait_until(lambda: len(seen) == 5, timeout=10)
        assert sorted(seen) == list(range(5))
        assert await master.ping()  # the caller's client stays open
    finally:
        await master.aclose()


async def test_redis_cluster_client(redis_factory: Any) -> None:
    """A one-node Redis Cluster (all slots on one server): every script names its keys,
    so redis-py's cluster client routes them; the queue shares that client."""
    server = redis_factory(
        "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
        "--cluster-port", str(free_port()),  # port + 10000 may not exist
    )  # fmt: skip
    async with redis_client(server.url) as admin:
        await admin.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)

        async def cluster_ok() -> bool:
            info = await admin.execute_command("CLUSTER", "INFO")
            text = info.decode() if isinstance(info, bytes) else str(info)
            return "cluster_state:ok" in text

        await async_wait_until(cluster_ok, timeout=10)
    cluster = redis.asyncio.RedisCluster(host="127.0.0.1", port=server.port)
    seen: list[int] = []
    # no CLIENT UNBLOCK on a shared pool: stop() waits out the doorbell, so keep it short
    q = RedisMessageQueue(cluster, "clustered", workers=2, block_timeout=0.5)
    q.register_handler("c", lambda m: seen.append(m.payload["n"]))
    try:
        async with q:
            await q.publish_batch([Message(type="c", payload={"n": n}) for n in range(20)])
            await async_wait_until(lambda: len(seen) == 20, timeout=10)
            await async_wait_until(_stats_when(q, "total_processed", 20))
            await q.publish(Message(type="c", payload={"n": 20}))
            await async_wait_until(lambda: len(seen) == 21, timeout=10)
        assert sorted(seen) == list(range(21))
    finally:
        await cluster.aclose()


async def test_long_sync_batches_do_not_let_prefetched_leases_expire(redis_url: str) -> None:
    """A batch of slow sync handlers takes many lease lengths; the next batch, already
    leased in Redis while they run, must still be renewed (no redelivery, no duplicate)."""
    # (leases of prefetched messages are renewed while the event loop answers, and a loop
    # silent for a second counts as stuck: a 1 s lease keeps a loaded box's pauses apart
    # from that; the batch still takes three lease lengths)
    q = RedisMessageQueue(redis_url, "longbatch", workers=1, prefetch=199, visibility_timeout=1.0)
    runs: list[tuple[int, int]] = []

    def busy(msg: Message) -> None:
        end = time.monotonic() + 0.015
        while time.monotonic() < end:
            pass
        runs.append((msg.payload["n"], msg.deliveries))

    q.register_handler("b", busy)
    await q.publish_batch([Message(type="b", payload={"n": n}) for n in range(200)])
    async with q:
        await async_wait_until(lambda: len(runs) >= 200, timeout=30)
        await async_wait_until(_stats_when(q, "total_processed", 200))
    assert sorted(n for n, _ in runs) == list(range(200))
    assert {d for _, d in runs} == {1}


async def test_publish_batch_with_a_bad_message_midway_can_be_republished(redis_url: str) -> None:
    """Chunks before a message that fails to encode are already stored; after fixing it,
    the same batch published again stores each id exactly once."""
    q = RedisMessageQueue(redis_url, "badbatch", max_message_size=4096)
    msgs = [Message(type="t", payload={"n": n}) for n in range(2500)]
    msgs[2200].payload["blob"] = "x" * 10_000
    with pytest.raises(MessageTooLargeError):
        await q.publish_batch(msgs)
    del msgs[2200].payload["blob"]
    ids = await q.publish_batch(msgs)
    assert len(set(ids)) == 2500
    stats = await q.get_stats()
    assert stats["queue_length"]["total"] == 2500
    assert stats["total_published"] == 2500
    await q.stop()
