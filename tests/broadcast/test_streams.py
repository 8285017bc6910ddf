"""RedisStreamEventBus against a real redis-server: fan-out to every service, failures and the
dead-letter stream, claiming a dead consumer's entries, replay, trimming, stats."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from helpers import async_never, async_wait_until, next_turns, redis_client
from meetq import RedisStreamEventBus, StreamEvent, events
from meetq._redis.keys import StreamKeys


def idkey(eid: str | bytes) -> tuple[int, int]:
    text = eid.decode() if isinstance(eid, bytes) else eid
    ms, seq = text.split("-")
    return int(ms), int(seq)


FAST = {"claim_idle": 0.3, "claim_interval": 0.05, "retry_backoff": 0.01, "block": 0.2}


async def test_every_service_gets_every_event_once(redis_url: str) -> None:
    got: dict[str, list[int]] = {"media": [], "ai": [], "notify": []}
    buses = []
    for service, seen in got.items():
        bus = RedisStreamEventBus(redis_url, service, **FAST)  # type: ignore[arg-type]
        bus.subscribe(events.USER_JOINED, lambda e, seen=seen: seen.append(e.payload["n"]))
        buses.append(bus)
    publisher = RedisStreamEventBus(redis_url, "meeting")
    for bus in buses:
        await bus.start()
    try:
        ids = await publisher.publish_batch(
            events.USER_JOINED,
            [StreamEvent(events.USER_JOINED, {"n": n}, "meeting") for n in range(300)],
        )
        assert len(ids) == 300 and ids == sorted(ids, key=idkey)
        one = await publisher.publish(events.USER_JOINED, "user_joined", {"n": 300})
        assert idkey(one) > idkey(ids[-1])
        await async_wait_until(lambda: all(len(v) == 301 for v in got.values()))
        for seen in got.values():
            assert seen == list(range(301))
        await async_wait_until(lambda: _all_acked(buses[0], events.USER_JOINED), timeout=10)
        stats = await buses[0].get_stats()
        assert stats["total_processed"] == 301 and stats["total_failed"] == 0
        groups = stats["topics"][events.USER_JOINED]["groups"]
        assert set(groups) == {"media", "ai", "notify"}
        assert groups["media"]["lag"] == 0
    finally:
        for bus in buses:
            await bus.stop()


async def _all_acked(bus: RedisStreamEventBus, topic: str) -> bool:
    stats = await bus.topic_stats(topic)
    return all(g["pending"] == 0 for g in stats["groups"].values())


async def test_one_process_per_service_gets_each_event(redis_url: str) -> None:
    """Two processes (consumers) of one service share its group: each event once."""
    seen: list[tuple[str, int]] = []
    a = RedisStreamEventBus(redis_url, "svc", consumer="a", batch=5, **FAST)  # type: ignore[arg-type]
    b = RedisStreamEventBus(redis_url, "svc", consumer="b", batch=5, **FAST)  # type: ignore[arg-type]

    async def slow_a(e: StreamEvent) -> None:
        await next_turns()  # suspended, so b's handler gets the loop meanwhile
        seen.append(("a", e.payload["n"]))

    a.subscribe("t", slow_a)
    b.subscribe("t", lambda e: seen.append(("b", e.payload["n"])))
    async with a, b:
        await a.publish_batch("t", [StreamEvent("x", {"n": n}) for n in range(200)])
        await async_wait_until(lambda: len(seen) == 200)
        assert sorted(n for _, n in seen) == list(range(200))


async def test_failures_retry_then_dead_letter_with_the_reason(redis_url: str) -> None:
    bus = RedisStreamEventBus(redis_url, "svc", max_deliveries=3, **FAST)  # type: ignore[arg-type]
    runs: list[tuple[int, int]] = []
    ok: list[int] = []

    def handler(e: StreamEvent) -> None:
        runs.append((e.payload["n"], e.deliveries))
        if e.payload["n"] == 1:
            raise ValueError("bad frame")
        if e.payload["n"] == 2 and e.deliveries < 2:
            raise RuntimeError("flaky")
        ok.append(e.payload["n"])

    bus.subscribe("t", handler)
    async with bus, redis_client(redis_url) as r:
        await bus.publish_batch("t", [StreamEvent("x", {"n": n}) for n in range(3)])
        await r.xadd(StreamKeys("t").stream, {"d": b"{not json"})
        await r.xadd(StreamKeys("t").stream, {"other": b"field"})
        await async_wait_until(lambda: sorted(ok) == [0, 2])
        await async_wait_until(lambda: _dead_count(bus, "t", 3))
        assert [d for n, d in runs if n == 1] == [1, 2, 3]  # three deliveries, then dead
        assert [d for n, d in runs if n == 2] == [1, 2]
        dead = await bus.dead_letters("t")
        by_reason = sorted(d.reason for d in dead)
        assert by_reason[0] == "ValueError: bad frame"
        assert by_reason[1].startswith("malformed:") and by_reason[2].startswith("malformed:")
        first = next(d for d in dead if d.event is not None)
        assert first.event is not None and first.event.payload == {"n": 1}
        assert first.group == "svc" and first.deliveries == 3
        stats = await bus.get_stats()
        assert stats["total_dead_letter"] == 3 and stats["total_malformed"] == 2
        assert stats["topics"]["t"]["groups"]["svc"]["pending"] == 0
        assert stats["topics"]["t"]["dead_letters"] == 3
        assert await bus.purge_dead_letters("t") == 3
        assert await bus.dead_letters("t") == []


async def _dead_count(bus: RedisStreamEventBus, topic: str, n: int) -> bool:
    return len(await bus.dead_letters(topic)) == n


async def test_dead_consumers_entries_are_claimed_and_it_is_removed(redis_url: str) -> None:
    """A consumer that read entries and died: another claims them after claim_idle, the
    dead one is removed from the group once it holds nothing."""
    stream = StreamKeys("t").stream
    live_seen: list[int] = []
    live = RedisStreamEventBus(
        redis_url,
        "svc",
        consumer="live",
        dead_consumer_after=0.2,
        **FAST,  # type: ignore[arg-type]
    )
    live.subscribe("t", lambda e: live_seen.append(e.payload["n"]))
    async with redis_client(redis_url) as r:
        await r.xgroup_create(stream, "svc", "$", mkstream=True)
        await live.publish_batch("t", [StreamEvent("x", {"n": n}) for n in range(10)])
        # the "dead" consumer reads five entries and never acks them
        got = await r.xreadgroup("svc", "dead", {stream: ">"}, count=5)
        assert len(got[0][1]) == 5
        async with live:
            await async_wait_until(lambda: sorted(live_seen) == list(range(10)))
            await async_wait_until(lambda: _only_live(r, stream), timeout=10)
            await async_wait_until(lambda: live._reaped == 1)
            stats = await live.get_stats()
            assert stats["total_claimed"] == 5 and stats["consumers_removed"] == 1


async def _only_live(r: Any, stream: str) -> bool:
    names = {c["name"] for c in await r.xinfo_consumers(stream, "svc")}
    return {n.decode() if isinstance(n, bytes) else n for n in names} == {"live"}


async def test_entries_still_running_are_not_claimed(redis_url: str) -> None:
    """A handler slower than claim_idle: the entry is touched, never run twice."""
    runs: list[int] = []
    release = asyncio.Event()
    a = RedisStreamEventBus(redis_url, "svc", consumer="a", **FAST)  # type: ignore[arg-type]
    b = RedisStreamEventBus(redis_url, "svc", consumer="b", **FAST)  # type: ignore[arg-type]

    async def slow(e: StreamEvent) -> None:
        runs.append(e.payload["n"])
        await release.wait()

    a.subscribe("t", slow)
    b.subscribe("t", slow)
    async with a, b:
        await a.publish("t", "x", {"n": 1})
        await async_wait_until(lambda: runs == [1])
        # observed over four claim_idle periods (the claimers run every claim_interval):
        # a second run fails at once
        await async_never(lambda: runs != [1], 4 * FAST["claim_idle"])
        release.set()
        await async_wait_until(lambda: _all_acked(a, "t"))


async def test_replay_and_rewind(redis_url: str) -> None:
    bus = RedisStreamEventBus(redis_url, "svc", start_from="0", **FAST)  # type: ignore[arg-type]
    seen: list[int] = []
    bus.subscribe("t", lambda e: seen.append(e.payload["n"]))
    ids = await bus.publish_batch("t", [StreamEvent("x", {"n": n}) for n in range(10)])
    events_ = await bus.replay("t", since=ids[3], until=ids[6])
    assert [e.payload["n"] for e in events_] == [3, 4, 5, 6]
    assert [e.id for e in events_] == ids[3:7] and events_[0].topic == "t"
    by_time = await bus.replay("t", since=0.0, count=2)
    assert [e.payload["n"] for e in by_time] == [0, 1]
    future = await bus.replay("t", since=time.time() + 3600)
    assert future == []
    async with bus:
        await async_wait_until(lambda: seen == list(range(10)))  # start_from="0": history
        await bus.rewind("t", ids[7])
        await async_wait_until(lambda: seen == [*range(10), 8, 9])
        ms = int(ids[5].split("-")[0])
        await bus.rewind("t", ms / 1000)  # by time: every entry from that millisecond on
        again = [n for n in range(10) if int(ids[n].split("-")[0]) >= ms]
        await async_wait_until(lambda: seen == [*range(10), 8, 9, *again])


async def test_memory_bounded_trimmed_behind_the_slowest_group(redis_url: str) -> None:
    """Acked entries go; entries a group still needs (pending or unread) stay."""
    stream = StreamKeys("t").stream
    fast = RedisStreamEventBus(redis_url, "fast", trim_interval=3600, **FAST)  # type: ignore[arg-type]
    fast.subscribe("t", lambda e: None)
    async with redis_client(redis_url) as r, fast:
        await r.xgroup_create(stream, "slow", "$")  # a service that reads later
        ids = await fast.publish_batch("t", [StreamEvent("x", {"n": n}) for n in range(1000)])
        await async_wait_until(lambda: _all_acked_group(r, stream, "fast"))
        assert await fast.trim() == 0  # "slow" has read nothing: everything stays
        assert await r.xlen(stream) == 1000
        got = await r.xreadgroup("slow", "s1", {stream: ">"}, count=600)
        await r.xack(stream, "slow", *[eid for eid, _ in got[0][1][:500]])
        trimmed = await fast.trim()
        left = await r.xrange(stream, "-", "+")
        assert trimmed > 0 and len(left) == 1000 - trimmed
        assert idkey(left[0][0]) <= idkey(ids[500])  # the oldest pending of "slow" is kept
        assert len(left) <= 500 + 200  # approximate: at most a node's worth more
        stats = await fast.topic_stats("t")
        assert stats["groups"]["slow"]["pending"] == 100
        assert stats["groups"]["slow"]["lag"] == 400
        assert stats["groups"]["slow"]["oldest_pending_age"] >= 0.0


async def _all_acked_group(r: Any, stream: str, group: str) -> bool:
    return int((await r.xpending(stream, group))["pending"]) == 0


async def test_pending_never_exceeds_the_window(redis_url: str) -> None:
    release = asyncio.Event()
    bus = RedisStreamEventBus(redis_url, "svc", batch=10, max_in_flight=25, **FAST)  # type: ignore[arg-type]
    done: list[int] = []

    async def slow(e: StreamEvent) -> None:
        await release.wait()
        done.append(e.payload["n"])

    bus.subscribe("t", slow)
    async with bus, redis_client(redis_url) as r:
        await bus.publish_batch("t", [StreamEvent("x", {"n": n}) for n in range(100)])
        await async_wait_until(lambda: len(bus._held) == 25)
        pending = await r.xpending(StreamKeys("t").stream, "svc")
        assert pending["pending"] == 25
        release.set()
        await async_wait_until(lambda: len(done) == 100)


async def test_bad_arguments_are_refused(redis_url: str) -> None:
    with pytest.raises(ValueError):
        RedisStreamEventBus(redis_url, "")
    bus = RedisStreamEventBus(redis_url, "svc")
    with pytest.raises(ValueError):
        bus.subscribe("a{b}", lambda e: None)
    from meetq import MalformedMessageError

    with pytest.raises(MalformedMessageError):
        await bus.publish("t", StreamEvent("x", {"bad": object()}))
    with pytest.raises(MalformedMessageError):
        await bus.publish("t", StreamEvent("", {}))


async def test_xadd_approximate_maxlen_and_retention(redis_url: str) -> None:
    capped = RedisStreamEventBus(redis_url, "svc", maxlen=100)
    aged = RedisStreamEventBus(redis_url, "svc", retention=0.001)
    async with redis_client(redis_url) as r:
        for _ in range(10):
            await capped.publish_batch("capped", [StreamEvent("x", {}) for _ in range(100)])
        length = await r.xlen(StreamKeys("capped").stream)
        assert 100 <= length < 300  # approximate: whole nodes of 100 go
        await aged.publish_batch("aged", [StreamEvent("x", {}) for _ in range(1000)])
        t_end = time.time() + 0.01
        await async_wait_until(lambda: time.time() > t_end)  # the 1000 are now past retention
        await aged.publish("aged", "x", {})
        assert await r.xlen(StreamKeys("aged").stream) < 200
    await capped.stop()
    await aged.stop()
