"""Regression tests of issue 12 (items 1-4, 7): each reproduces a hole found by experiment,
against a real redis-server, through the public API or by writing into the queue's keys as
a foreign client would. (Tests that need a worker process of their own are in
tests/faults/test_leases.py.)"""

from __future__ import annotations

import threading
import time
from typing import Any

import orjson
import pytest
import redis
import redis.asyncio

from helpers import async_wait_until, redis_client, reply_objects
from meetq import MeetqError, Message, RedisMessageQueue
from meetq._redis import scripts as _scripts
from meetq._redis.keys import QueueKeys
from meetq.dispatch.status import done_key


def reply_key(queue: str, name: str) -> str:
    """The reply key a dispatcher creates (CONTRACTS.md §4), spelled out."""
    return f"meetq:{{{queue}}}:reply:{name}"


async def dispatched_ids(r: Any, queue: str, *names: str) -> dict[str, str]:
    """Ids as a dispatcher makes them (`<unique>.<deadline second>@<queue>`, a minute
    ahead): their outcomes are recorded in the queue's done hash of that second."""
    second = int((await r.time())[0]) + 60
    return {n: f"{n}.{second}@{queue}" for n in names}


async def recorded(r: Any, mid: str) -> dict[str, Any] | None:
    """The outcome recorded for `mid` (its reply object), if any."""
    raw = await r.hget(done_key(mid), mid)
    return None if raw is None else dict(orjson.loads(raw))


async def settled(q: RedisMessageQueue, n: int) -> bool:
    """True once `n` messages have reached an end: acked or dead-lettered."""
    s = await q.get_stats()
    return bool(s["total_processed"] + s["dead_letter_count"] >= n)


async def reasons(q: RedisMessageQueue) -> dict[str, str]:
    return {e.id: e.reason for e in await q.dead_letters(100)}


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


class Outlandish(BaseException):
    """Neither an Exception nor a cancellation."""


# ---------------------------------------------------------------- item 1: replies


async def test_reply_to_a_key_meetq_did_not_create_is_refused_and_writes_nothing(
    redis_url: str,
) -> None:
    """Issue 12 item 1: reply_to pointed at another queue's ready list, at the queue's own
    keys or at an unrelated key made the worker RPUSH to and EXPIRE it."""
    name = "replyguard"
    own = QueueKeys(name)
    other = QueueKeys("other")
    targets = [
        other.ready(1),
        own.named("msg"),
        own.ready(2),
        "unrelated",
        reply_key("other", "w1"),  # a reply key, but of another queue
        reply_key(name, "a b"),
        reply_key(name, "x" * 101),
        reply_key(name, ""),
        f"meetq:{{{name}}}:reply:w1:extra",
    ]
    q = RedisMessageQueue(redis_url, name, workers=2, result_ttl=30)
    runs: list[str] = []
    q.register_handler("r", lambda m: runs.append(m.id) or {"ok": 1})
    async with redis_client(redis_url) as r:
        await r.rpush(other.ready(1), "their-id")
        await r.set("unrelated", "precious")
        delayed = await q.publish(Message(type="r"), delay=3600)
        ids = [await q.publish(Message(type="r", reply_to=t)) for t in targets]
        async with q:
            await async_wait_until(lambda: settled(q, len(ids)), timeout=10)
        why = await reasons(q)
        assert set(why) == set(ids), why
        assert all(reason == "invalid reply_to" for reason in why.values()), why
        assert runs == []  # refused before the handler ran: nothing could be written
        assert await r.lrange(other.ready(1), 0, -1) == [b"their-id"]
        assert await r.ttl(other.ready(1)) == -1
        assert await r.get("unrelated") == b"precious" and await r.ttl("unrelated") == -1
        assert await r.ttl(own.named("msg")) == -1
        assert await r.hexists(own.named("msg"), delayed)
        assert await r.llen(own.ready(2)) == 0
        assert not await r.exists(reply_key("other", "w1"))


