"""RedisPubSubQueue never fails silently: a killed subscription, a redis-server restart on the
same port and a proxy that silences the path each end in a re-subscription and a local
`meetq.pubsub.reconnected` event carrying the interval away."""

from __future__ import annotations

import asyncio
from typing import Any

from helpers import RedisServer, async_wait_until, redis_client
from meetq import PubSubMessage, RedisPubSubQueue, events
from proxy import Proxy


def watched(url: str, **kw: Any) -> tuple[RedisPubSubQueue, list[int], list[dict[str, Any]]]:
    ps = RedisPubSubQueue(url, **kw)
    got: list[int] = []
    reconnected: list[dict[str, Any]] = []
    for i in range(100):
        ps.subscribe(f"ch{i}", lambda m: got.append(m.payload["n"]))
    ps.psubscribe("pat.*", lambda m: got.append(m.payload["n"]))
    ps.on(events.PUBSUB_RECONNECTED, lambda m: reconnected.append(m.payload))
    return ps, got, reconnected


async def still_receives(ps: RedisPubSubQueue, got: list[int], n: int) -> None:
    """Every channel and pattern works again: a new message on each arrives."""
    await ps.publish("ch99", PubSubMessage(type="t", payload={"n": n}))
    await ps.publish("pat.z", PubSubMessage(type="t", payload={"n": n + 1}))
    await async_wait_until(lambda: n in got and n + 1 in got, timeout=20)


async def test_client_kill_type_pubsub(redis_url: str) -> None:
    ps, got, reconnected = watched(redis_url)
    async with redis_client(redis_url) as r, ps:
        await still_receives(ps, got, 1)
        killed = await r.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        assert killed == 1
        await async_wait_until(lambda: reconnected, timeout=20)
        await async_wait_until(lambda: ps.state == "live", timeout=20)
        assert reconnected[0]["away"] > 0
        assert reconnected[0]["channels"] == 100 and reconnected[0]["patterns"] == 1
        await still_receives(ps, got, 10)
        stats = ps.get_stats()
        assert stats["reconnects"] == 1 and stats["last_away"] == reconnected[0]["away"]


async def test_redis_restart_on_the_same_port(redis_server: RedisServer) -> None:
    ps, got, reconnected = watched(redis_server.url)
    loop = asyncio.get_running_loop()
    gaps: list[dict[str, Any]] = []
    ps.on(events.PUBSUB_GAP, lambda m: gaps.append(m.payload))
    publisher = RedisPubSubQueue(redis_server.url)  # publishes only; never started
    async with ps:
        await publisher.publish("ch5", PubSubMessage(type="t", payload={"n": 1}))
        await async_wait_until(lambda: 1 in got)
        await loop.run_in_executor(None, redis_server.kill)
        await async_wait_until(lambda: ps.state == "reconnecting", timeout=20)
        # changes made while away are applied on the new connection
        ps.subscribe("joined-while-away", lambda m: got.append(m.payload["n"]))
        assert ps.unsubscribe("ch0")
        await loop.run_in_executor(None, redis_server.start)
        await async_wait_until(lambda: reconnected, timeout=30)
        # the server lost its state with the restart: the subscriptions are back because
        # meetq re-subscribed them
        async with redis_client(redis_server.url) as r:
            numsub = dict(await r.pubsub_numsub("ch1", "ch99", "ch0", "joined-while-away"))
            assert numsub == {b"ch1": 1, b"ch99": 1, b"ch0": 0, b"joined-while-away": 1}
        assert reconnected[0]["away"] > 0 and "reason" in reconnected[0]
        await still_receives(ps, got, 20)
        # what the publisher sent while nobody listened shows up as a gap on its next one
        publisher._publisher.seqs["ch5"] += 3  # three publishes that reached no subscriber
        await publisher.publish("ch5", PubSubMessage(type="t", payload={"n": 30}))
        await async_wait_until(lambda: gaps, timeout=20)
        assert gaps[0]["from"] == 2 and gaps[0]["to"] == 4
    await publisher.stop()


async def test_silenced_path_is_found_by_the_probe(redis_server: RedisServer) -> None:
    """A proxy that keeps the socket open but forwards nothing: no close, no error, only
    the publish-and-echo probe can tell."""
    proxy = Proxy(redis_server.port)
    await proxy.start()
    try:
        url = f"redis://127.0.0.1:{proxy.port}/0"
        ps, got, reconnected = watched(url, probe_interval=0.2, probe_timeout=0.5)
        async with ps:
            await still_receives(ps, got, 1)
            proxy.silence()
            await async_wait_until(lambda: reconnected, timeout=30)
            assert ps.get_stats()["probes_failed"] >= 1
            away = reconnected[0]["away"]
            assert away >= reconnected[0]["detected_after"] >= 0.2
            await still_receives(ps, got, 10)
    finally:
        await proxy.stop()


async def test_probe_keeps_quiet_when_all_is_well(redis_url: str) -> None:
    ps, _, reconnected = watched(redis_url, probe_interval=0.05, probe_timeout=2.0)
    async with redis_client(redis_url) as r, ps:
        # the probe publishes on the private channel and sees its echo, again and again
        await async_wait_until(lambda: ps._probe_token >= 5, timeout=20)
        assert reconnected == [] and ps.get_stats()["probes_failed"] == 0
        channels = await r.pubsub_channels("meetq:pubsub:probe:*")
        assert len(channels) == 1
        assert ps.get_stats()["total_received"] == 0  # probes are not counted as messages


async def test_back_pressure_pauses_reading_instead_of_piling_tasks(redis_url: str) -> None:
    ps = RedisPubSubQueue(redis_url, max_in_flight=5, probe_interval=0.05)
    release = asyncio.Event()
    done: list[int] = []

    async def slow(m: PubSubMessage) -> None:
        await release.wait()
        done.append(m.seq)

    ps.subscribe("s", slow)
    async with ps:
        await ps.publish_batch("s", [PubSubMessage(type="t") for _ in range(50)])
        await async_wait_until(lambda: ps.get_stats()["in_flight"] == 5)
        assert ps._paused
        release.set()
        await async_wait_until(lambda: len(done) == 50, timeout=20)
        assert done == list(range(1, 51))
        await async_wait_until(lambda: not ps._paused and ps.get_stats()["in_flight"] == 0)
        assert ps.get_stats()["reconnects"] == 0
