"""meetq's own connections through Redis Sentinel: a real master, replica and 3 sentinels."""

from __future__ import annotations

import subprocess

import pytest

from cluster import cli, running_sentinels
from helpers import async_wait_until, wait_until
from meetq._redis.sentinel import SentinelConnection, SentinelSettings


def _role(port: int) -> str:
    """role:master / role:slave of a server ("" while it does not answer)."""
    try:
        info = cli(port, "INFO", "replication")
    except subprocess.SubprocessError:
        return ""
    return next((line.strip() for line in info.splitlines() if line.startswith("role:")), "")


async def _replicated(conn: SentinelConnection) -> bool:
    """Whether a replica has every write made so far (a loaded box may lag for a while)."""
    return bool(await conn.execute("WAIT", 1, 1000) >= 1)


def _failover(sentinel_port: int) -> bool:
    """Asks for a failover; False while the sentinel has no replica it trusts yet."""
    try:
        return cli(sentinel_port, "SENTINEL", "FAILOVER", "meetq").strip() == "OK"
    except subprocess.SubprocessError:
        return False


def test_url_parsing() -> None:
    s = SentinelSettings.from_url("redis+sentinel://u:pw@127.0.0.1:1,127.0.0.2:2/mymaster/3")
    assert s.sentinels == (("127.0.0.1", 1), ("127.0.0.2", 2))
    assert (s.master_name, s.db, s.username, s.password) == ("mymaster", 3, "u", "pw")
    assert s.master_url("h", 9) == "redis://u:pw@h:9/3"
    with pytest.raises(ValueError):
        SentinelSettings.from_url("redis+sentinel://127.0.0.1:1")


async def test_forced_failover_and_a_killed_master_are_followed() -> None:
    with running_sentinels() as group:
        conn = await SentinelConnection.connect(group.url, reply_timeout=5.0, retry_budget=60)
        try:
            assert conn.master == ("127.0.0.1", group.master.port)
            assert await conn.execute("SET", "k", "1") == b"OK"
            await async_wait_until(lambda: _replicated(conn), timeout=30)
            # A forced failover demotes the master: READONLY or a dropped connection.
            wait_until(lambda: _failover(group.sentinel_ports[0]), timeout=30, interval=0.2)
            wait_until(lambda: _role(group.replica.port) == "role:master", timeout=30)
            wait_until(lambda: _role(group.master.port) == "role:slave", timeout=30)
            assert await conn.execute("INCR", "k") == 2
            assert conn.master == ("127.0.0.1", group.replica.port)
            assert conn.failovers == 1
            # The old master is a replica now; SIGKILL the new one: it moves back.
            await async_wait_until(lambda: _replicated(conn), timeout=30)
            group.replica.kill()
            assert await conn.execute("INCR", "k") == 3
            assert conn.master == ("127.0.0.1", group.master.port)
            assert conn.failovers == 2
        finally:
            await conn.close()