async def test_reply_and_status_are_written_with_the_ack(redis_url: str) -> None:
    """CONTRACTS.md §4: the final outcome writes the reply list (with its TTL) and, for a
    dispatcher's task, its recorded outcome (with the request), in the script that acks;
    while the handler runs nothing is recorded and the message is leased (in `inflight`):
    that is what get_task_status reports as PROCESSING, with no status write per delivery."""
    name = "replyok"
    q = RedisMessageQueue(redis_url, name, workers=2, result_ttl=30)
    seen: dict[str, Any] = {}
    sync = redis.Redis.from_url(redis_url)

    def handler(msg: Message) -> dict[str, Any]:
        seen["recorded"] = sync.hget(done_key(msg.id), msg.id)
        seen["leased"] = sync.zscore(QueueKeys(name).named("inflight"), msg.id) is not None
        if msg.payload.get("fail"):
            raise RuntimeError("nope")
        return {"echo": msg.payload["v"]}

    q.register_handler("r", handler)
    rk = reply_key(name, "disp-1")
    try:
        async with redis_client(redis_url) as r:
            ids = await dispatched_ids(r, name, "t1", "t2")
            async with q:
                await q.publish(Message(type="r", id=ids["t1"], payload={"v": 7}, reply_to=rk))
                await async_wait_until(lambda: settled(q, 1), timeout=10)
                assert seen["recorded"] is None and seen["leased"]
                await q.publish(Message(type="r", id=ids["t2"], payload={"fail": 1}, reply_to=rk))
                await async_wait_until(lambda: settled(q, 2), timeout=10)
            assert 0 < await r.ttl(rk) <= 30
            _, raw = await r.blpop([rk], timeout=10)  # type: ignore[misc]
            [first] = reply_objects(raw)
            _, raw = await r.blpop([rk], timeout=10)  # type: ignore[misc]
            second = orjson.loads(raw)
            assert first["id"] == ids["t1"] and first["status"] == "completed"
            assert first["result"] == {"echo": 7} and first["error"] is None
            assert first["processed_at"] > 0
            assert second["id"] == ids["t2"] and second["status"] == "failed"
            assert second["error"] == "RuntimeError: nope" and second["result"] is None
            assert await recorded(r, ids["t1"]) == first
            assert await recorded(r, ids["t2"]) == second
            kept = await r.hget(done_key(ids["t1"]), ids["t1"] + "\0r")
            assert orjson.loads(kept[1:])["payload"] == {"v": 7}  # the stored body, kept
            assert 0 < await r.ttl(done_key(ids["t1"])) <= 61 + 30
            stats = await q.get_stats()
            assert stats["total_processed"] == 1 and stats["dead_letter_count"] == 1
    finally:
        sync.close()


