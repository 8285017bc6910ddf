"""The worker's batched final script (`ack_reply.lua` over N runs): members are independent,
so one whose reply cannot be written fails alone (retry, then the DLQ with its reason)
while the others in the same call complete with reply, status and ack."""

from __future__ import annotations

from typing import Any

import orjson

from helpers import async_wait_until, redis_client
from meetq import RedisMessageQueue
from meetq._redis import scripts
from meetq._redis.keys import QueueKeys
from meetq.queue.message import Message


def reply_key(queue: str, name: str) -> str:
    return QueueKeys(queue).reply(name)


def replies_in(elements: list[bytes]) -> list[Any]:
    """The reply objects of a reply list's elements: a batched ack writes one element per
    call, the JSON array of its members' replies."""
    out: list[Any] = []
    for raw in elements:
        got = orjson.loads(raw)
        out += got if isinstance(got, list) else [got]
    return out


async def lease_all(r: Any, queue: str, n: int) -> dict[str, str]:
    """Leases `n` messages with the dequeue script: id -> token."""
    reply = await scripts.dequeue(r, QueueKeys(queue).all, [n, 60000, 10, 1000, 0, 0])
    return {reply[i].decode(): reply[i + 1].decode() for i in range(3, len(reply), 5)}


async def test_one_call_acks_many_and_a_bad_member_changes_nothing_of_its_own(
    redis_url: str,
) -> None:
    queue = "batchack"
    keys = QueueKeys(queue)
    good, blocked = reply_key(queue, "good"), reply_key(queue, "blocked")
    q = RedisMessageQueue(redis_url, queue)
    async with redis_client(redis_url) as r:
        await r.set(blocked, "not a list")  # WRONGTYPE for its RPUSH
        second = int((await r.time())[0]) + 60  # ids as a dispatcher makes them
        ids = [f"m{i}.{second}@{queue}" for i in range(5)]
        await q.publish_batch([Message(type="t", id=mid) for mid in ids])
        tokens = await lease_all(r, queue, 5)
        members = [
            (ids[0], tokens[ids[0]], good, b'{"n":0}'),
            (ids[1], tokens[ids[1]], blocked, b'{"n":1}'),
            (ids[2], "1:1:0", good, b'{"n":2}'),  # a stale token: another delivery holds it
            (ids[3], tokens[ids[3]], "meetq:{other}:reply:x", b'{"n":3}'),  # not this queue's
            (ids[4], tokens[ids[4]], good, b'{"n":4}'),
        ]
        args: list[Any] = [60000, len(members), "1700000000.5"]
        for mid, token, key, result in members:
            reply = b'{"id":"%s","status":"completed","result":%s}' % (mid.encode(), result)
            args += (mid, token, key, "completed", result, "", reply)
        res = await scripts.ack_reply(r, keys.all, args)
        assert res[0] == 1 and res[4] == 1
        assert b"WRONGTYPE" in res[1]
        assert res[2] == -1
        assert res[3] == b"invalid reply_to"
        assert await r.llen(good) == 1  # one element for the whole call
        replies = replies_in(await r.lrange(good, 0, -1))
        assert [(x["id"], x["status"], x["result"]) for x in replies] == [
            (ids[0], "completed", {"n": 0}),
            (ids[4], "completed", {"n": 4}),
        ]
        assert 0 < await r.pttl(good) <= 60000
        # acked members are gone, their outcomes recorded; the others are still leased,
        # with nothing recorded
        inflight = {x.decode() for x in await r.zrange(keys.named("inflight"), 0, -1)}
        assert inflight == set(ids[1:4])
        done = keys.done(second)
        recorded = await r.hmget(done, ids)
        assert [orjson.loads(x)["result"] if x else None for x in recorded] == [
            {"n": 0},
            None,
            None,
            None,
            {"n": 4},
        ]
        assert await r.hget(done, ids[0] + "\0r") is not None  # the request, kept
        assert await r.hget(keys.named("msg"), ids[0]) is None
        assert await r.get(blocked) == b"not a list"
        assert int(await r.hget(keys.named("stats"), "processed")) == 2


async def test_a_worker_batch_with_a_member_that_cannot_reply_dead_letters_it_alone(
    redis_url: str,
) -> None:
    queue = "batchdlq"
    keys = QueueKeys(queue)
    good, blocked = reply_key(queue, "good"), reply_key(queue, "blocked")
    q = RedisMessageQueue(redis_url, queue, workers=1)
    q.register_handler("t", lambda m: {"n": m.payload["n"]})
    async with redis_client(redis_url) as r:
        await r.set(blocked, "not a list")
        msgs = [
            Message(type="t", id=f"g{i}", payload={"n": i}, reply_to=good, max_retries=0)
            for i in range(20)
        ]
        msgs.insert(7, Message(type="t", id="bad", payload={"n": -1}, reply_to=blocked))
        msgs[7].max_retries = 0
        await q.publish_batch(msgs)
        async with q:

            async def settled() -> bool:
                stats = await q.get_stats()
                return bool(stats["total_processed"] == 20 and stats["dead_letter_count"] == 1)

            await async_wait_until(settled, timeout=20)
        replies = replies_in(await r.lrange(good, 0, -1))
        assert sorted(x["result"]["n"] for x in replies) == list(range(20))
        assert all(x["status"] == "completed" for x in replies)
        dead = await q.dead_letters(10)
        assert [d.id for d in dead] == ["bad"]
        assert "reply could not be written" in dead[0].reason and "WRONGTYPE" in dead[0].reason
        assert await r.get(blocked) == b"not a list"
        assert await r.zcard(keys.named("inflight")) == 0


async def test_replies_are_written_again_after_a_restart_of_the_queue(redis_url: str) -> None:
    queue = "batchrestart"
    good = reply_key(queue, "good")
    q = RedisMessageQueue(redis_url, queue, workers=1)
    q.register_handler("t", lambda m: {"n": m.payload["n"]})
    async with redis_client(redis_url) as r:
        for n in range(3):
            await q.publish(Message(type="t", id=f"r{n}", payload={"n": n}, reply_to=good))
            async with q:
                _, raw = await r.blpop([good], timeout=20)  # type: ignore[misc]
            assert replies_in([raw])[0]["result"] == {"n": n}
