"""RedisMessageQueue on a real Redis Cluster (3 masters, 3 replicas): queues on different
shards, a given RedisCluster client, and a failover of a busy queue's master."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import pytest
import redis
import redis.asyncio

from cluster import Cluster, running_cluster
from helpers import async_wait_until
from meetq import MeetqConnectionError, Message, RedisMessageQueue
from meetq._redis.cluster import key_slot
from meetq._redis.keys import QueueKeys


def names_on_every_shard(cluster: Cluster) -> list[str]:
    """One queue name per master, each owning a slot on a different shard."""
    found: dict[int, str] = {}
    i = 0
    while len(found) < 3:
        name = f"shard-q{i}"
        found.setdefault(cluster.master_of(key_slot(QueueKeys(name).prefix)), name)
        i += 1
    return list(found.values())


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with running_cluster() as c:
        yield c


async def _serve(q: RedisMessageQueue, n: int) -> list[int]:
    seen: list[int] = []
    q.register_handler("t", lambda m: seen.append(m.payload["i"]))
    async with q:
        await q.publish_batch([Message(type="t", payload={"i": i}) for i in range(n - 1)])
        await q.publish(Message(type="t", payload={"i": n - 1}))
        await async_wait_until(lambda: len(seen) >= n, timeout=30)
    stats = await q.get_stats()  # after stop(): every ack is flushed
    assert stats["total_processed"] == n and stats["queue_length"]["total"] == 0
    return seen


async def test_queues_on_three_shards_each_serve_their_messages(cluster: Cluster) -> None:
    names = names_on_every_shard(cluster)
    results = await asyncio.gather(
        *(_serve(RedisMessageQueue(cluster.cluster_url, name, workers=2), 300) for name in names)
    )
    for seen in results:
        assert sorted(seen) == list(range(300))
    for name in names:  # each queue's keys live on its own master only
        owner = cluster.master_of(key_slot(QueueKeys(name).prefix))
        for port in cluster.masters():
            stats_key = QueueKeys(name).named("stats")
            r = redis.Redis(port=port)
            try:
                assert bool(r.exists(stats_key)) == (port == owner)
            except redis.ResponseError as exc:  # MOVED from a node that does not own it
                assert port != owner and "MOVED" in str(exc)
            finally:
                r.close()


async def test_a_given_redis_cluster_client(cluster: Cluster) -> None:
    client = redis.asyncio.RedisCluster(host="127.0.0.1", port=cluster.ports[0])
    try:
        seen = await _serve(RedisMessageQueue(client, "given-client", workers=2), 50)
        assert sorted(seen) == list(range(50))
        assert await client.ping()  # the caller's client is left open
    finally:
        await client.aclose()


async def test_failover_of_a_busy_queue_loses_no_published_message() -> None:
    with running_cluster("--appendonly", "yes", "--appendfsync", "always") as cluster:
        name = "failover-q"
        slot = key_slot(QueueKeys(name).prefix)
        url = cluster.cluster_url
        seen: set[str] = set()
        worker = RedisMessageQueue(url, name, workers=2, visibility_timeout=5.0)
        worker.register_handler("t", lambda m: seen.add(m.id))
        publisher = RedisMessageQueue(url, name, wait_replicas=1, wait_timeout=2.0)
        confirmed: list[str] = []
        killed = asyncio.Event()

        async def publish_steadily(total: int) -> None:
            for i in range(total):
                msg = Message(type="t", payload={"i": i})
                while True:  # a failed publish is published again: stored once
                    try:
                        confirmed.append(await publisher.publish(msg))
                        break
                    except MeetqConnectionError:
                        await asyncio.sleep(0.05)
                if i == total // 3:
                    killed.set()
                await asyncio.sleep(0.002)

        async with worker:
            producing = asyncio.ensure_future(publish_steadily(600))
            try:
                await killed.wait()
                dead = cluster.kill_master_of(slot)
                promoted = cluster.wait_promoted(slot, dead)
                assert promoted != dead
                cluster.node_at(dead).start()  # rejoins as a replica: WAIT 1 succeeds again
                await asyncio.wait_for(producing, timeout=90)
                await async_wait_until(lambda: seen >= set(confirmed), timeout=60)
            finally:
                producing.cancel()
                with contextlib.suppress(BaseException):
                    await producing
                await publisher.stop()
        assert len(confirmed) == 600
        assert set(confirmed) <= seen