async def test_cancelled_or_expired_messages_are_finished_unstarted(redis_url: str) -> None:
    """A message whose body task_cancel.lua marked is dropped at dequeue (its status and
    reply are the cancel's); one past its `expires_at` (server time) is dropped unstarted by
    the worker, with a `timeout` reply and status; a final status set while one runs is not
    overwritten (a late result is recorded under it). Nothing per task is read at dequeue."""
    name = "status"
    q = RedisMessageQueue(redis_url, name, workers=1, result_ttl=30)
    runs: list[str] = []
    ids: dict[str, str] = {}
    sync = redis.Redis.from_url(redis_url)
    keys = QueueKeys(name)

    def handler(msg: Message) -> str:
        runs.append(msg.id)
        if msg.id == ids["late-cancel"]:  # cancelled while it runs
            args = (msg.id, 30000, keys.cancel_channel)
            _scripts.task_cancel.call_sync(sync, keys.all, args)
        return "done"

    q.register_handler("r", handler)
    rk = reply_key(name, "d")
    try:
        async with redis_client(redis_url) as r:
            sec, _ = await r.time()
            ids.update(
                await dispatched_ids(
                    r, name, "cancelled", "expired", "in-time", "late-cancel", "timed-out"
                )
            )
            await q.publish(Message(type="r", id=ids["cancelled"], reply_to=rk))
            await q.publish(Message(type="r", id=ids["expired"], reply_to=rk, expires_at=sec - 10))
            await q.publish(Message(type="r", id=ids["in-time"], reply_to=rk, expires_at=sec + 600))
            await q.publish(Message(type="r", id=ids["late-cancel"], reply_to=rk))
            await q.publish(Message(type="r", id=ids["timed-out"], reply_to=rk))
            args = [ids["cancelled"], 30000, keys.cancel_channel]
            assert await _scripts.task_cancel(r, [*keys.all, rk], args) == 1
            # its dispatcher's deadline passed while it waited: recorded, dropped unstarted
            args = [ids["timed-out"], "timed out", 30000]
            assert await _scripts.task_timeout(r, keys.all, args) == [b"timeout"]
            replies: dict[str, Any] = {}
            async with q:
                while len(replies) < 4:
                    _, raw = await r.blpop([rk], timeout=10)  # type: ignore[misc]
                    replies.update((x["id"], x) for x in reply_objects(raw))
                await async_wait_until(lambda: settled(q, 2), timeout=10)
            assert sorted(runs) == sorted([ids["in-time"], ids["late-cancel"]])
            assert replies[ids["cancelled"]]["status"] == "cancelled"
            assert replies[ids["expired"]]["status"] == "timeout"
            assert replies[ids["expired"]]["error"] == "deadline passed before it started"
            assert replies[ids["in-time"]]["status"] == "completed"
            assert replies[ids["in-time"]]["result"] == "done"

            async def status(mid: str) -> str:
                return str((await recorded(r, ids[mid]) or {}).get("status"))

            assert await status("cancelled") == "cancelled"
            assert await status("expired") == "timeout"
            assert await status("in-time") == "completed"
            assert await status("late-cancel") == "cancelled"  # final: not overwritten
            assert await status("timed-out") == "timeout"
            assert ids["timed-out"] not in replies  # its own dispatcher resolved it
            late = await recorded(r, ids["late-cancel"]) or {}
            assert late["result"] == "done" and late["error"] == "cancelled"  # recorded under it
            stats = await q.get_stats()
            assert stats["queue_length"]["total"] == stats["processing_count"] == 0
            assert stats["dead_letter_count"] == 0
            assert stats["total_processed"] == 2
            assert await r.hlen(keys.named("msg")) == 0
            assert int(await r.hget(keys.named("stats"), "timeout")) == 2  # expired, timed-out
    finally:
        sync.close()


async def test_a_reply_that_cannot_be_written_is_a_failure_not_an_ack(redis_url: str) -> None:
    """Issue 12 item 1: when the reply write failed the message was acked anyway."""
    name = "replyfail"
    q = RedisMessageQueue(redis_url, name, workers=1, retry_backoff=0.01)
    runs: list[int] = []
    q.register_handler("r", lambda m: runs.append(m.retry_count) or {"ok": 1})
    rk = reply_key(name, "blocked")
    async with redis_client(redis_url) as r:
        await r.set(rk, "a foreign string in the reply key")  # WRONGTYPE for RPUSH
        mid = await q.publish(Message(type="r", reply_to=rk, max_retries=1))
        async with q:
            await async_wait_until(lambda: settled(q, 1), timeout=10)
        stats = await q.get_stats()
        assert stats["total_processed"] == 0
        assert stats["total_failed"] == 2 and stats["total_retried"] == 1
        assert runs == [0, 1]
        why = await reasons(q)
        assert "reply" in why[mid] and "WRONGTYPE" in why[mid], why
        assert await r.get(rk) == b"a foreign string in the reply key"


# ---------------------------------------------------------------- item 2: lease order


async def test_redelivery_after_lease_expiry_keeps_the_original_order(redis_url: str) -> None:
    """Issue 12 item 2: leases that expired came back reversed (LPUSH one by one in the
    zset's member order)."""
    name = "order"
    q = RedisMessageQueue(redis_url, name, workers=1, prefetch=0)
    order = ["k3", "k1", "k5", "k2", "k4", "k0"]
    got: list[str] = []
    q.register_handler("x", lambda m: got.append(m.id))
    async with redis_client(redis_url) as r:
        await q.publish_batch([Message(type="x", id=i) for i in order])
        # a worker that leases everything, then dies
        args = [len(order), 50, 10, 1000, 0, 0]
        await _scripts.dequeue(r, QueueKeys(name).all, args)
        await async_wait_until(lambda: _all_expired(r, name, len(order)), timeout=10)
        async with q:
            await async_wait_until(lambda: len(got) == len(order), timeout=10)
    assert got == order


