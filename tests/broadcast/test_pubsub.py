"""RedisPubSubQueue against a real redis-server: subscriptions, fan-out, isolation, batches,
confirmation, gaps and malformed input."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest

from helpers import async_wait_until, redis_client
from meetq import LocalEventBus, MessageTooLargeError, PubSubMessage, RedisPubSubQueue, events


async def subscribers(r: Any, channel: str) -> int:
    counts = await r.pubsub_numsub(channel)
    return int(counts[0][1])


async def test_subscribe_publish_several_handlers(redis_url: str) -> None:
    ps = RedisPubSubQueue(redis_url)
    got_a: list[PubSubMessage] = []
    got_b: list[PubSubMessage] = []

    async def b(msg: PubSubMessage) -> None:
        await asyncio.sleep(0)
        got_b.append(msg)

    ps.subscribe("meeting_events", got_a.append)
    ps.subscribe("meeting_events", b)
    async with ps:
        n = await ps.publish(
            "meeting_events", PubSubMessage(type="user_joined", payload={"user_id": 123})
        )
        assert n == 1  # one subscription connection per instance, fanned out locally
        await async_wait_until(lambda: len(got_a) == 1 and len(got_b) == 1)
        msg = got_a[0]
        assert msg.type == "user_joined" and msg.payload == {"user_id": 123}
        assert msg.channel == "meeting_events" and msg.pattern is None and msg.seq == 1
        assert msg.id and msg.timestamp > 0
        assert got_b[0] is msg
        stats = ps.get_stats()
        assert stats["total_published"] == 1 and stats["total_received"] == 1
        assert stats["total_processed"] == 1 and stats["total_failed"] == 0
        assert stats["channel_count"] == 1


async def test_start_returns_once_subscriptions_are_live(redis_url: str) -> None:
    """A publish straight after start() is received: no sleep between them."""
    ps = RedisPubSubQueue(redis_url)
    got: list[str] = []
    for i in range(50):
        ps.subscribe(f"ch{i}", lambda m: got.append(m.channel))
    ps.psubscribe("pat.*", lambda m: got.append(m.channel))
    async with redis_client(redis_url) as r, ps:
        assert await subscribers(r, "ch49") == 1
        assert await r.pubsub_numpat() == 1
        await ps.publish("ch49", PubSubMessage(type="t"))
        await ps.publish("pat.x", PubSubMessage(type="t"))
        await async_wait_until(lambda: sorted(got) == ["ch49", "pat.x"])


async def test_psubscribe_unsubscribe_and_isolation(redis_url: str) -> None:
    ps = RedisPubSubQueue(redis_url)
    a: list[str] = []
    b: list[str] = []
    p: list[tuple[str, str | None]] = []

    def on_a(m: PubSubMessage) -> None:
        a.append(m.payload["n"])

    ps.subscribe("a", on_a)
    ps.subscribe("b", lambda m: b.append(m.payload["n"]))
    ps.psubscribe("media.*", lambda m: p.append((m.channel, m.pattern)))
    async with redis_client(redis_url) as r, ps:
        await ps.publish("a", PubSubMessage(type="t", payload={"n": "a1"}))
        await ps.publish("b", PubSubMessage(type="t", payload={"n": "b1"}))
        await ps.publish("media.stream_started", PubSubMessage(type="t"))
        await ps.publish("meeting.created", PubSubMessage(type="t"))  # nobody's channel
        await async_wait_until(lambda: a == ["a1"] and b == ["b1"] and len(p) == 1)
        assert p == [("media.stream_started", "media.*")]

        assert ps.unsubscribe("a", on_a)
        assert not ps.unsubscribe("a", on_a)
        await ps.confirmed()
        assert await subscribers(r, "a") == 0
        assert await ps.publish("a", PubSubMessage(type="t", payload={"n": "a2"})) == 0
        assert ps.punsubscribe("media.*")
        await ps.confirmed()
        assert await r.pubsub_numpat() == 0
        # subscribing while live is confirmed too
        ps.subscribe("late", lambda m: a.append(m.payload["n"]))
        await ps.confirmed()
        await ps.publish("late", PubSubMessage(type="t", payload={"n": "late"}))
        await ps.publish("b", PubSubMessage(type="t", payload={"n": "b2"}))
        await async_wait_until(lambda: a == ["a1", "late"] and b == ["b1", "b2"])
        assert ps.get_stats()["channel_count"] == 2


async def test_failing_and_slow_handlers_are_isolated(redis_url: str) -> None:
    ps = RedisPubSubQueue(redis_url, handler_timeout=0.2)
    fast: list[int] = []
    release = asyncio.Event()

    def boom(m: PubSubMessage) -> None:
        raise RuntimeError("handler exploded")

    async def cancels_itself(m: PubSubMessage) -> None:
        raise asyncio.CancelledError

    async def slow(m: PubSubMessage) -> None:
        await release.wait()  # never set: runs past the timeout

    ps.subscribe("x", boom)
    ps.subscribe("x", cancels_itself)
    ps.subscribe("x", lambda m: fast.append(m.payload["n"]))
    ps.subscribe("slow", slow)
    ps.subscribe("other", lambda m: fast.append(m.payload["n"]))
    async with ps:
        await ps.publish("slow", PubSubMessage(type="t"))
        for n in range(3):
            await ps.publish("x", PubSubMessage(type="t", payload={"n": n}))
            await ps.publish("other", PubSubMessage(type="t", payload={"n": 100 + n}))
        # the slow channel does not hold up the others, failures do not stop the rest
        await async_wait_until(lambda: len(fast) == 6)
        await async_wait_until(lambda: ps.get_stats()["total_processed"] == 7)
        stats = ps.get_stats()
        assert stats["total_received"] == 7 and stats["total_failed"] == 7
        assert stats["in_flight"] == 0


async def test_publish_batch_one_round_trip(redis_url: str) -> None:
    ps = RedisPubSubQueue(redis_url)
    got: list[int] = []
    gaps: list[dict[str, Any]] = []
    ps.subscribe("bulk", lambda m: got.append(m.payload["n"]))
    ps.on(events.PUBSUB_GAP, lambda m: gaps.append(m.payload))
    async with ps:
        counts = await ps.publish_batch(
            "bulk", [PubSubMessage(type="t", payload={"n": n}) for n in range(2000)]
        )
        assert counts == [1] * 2000
        await async_wait_until(lambda: len(got) == 2000)
        assert got == list(range(2000))  # in order
        assert gaps == []
        assert ps.get_stats()["total_published"] == 2000
        assert await ps.publish_batch("bulk", []) == []
        with pytest.raises(MessageTooLargeError):
            await ps.publish_batch(
                "bulk", [PubSubMessage(type="t", payload={"x": "y" * (2 << 20)})]
            )


async def test_ten_thousand_channels_subscribe_fast(redis_url: str) -> None:
    ps = RedisPubSubQueue(redis_url)
    got: list[str] = []
    for i in range(10_000):
        ps.subscribe(f"room:{i}", lambda m: got.append(m.channel))
    t0 = time.perf_counter()
    async with redis_client(redis_url) as r, ps:
        took = time.perf_counter() - t0
        assert ps.get_stats()["channel_count"] == 10_000
        assert await subscribers(r, "room:0") == 1 and await subscribers(r, "room:9999") == 1
        await ps.publish("room:9999", PubSubMessage(type="t"))
        await async_wait_until(lambda: got == ["room:9999"])
    print(f"10,000 channels subscribed and confirmed in {took:.3f}s")


async def test_gap_detection_and_repeats(redis_url: str) -> None:
    """A publisher's sequence that jumps is reported as a gap; a repeat is dropped."""
    ps = RedisPubSubQueue(redis_url)
    got: list[int] = []
    gaps: list[dict[str, Any]] = []
    ps.subscribe("g", lambda m: got.append(m.seq))
    ps.on(events.PUBSUB_GAP, lambda m: gaps.append(m.payload))

    def raw(seq: int) -> bytes:
        return orjson.dumps({"type": "t", "payload": {}, "p": "pub-1", "s": seq})

    async with redis_client(redis_url) as r, ps:
        for seq in (1, 2, 5, 5, 4, 6):
            await r.publish("g", raw(seq))
        await async_wait_until(lambda: got == [1, 2, 5, 6])
        assert gaps == [{"channel": "g", "publisher": "pub-1", "from": 3, "to": 4, "missed": 2}]
        stats = ps.get_stats()
        assert stats["gaps"] == 1 and stats["missed"] == 2 and stats["duplicates"] == 2


