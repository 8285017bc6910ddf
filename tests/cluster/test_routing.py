"""Slot routing of meetq's own connections against a real 3-master, 3-replica cluster."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from cluster import Cluster, running_cluster
from meetq._redis.cluster import ClusterSettings, SlotConnection, key_slot, slot_map


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with running_cluster() as c:
        yield c


def test_key_slot_agrees_with_cluster_keyslot(cluster: Cluster) -> None:
    r = redis.Redis(port=cluster.ports[0])
    try:
        keys = ["a", "meetq:{ai_tasks}:ready:3", "{}x", "x{}y{z}", "{user1000}.following",
                "é", "{a}{b}", "{", "}{", "meetq:{q}:msg"]  # fmt: skip
        for key in keys:
            assert key_slot(key) == r.execute_command("CLUSTER", "KEYSLOT", key), key
    finally:
        r.close()


def test_url_parsing() -> None:
    s = ClusterSettings.from_url("redis+cluster://u:p%40ss@127.0.0.1:7000,127.0.0.2:7001")
    assert s.seeds == (("127.0.0.1", 7000), ("127.0.0.2", 7001))
    assert (s.node.username, s.node.password) == ("u", "p@ss")
    assert s.url_for("h", 1) == "redis://u:p%40ss@h:1/0"
    with pytest.raises(ValueError):
        ClusterSettings.from_url("redis+cluster://127.0.0.1:7000/2")
    with pytest.raises(ValueError):
        ClusterSettings.from_url("redis://127.0.0.1:7000")


def _url(cluster: Cluster) -> str:
    return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in cluster.ports[:2])


async def test_slot_map_covers_every_slot(cluster: Cluster) -> None:
    ranges = await slot_map(ClusterSettings.from_url(_url(cluster)))
    assert sum(hi - lo + 1 for lo, hi, _, _ in ranges) == 16384
    assert {port for _, _, _, port in ranges} == set(cluster.masters())


async def test_commands_reach_the_slot_owner_and_follow_ask_and_moved(cluster: Cluster) -> None:
    keys = [f"meetq:{{route-a}}:{i}" for i in range(3)]
    slot = key_slot(keys[0])
    conn = await SlotConnection.connect(_url(cluster), slot)
    try:
        assert conn.owner is not None and conn.owner[1] == cluster.master_of(slot)
        replies = await conn.execute_many([*(("SET", k, "1") for k in keys), ("GET", keys[0])])
        assert replies == [b"OK", b"OK", b"OK", b"1"]
        assert conn.redirects == 0
        # A resharding moves the slot to another master, key by key.
        target = next(p for p in cluster.masters() if p != conn.owner[1])
        source = cluster.start_migrating(slot, target)
        cluster.migrate_keys(source, target, [keys[0]])
        # keys[0] is on the target already (ASK, map unchanged), keys[1] still on the source.
        assert await conn.execute_many([("GET", keys[0]), ("GET", keys[1])]) == [b"1", b"1"]
        assert conn.redirects == 1 and conn.owner[1] == source
        cluster.finish_migrating(slot, source, target)
        # Now the source answers MOVED: the connection follows the slot for good.
        assert await conn.execute("INCR", keys[2]) == 2
        assert conn.redirects == 2 and conn.owner[1] == target
        tx = await conn.execute_many([("MULTI",), ("INCR", keys[1]), ("INCR", keys[1]), ("EXEC",)])
        assert tx[-1] == [2, 3]
    finally:
        await conn.close()


async def test_a_killed_master_is_replaced_by_its_promoted_replica(cluster: Cluster) -> None:
    key = "meetq:{route-b}:n"
    slot = key_slot(key)
    conn = await SlotConnection.connect(_url(cluster), slot, reply_timeout=5.0)
    try:
        assert await conn.execute("SET", key, "7") == b"OK"
        await conn.execute("WAIT", 1, 5000)  # the replica has it before the master dies
        dead = cluster.kill_master_of(slot)
        promoted = cluster.wait_promoted(slot, dead)
        assert await conn.execute("GET", key) == b"7"
        assert conn.owner is not None and conn.owner[1] == promoted
    finally:
        await conn.close()