async def _all_expired(r: redis.asyncio.Redis, name: str, n: int) -> bool:
    sec, usec = await r.time()
    now = sec * 1000 + usec / 1000
    expired = await r.zcount(QueueKeys(name).named("inflight"), "-inf", now)
    return bool(expired == n)


# ---------------------------------------------------------------- item 3: nothing stops a worker


async def test_ids_that_are_not_utf8_are_dead_lettered_and_the_worker_serves(
    redis_url: str,
) -> None:
    """Issue 12 item 3: a non-UTF-8 id in a ready list killed the fetcher, silently."""
    name = "bytes"
    k = QueueKeys(name)
    q = RedisMessageQueue(redis_url, name, workers=2)
    done: list[str] = []
    q.register_handler("ok", lambda m: done.append(m.id))
    body = b"1" + orjson.dumps(Message(type="ok").to_dict())
    async with redis_client(redis_url) as r:
        await r.hset(k.named("msg"), mapping={b"\xff\xfebad": body})
        await r.rpush(k.ready(1), b"\xff\xfebad", b"\xc3(nobody")
        async with q:
            oks = await q.publish_batch([Message(type="ok") for _ in range(5)])
            await async_wait_until(lambda: set(done) >= set(oks), timeout=10)
            await async_wait_until(lambda: _dlq_at_least(q, 2), timeout=10)
            later = await q.publish(Message(type="ok"))
            await async_wait_until(lambda: later in done, timeout=10)
        entries = await q.dead_letters(10)  # readable, though the ids are not UTF-8
        assert len(entries) == 2
        assert all(e.reason for e in entries), entries
        assert await r.zcard(k.named("inflight")) == 0


async def _dlq_at_least(q: RedisMessageQueue, n: int) -> bool:
    return await q.dead_letter_count() >= n


@pytest.mark.parametrize("kind", ["sync", "async", "thread"])
async def test_unprintable_exceptions_are_dead_lettered_with_a_reason(
    redis_url: str, kind: str
) -> None:
    """Issue 12 item 3: an exception whose __str__ raises killed the fetcher (sync) or a
    worker slot (async) and left the message leased forever; two stopped all processing."""
    name = f"unprintable-{kind}"
    q = RedisMessageQueue(redis_url, name, workers=2)
    done: list[str] = []

    def bad_sync(msg: Message) -> None:
        raise Unprintable()

    async def bad_async(msg: Message) -> None:
        raise Unprintable()

    q.register_handler(
        "bad", bad_async if kind == "async" else bad_sync, in_thread=kind == "thread"
    )
    q.register_handler("ok", lambda m: done.append(m.id))
    async with q:
        bad = [await q.publish(Message(type="bad")) for _ in range(3)]
        oks = await q.publish_batch([Message(type="ok") for _ in range(5)])
        await async_wait_until(lambda: set(done) >= set(oks), timeout=10)
        await async_wait_until(lambda: settled(q, 8), timeout=10)
    why = await reasons(q)
    assert set(why) == set(bad)
    assert all("Unprintable" in w and "unprintable" in w for w in why.values()), why


async def test_a_base_exception_from_a_handler_is_a_failure(redis_url: str) -> None:
    """Issue 12 item 3: whatever a handler raises fails that run, never the fetcher."""
    name = "baseexc"
    q = RedisMessageQueue(redis_url, name, workers=2)
    done: list[str] = []

    def outlandish(msg: Message) -> None:
        raise Outlandish("odd")

    q.register_handler("odd", outlandish)
    q.register_handler("ok", lambda m: done.append(m.id))
    async with q:
        odd = await q.publish(Message(type="odd"))
        await async_wait_until(lambda: settled(q, 1), timeout=10)
        later = await q.publish(Message(type="ok"))
        await async_wait_until(lambda: later in done, timeout=10)
    why = await reasons(q)
    assert "Outlandish" in why[odd], why