async def test_malformed_messages_are_counted_not_raised(redis_url: str) -> None:
    ps = RedisPubSubQueue(redis_url)
    got: list[str] = []
    ps.subscribe("m", lambda m: got.append(m.type))
    async with redis_client(redis_url) as r, ps:
        for junk in (
            b"not json",
            b"[1,2]",
            b'{"payload":{}}',
            b'{"type":"t","payload":3}',
            b'{"type":"t","s":"x","p":"q"}',
            b"\xff\xfe",
        ):
            await r.publish("m", junk)
        await r.publish("m", orjson.dumps({"type": "fine"}))  # a foreign but valid publisher
        await async_wait_until(lambda: got == ["fine"])
        stats = ps.get_stats()
        assert stats["malformed"] == 6 and stats["state"] == "live"
        # a message on a channel nobody here wants is not decoded, only counted
        ps.subscribe("other", got.append)
        ps.unsubscribe("other")
        await r.publish("m", b"still fine to send junk")
        await async_wait_until(lambda: ps.get_stats()["malformed"] == 7)


async def test_local_bus_gets_local_events_and_thread_handlers(redis_url: str) -> None:
    bus = LocalEventBus(buffer_size=100, workers=1)
    seen: list[str] = []
    bus.on(events.PUBSUB_GAP, lambda ev: seen.append(ev.type))
    ps = RedisPubSubQueue(redis_url, local_bus=bus)
    threads: list[int] = []
    ps.subscribe("t", lambda m: threads.append(m.seq), in_thread=True)
    async with redis_client(redis_url) as r, bus, ps:
        await r.publish("t", orjson.dumps({"type": "t", "p": "x", "s": 1}))
        await r.publish("t", orjson.dumps({"type": "t", "p": "x", "s": 3}))
        await async_wait_until(lambda: seen == [events.PUBSUB_GAP] and threads == [1, 3])


async def test_start_stop_idempotent_and_restartable(redis_url: str) -> None:
    ps = RedisPubSubQueue(redis_url)
    got: list[int] = []
    ps.subscribe("c", lambda m: got.append(m.seq))
    await ps.start()
    await ps.start()
    assert ps.state == "live" and ps.healthy
    await ps.stop()
    await ps.stop()
    assert ps.state == "stopped"
    async with ps:
        await ps.publish("c", PubSubMessage(type="t"))
        await async_wait_until(lambda: got == [1])


async def test_start_fails_clearly_without_a_server() -> None:
    from helpers import free_port
    from meetq import MeetqConnectionError

    ps = RedisPubSubQueue(f"redis://127.0.0.1:{free_port()}/0", retry_budget=0.3)
    with pytest.raises(MeetqConnectionError):
        await ps.start()
    assert ps.state == "stopped"
