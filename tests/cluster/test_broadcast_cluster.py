"""RedisPubSubQueue and RedisStreamEventBus on a real Redis Cluster (3 masters, 3
replicas): shard channels and topics on different shards, a given RedisCluster client, and
a master killed under each bus, its replica promoted, delivery resumed."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio

from cluster import Cluster, cli, running_cluster, running_sentinels
from helpers import async_wait_until
from meetq import (
    InvalidArgumentError,
    PubSubMessage,
    RedisPubSubQueue,
    RedisStreamEventBus,
    StreamEvent,
    events,
)
from meetq._redis.cluster import key_slot
from meetq._redis.keys import StreamKeys
from meetq._redis.router import ClusterRouter


def on_every_shard(cluster: Cluster, stem: str, slot_of: Any = key_slot) -> list[str]:
    return cluster.names_on_every_shard(stem, slot_of)


def topic_slot(topic: str) -> int:
    return key_slot(StreamKeys(topic).stream)


def shard_subscribers(cluster: Cluster, channel: str) -> int:
    """PUBSUB SHARDNUMSUB of `channel` on the master of its slot."""
    out = cli(cluster.master_of(key_slot(channel)), "PUBSUB", "SHARDNUMSUB", channel).split()
    return int(out[1])


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with running_cluster("--appendonly", "yes", "--appendfsync", "always") as c:
        yield c


def kill_and_promote(cluster: Cluster, slot: int) -> int:
    """Kills the master of `slot`, waits for its replica to take over, then restarts the
    dead node (it rejoins as a replica) so later tests have a whole cluster again."""
    dead = cluster.kill_master_of(slot)
    promoted = cluster.wait_promoted(slot, dead)
    assert promoted != dead
    return dead


async def publish_until_received(
    ps: RedisPubSubQueue, channels: list[str], received: Any, timeout: float = 30
) -> None:
    """Publishes on every channel `received(channel)` says has not arrived, until all have:
    Pub/Sub is at-most-once, and a loaded box may drop a subscription (a late probe echo)
    in the moment a publish is made."""

    async def all_in() -> bool:
        missing = [c for c in channels if not received(c)]
        for channel in missing:
            await ps.publish(channel, PubSubMessage("t", {"i": 1}))
        return not missing

    await async_wait_until(all_in, timeout=timeout, interval=0.2)


def rejoin(cluster: Cluster, dead: int) -> None:
    cluster.node_at(dead).start()
    cluster.wait_ok(60)


async def stop_all(*buses: RedisPubSubQueue | RedisStreamEventBus) -> None:
    """Stops every bus within a deadline; one that does not stop fails the test with the
    stack of every task still running (a hang is a bug, not a slow box)."""
    for bus in buses:
        try:
            await asyncio.wait_for(bus.stop(), 30)
        except TimeoutError:
            stacks = io.StringIO()
            for task in asyncio.all_tasks():
                task.print_stack(file=stacks)
            raise AssertionError(f"{bus!r} did not stop:\n{stacks.getvalue()}") from None


# -- the router ----------------------------------------------------------------------------


async def test_router_groups_per_master_and_follows_ask_and_moved(cluster: Cluster) -> None:
    keys = on_every_shard(cluster, "meetq:router-")
    router = ClusterRouter(cluster.cluster_url)
    try:
        replies = await router.execute_many(
            [*(("SET", k, str(i)) for i, k in enumerate(keys)), *(("GET", k) for k in keys)]
        )
        assert replies == [b"OK"] * 3 + [b"0", b"1", b"2"]
        assert router.redirects == 0 and len(await router.masters()) == 3
        # a resharding moves the first key's slot to another master
        slot = key_slot(keys[0])
        source = cluster.master_of(slot)
        target = next(p for p in cluster.masters() if p != source)
        cluster.start_migrating(slot, target)
        cluster.migrate_keys(source, target, [keys[0]])
        assert await router.execute("GET", keys[0]) == b"0"  # ASK: on the target already
        assert router.redirects == 1
        cluster.finish_migrating(slot, source, target)
        assert await router.execute_many([("INCR", keys[0]), ("GET", keys[1])]) == [1, b"1"]
        assert router.redirects == 2 and await router.owner(slot) == ("127.0.0.1", target)
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            await router.execute("LPUSH", keys[1], "x")  # an error reply is raised as usual
    finally:
        await router.close()


# -- Pub/Sub -------------------------------------------------------------------------------


async def test_shard_channels_on_three_shards_are_delivered(cluster: Cluster) -> None:
    channels = on_every_shard(cluster, "room-")
    ps = RedisPubSubQueue(cluster.cluster_url)
    got: dict[str, list[int]] = {c: [] for c in channels}
    for channel in channels:
        ps.subscribe(channel, lambda m: got[m.channel].append(m.payload["i"]))
    async with ps:
        # start() returned: every SSUBSCRIBE is confirmed on its shard's master
        assert all(shard_subscribers(cluster, c) == 1 for c in channels)
        for channel in channels:
            assert await ps.publish(channel, PubSubMessage("t", {"i": 0})) == 1
            counts = await ps.publish_batch(
                channel, [PubSubMessage("t", {"i": i}) for i in range(1, 50)]
            )
            assert counts == [1] * 49
        await async_wait_until(lambda: all(len(v) == 50 for v in got.values()), timeout=20)
        assert all(v == list(range(50)) for v in got.values())
        # a channel subscribed while live is confirmed on its own shard
        late = on_every_shard(cluster, "late-")[2]
        late_got: list[PubSubMessage] = []
        ps.subscribe(late, late_got.append)
        await ps.confirmed()
        assert shard_subscribers(cluster, late) == 1
        await ps.publish(late, PubSubMessage("t"))
        await async_wait_until(lambda: len(late_got) == 1)
        assert ps.unsubscribe(late)
        await ps.confirmed()
        assert shard_subscribers(cluster, late) == 0
        # the subscriptions stayed live: no unasked sunsubscribe was taken for a move
        assert ps.get_stats()["reconnects"] == 0 and ps.state == "live"
        with pytest.raises(InvalidArgumentError, match="Cluster"):
            ps.psubscribe("room-*", lambda m: None)
    stats = ps.get_stats()
    assert stats["total_received"] == 151 and stats["gaps"] == 0


async def test_a_given_redis_cluster_client_for_pubsub(cluster: Cluster) -> None:
    client = redis.asyncio.RedisCluster(host="127.0.0.1", port=cluster.ports[0])
    try:
        ps = RedisPubSubQueue(client)
        got: list[PubSubMessage] = []
        ps.subscribe("given-client", got.append)
        async with ps:
            await ps.publish("given-client", PubSubMessage("t", {"x": 1}))
            await async_wait_until(lambda: len(got) == 1)
        assert got[0].payload == {"x": 1}
        assert await client.ping()  # the caller's client is left open
    finally:
        await client.aclose()


async def test_a_moved_slot_is_followed_by_its_shard_channel(cluster: Cluster) -> None:
    channel = "moving-room"
    slot = key_slot(channel)
    ps = RedisPubSubQueue(cluster.cluster_url, retry_budget=60.0)
    got: list[PubSubMessage] = []
    reconnected: list[PubSubMessage] = []
    ps.subscribe(channel, got.append)
    ps.on(events.PUBSUB_RECONNECTED, reconnected.append)
    async with ps:
        source = cluster.master_of(slot)
        target = next(p for p in cluster.masters() if p != source)
        cluster.start_migrating(slot, target)
        cluster.finish_migrating(slot, source, target)  # Redis sends an unasked sunsubscribe
        await async_wait_until(lambda: reconnected, timeout=30)
        assert "slot moved" in reconnected[0].payload["reason"]
        await async_wait_until(lambda: shard_subscribers(cluster, channel) == 1, timeout=30)
        assert cluster.master_of(slot) == target
        await publish_until_received(ps, [channel], lambda c: got)


async def test_a_silent_shard_is_caught_by_its_own_probe(cluster: Cluster) -> None:
    """One master stops answering (CLIENT PAUSE): that shard's probe is not echoed, the
    subscription is dropped and re-subscribed once the shard answers again."""
    channels = on_every_shard(cluster, "quiet-room-")
    ps = RedisPubSubQueue(cluster.cluster_url, probe_interval=0.3, probe_timeout=0.5)
    got: list[str] = []
    reconnected: list[PubSubMessage] = []
    for channel in channels:
        ps.subscribe(channel, lambda m: got.append(m.channel))
    ps.on(events.PUBSUB_RECONNECTED, reconnected.append)
    async with ps:
        cli(cluster.master_of(key_slot(channels[2])), "CLIENT", "PAUSE", "1500", "ALL")
        await async_wait_until(lambda: reconnected, timeout=30)
        assert ps.get_stats()["probes_failed"] >= 1
        assert "probe not echoed" in reconnected[0].payload["reason"]
        await publish_until_received(ps, channels, lambda c: c in got)


async def test_pubsub_resumes_after_a_failover(cluster: Cluster) -> None:
    channels = on_every_shard(cluster, "fo-room-")
    victim = channels[0]
    ps = RedisPubSubQueue(cluster.cluster_url, probe_interval=0.5, retry_budget=60.0)
    got: dict[str, list[int]] = {c: [] for c in channels}
    reconnected: list[PubSubMessage] = []
    for channel in channels:
        ps.subscribe(channel, lambda m: got[m.channel].append(m.payload["i"]))
    ps.on(events.PUBSUB_RECONNECTED, reconnected.append)
    async with ps:
        dead = await asyncio.to_thread(kill_and_promote, cluster, key_slot(victim))
        try:
            await async_wait_until(lambda: reconnected, timeout=60)
            assert ps.state == "live" and ps.get_stats()["reconnects"] >= 1
            assert reconnected[0].payload["away"] > 0
            # every shard is subscribed again, the victim's on the promoted replica
            assert all(shard_subscribers(cluster, c) == 1 for c in channels)
            await publish_until_received(ps, channels, lambda c: 1 in got[c])
        finally:
            await asyncio.to_thread(rejoin, cluster, dead)


# -- Streams -------------------------------------------------------------------------------


async def _consume_two_topics(
    url: str, topics: list[str], service: str, handled: dict[str, set[int]]
) -> list[RedisStreamEventBus]:
    buses = []
    for _ in range(2):  # two processes of one service: each event goes to one of them
        bus = RedisStreamEventBus(
            url, service, start_from="0", block=0.5, claim_idle=2.0, retry_budget=60.0
        )
        for topic in topics:
            bus.subscribe(topic, lambda e: handled[e.topic].add(e.payload["i"]))
        buses.append(bus)
    for bus in buses:
        await bus.start()
    return buses


async def test_streams_on_two_shards_two_consumers_one_group(cluster: Cluster) -> None:
    topics = on_every_shard(cluster, "topic-", topic_slot)[:2]
    url = cluster.cluster_url
    handled: dict[str, set[int]] = {t: set() for t in topics}
    publisher = RedisStreamEventBus(url, "publisher")
    buses = await _consume_two_topics(url, topics, "svc", handled)
    try:
        for topic in topics:
            await publisher.publish_batch(topic, [StreamEvent("e", {"i": i}) for i in range(200)])
            await publisher.publish(topic, "e", {"i": 200})
        await async_wait_until(lambda: all(len(v) == 201 for v in handled.values()), timeout=30)
        processed = [b.get_stats() for b in buses]
        stats = await asyncio.gather(*processed)
        assert sum(s["total_processed"] for s in stats) >= 402
        assert all(s["total_processed"] > 0 for s in stats)  # both consumers took a share
        replay = await publisher.replay(topics[1])
        assert [e.payload["i"] for e in replay] == list(range(201))
        await asyncio.gather(*(b.trim() for b in buses))
    finally:
        await stop_all(*buses, publisher)
    for topic in topics:
        pending = cli(
            cluster.master_of(topic_slot(topic)), "XPENDING", StreamKeys(topic).stream, "svc"
        )
        assert pending.split()[0] == "0"  # every handled event was acked on its shard


async def test_streams_resume_after_a_failover(cluster: Cluster) -> None:
    topics = on_every_shard(cluster, "fo-topic-", topic_slot)[:2]
    victim = topics[0]
    url = cluster.cluster_url
    handled: dict[str, set[int]] = {t: set() for t in topics}
    publisher = RedisStreamEventBus(url, "publisher", retry_budget=60.0)
    buses = await _consume_two_topics(url, topics, "fo-svc", handled)
    try:
        for topic in topics:
            await publisher.publish_batch(topic, [StreamEvent("e", {"i": i}) for i in range(100)])
        # what a failover can lose: writes not yet on a replica; these are (WAIT)
        for topic in topics:
            assert cli(cluster.master_of(topic_slot(topic)), "WAIT", "1", "5000").strip() == "1"
        dead = await asyncio.to_thread(kill_and_promote, cluster, topic_slot(victim))
        try:
            for topic in topics:  # publishing resumes on the promoted replica
                await publisher.publish_batch(
                    topic, [StreamEvent("e", {"i": i}) for i in range(100, 200)]
                )
            await async_wait_until(
                lambda: all(v == set(range(200)) for v in handled.values()), timeout=60
            )
            assert all(b.healthy for b in buses)
        finally:
            await asyncio.to_thread(rejoin, cluster, dead)
    finally:
        await stop_all(*buses, publisher)


async def test_claims_and_dead_letters_are_routed_per_shard(cluster: Cluster) -> None:
    """A stopped consumer's pending entries are claimed by its sibling (XAUTOCLAIM script
    on each topic's master), and an event that keeps failing is dead-lettered beside its
    stream, on both shards."""
    topics = on_every_shard(cluster, "claim-topic-", topic_slot)[:2]
    url = cluster.cluster_url
    release = asyncio.Event()
    handled: set[tuple[str, int]] = set()
    started: list[StreamEvent] = []

    async def stuck(e: StreamEvent) -> None:
        started.append(e)
        await release.wait()

    def sibling(e: StreamEvent) -> None:
        if e.type == "bad":
            raise RuntimeError("always fails")
        handled.add((e.topic, e.payload["i"]))

    first = RedisStreamEventBus(url, "claim-svc", start_from="0", stop_timeout=0.1)
    second = RedisStreamEventBus(
        url, "claim-svc", start_from="0", claim_idle=0.5, max_deliveries=2, retry_backoff=0.05
    )
    publisher = RedisStreamEventBus(url, "publisher")
    for topic in topics:
        first.subscribe(topic, stuck)
    try:
        await first.start()
        for topic in topics:
            await publisher.publish_batch(topic, [StreamEvent("e", {"i": i}) for i in range(20)])
            await publisher.publish(topic, "bad", {"i": -1})
        await async_wait_until(lambda: len(started) == 42, timeout=20)
        await first.stop()  # its 42 entries stay pending in their shards' groups
        for topic in topics:
            second.subscribe(topic, sibling)
        await second.start()
        want = {(t, i) for t in topics for i in range(20)}
        await async_wait_until(lambda: handled >= want, timeout=30)

        async def dead_lettered() -> bool:
            return all([len(await second.dead_letters(t)) == 1 for t in topics])

        await async_wait_until(dead_lettered, timeout=30, interval=0.05)
        stats = await second.get_stats()
        assert stats["total_claimed"] >= 42
        for topic in topics:
            dead = (await second.dead_letters(topic))[0]
            assert dead.group == "claim-svc" and "always fails" in dead.reason
    finally:
        release.set()
        await second.stop()
        await first.stop()
        await publisher.stop()


# -- Sentinel ------------------------------------------------------------------------------


async def test_both_buses_through_sentinel_survive_a_killed_master() -> None:
    with running_sentinels() as group:
        ps = RedisPubSubQueue(group.url, retry_budget=60.0)
        got: list[int] = []
        reconnected: list[PubSubMessage] = []
        ps.subscribe("sentinel-room", lambda m: got.append(m.payload["i"]))
        ps.on(events.PUBSUB_RECONNECTED, reconnected.append)
        handled: set[int] = set()
        bus = RedisStreamEventBus(group.url, "svc", start_from="0", block=0.5, retry_budget=60.0)
        bus.subscribe("sentinel-topic", lambda e: handled.add(e.payload["i"]))
        await ps.start()
        await bus.start()
        try:
            await ps.publish("sentinel-room", PubSubMessage("t", {"i": 0}))
            await bus.publish_batch(
                "sentinel-topic", [StreamEvent("e", {"i": i}) for i in range(50)]
            )
            await async_wait_until(lambda: got == [0] and len(handled) == 50, timeout=20)
            assert cli(group.master.port, "WAIT", "1", "5000").strip() == "1"
            await asyncio.to_thread(group.master.kill)
            await async_wait_until(lambda: reconnected, timeout=60)
            await publish_until_received(ps, ["sentinel-room"], lambda c: 1 in got, timeout=60)
            await bus.publish_batch(
                "sentinel-topic", [StreamEvent("e", {"i": i}) for i in range(50, 100)]
            )
            await async_wait_until(lambda: handled == set(range(100)), timeout=60)
            assert group.current_master() == group.replica.port
        finally:
            await stop_all(ps, bus)