# ---------------------------------------------------------------- item 4: completed runs


async def test_a_sync_handler_that_overran_its_timeout_but_succeeded_is_not_retried(
    redis_url: str,
) -> None:
    """Issue 12 item 4: a sync handler that succeeded after its `timeout` was counted as
    failed and retried (three charges of a card, then the DLQ, the waiter told failed)."""
    name = "charge"
    q = RedisMessageQueue(redis_url, name, workers=1, retry_backoff=0.01)
    charges: list[str] = []

    def charge(msg: Message) -> dict[str, str]:
        time.sleep(0.3)  # past its 0.1 s timeout; a sync call cannot be interrupted
        charges.append(msg.id)
        return {"charged": msg.id}

    q.register_handler("charge", charge)
    rk = reply_key(name, "w")
    async with redis_client(redis_url) as r, q:
        mid = await q.publish(Message(type="charge", timeout=0.1, max_retries=2, reply_to=rk))
        _, raw = await r.blpop([rk], timeout=10)  # type: ignore[misc]
        await async_wait_until(lambda: settled(q, 1), timeout=10)
        stats = await q.get_stats()
    assert charges == [mid]
    assert reply_objects(raw)[0]["status"] == "completed"
    assert stats["total_processed"] == 1
    assert stats["total_failed"] == stats["total_retried"] == stats["dead_letter_count"] == 0


async def test_a_thread_handler_retry_never_overlaps_the_run_in_progress(redis_url: str) -> None:
    """Issue 12 item 4: with in_thread=True the retry started while the first run was
    still going."""
    name = "overlap"
    q = RedisMessageQueue(redis_url, name, workers=2, retry_backoff=0.01)
    runs: list[tuple[float, float]] = []
    lock = threading.Lock()

    def slow(msg: Message) -> None:
        start = time.monotonic()
        time.sleep(0.5)
        with lock:
            runs.append((start, time.monotonic()))

    q.register_handler("slow", slow, in_thread=True)
    async with q:
        mid = await q.publish(Message(type="slow", timeout=0.1, max_retries=1))
        await async_wait_until(lambda: len(runs) == 2, timeout=15)
        await async_wait_until(lambda: settled(q, 1), timeout=10)
    first, second = sorted(runs)
    assert second[0] >= first[1], f"retry began {first[1] - second[0]:.3f}s before the run ended"
    why = await reasons(q)
    assert "timed out" in why[mid]


# ---------------------------------------------------------------- item 7: smaller ones


async def _fill_dlq(r: redis.asyncio.Redis, name: str, n: int) -> None:
    """Writes `n` DLQ entries (body, dlq zset, dlqinfo) as the fail script leaves them."""
    k = QueueKeys(name)
    body = b"1" + orjson.dumps(Message(type="x").to_dict())
    info = orjson.dumps({"reason": "test", "time": 0, "deliveries": 1, "retries": 0})
    for start in range(0, n, 1000):
        ids = [f"d{i:06d}" for i in range(start, min(n, start + 1000))]
        pipe = r.pipeline(transaction=False)
        pipe.hset(k.named("msg"), mapping=dict.fromkeys(ids, body))
        pipe.zadd(k.named("dlq"), {mid: i for i, mid in enumerate(ids, start)})
        pipe.hset(k.named("dlqinfo"), mapping=dict.fromkeys(ids, info))
        await pipe.execute()


async def test_dead_letter_counts_are_validated(redis_url: str) -> None:
    """Issue 12 item 7: dead_letters(count=0) returned the whole DLQ, count=-1 all but one."""
    name = "counts"
    q = RedisMessageQueue(redis_url, name)
    try:
        async with redis_client(redis_url) as r:
            await _fill_dlq(r, name, 3)
        assert await q.dead_letters(count=0) == []
        assert len(await q.dead_letters(count=2)) == 2
        for bad in (
            q.dead_letters(count=-1),
            q.dead_letters(start=-1),
            q.requeue_dead_letters(-1),
        ):
            with pytest.raises(MeetqError) as caught:
                await bad
            assert isinstance(caught.value, ValueError)
        assert await q.requeue_dead_letters(0) == 0
        assert await q.dead_letter_count() == 3
    finally:
        await q.stop()


async def _script_calls(r: redis.asyncio.Redis) -> int:
    stats = await r.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def test_dlq_requeue_and_purge_work_in_pages(redis_url: str) -> None:
    """Issue 12 item 7: requeue and purge of a large DLQ ran as one script call, blocking
    Redis for as long as the whole DLQ took."""
    name = "pages"
    q = RedisMessageQueue(redis_url, name)
    try:
        async with redis_client(redis_url) as r:
            await _fill_dlq(r, name, 2500)
            before = await _script_calls(r)
            assert await q.requeue_dead_letters(2500) == 2500
            assert await _script_calls(r) - before >= 3  # pages of at most 1000
            stats = await q.get_stats()
            assert stats["queue_length"]["normal"] == 2500 and stats["dead_letter_count"] == 0
            await r.delete(*QueueKeys(name).all)
            await _fill_dlq(r, name, 2500)
            before = await _script_calls(r)
            assert await q.purge_dead_letters() == 2500
            assert await _script_calls(r) - before >= 3
            assert await r.hlen(QueueKeys(name).named("msg")) == 0
            assert not await r.exists(QueueKeys(name).named("dlqinfo"))
    finally:
        await q.stop()


async def test_an_unencodable_result_is_a_failure_for_the_waiter_and_the_stats(
    redis_url: str,
) -> None:
    """Issue 12 item 7: the waiter was told `failed` while the stats counted it processed."""
    name = "unencodable"
    q = RedisMessageQueue(redis_url, name, workers=1)

    async def handler(msg: Message) -> dict[str, Any]:
        return {"value": object()}

    q.register_handler("u", handler)
    rk = reply_key(name, "w")
    async with redis_client(redis_url) as r, q:
        mid = await q.publish(Message(type="u", reply_to=rk))
        _, raw = await r.blpop([rk], timeout=10)  # type: ignore[misc]
        await async_wait_until(lambda: settled(q, 1), timeout=10)
        stats = await q.get_stats()
    reply = orjson.loads(raw)
    assert reply["status"] == "failed" and "serializ" in reply["error"]
    assert stats["total_processed"] == 0 and stats["total_failed"] == 1
    assert "serializ" in (await reasons(q))[mid]


async def test_errors_meetq_raises_derive_from_meetq_error(redis_url: str) -> None:
    """Issue 12 item 7: wrong-typed keys surfaced as redis-py's ResponseError, bad
    arguments as plain ValueError; errors.py promises one base class."""
    name = "errors"
    k = QueueKeys(name)
    for bad in (
        lambda: RedisMessageQueue(redis_url, name, workers=0),
        lambda: RedisMessageQueue(redis_url, name, visibility_timeout=0),
        lambda: RedisMessageQueue(redis_url, "a{b}"),
    ):
        with pytest.raises(MeetqError):
            bad()
    q = RedisMessageQueue(redis_url, name)
    try:
        async with redis_client(redis_url) as r:
            await r.set(k.named("stats"), "not a hash")
            with pytest.raises(MeetqError):
                await q.get_stats()
            await r.delete(k.named("stats"))
            await r.set(k.named("msg"), "not a hash")
            with pytest.raises(MeetqError):
                await q.publish(Message(type="x"))  # an id made here: the MULTI path
            with pytest.raises(MeetqError):
                await q.publish(Message(type="x", id="given"))  # the script path
            await r.set(k.named("dlq"), "not a zset")
            for call in (
                q.dead_letters,
                q.dead_letter_count,
                q.purge_dead_letters,
                q.requeue_dead_letters,
            ):
                with pytest.raises(MeetqError):
                    await call()
    finally:
        await q.stop()
