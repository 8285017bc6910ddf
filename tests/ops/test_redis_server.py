"""The private redis-server of the demo: unix socket only, gone without a trace on exit."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import redis

from meetq.ops.redis_server import RedisServerError, private_redis


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return (
        Path(f"/proc/{pid}").exists()
        and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]
    )


def test_private_redis_serves_a_unix_socket_and_leaves_nothing() -> None:
    with private_redis() as url:
        assert url.startswith("unix://")
        path = Path(url.removeprefix("unix://"))
        assert path.is_socket()
        r = redis.Redis.from_url(url)
        try:
            assert r.ping()
            info = r.info("server")
            assert int(info["tcp_port"]) == 0  # no TCP listener at all
            pid = int(info["process_id"])
        finally:
            r.close()
    assert not path.exists() and not path.parent.exists()
    assert not _pid_alive(pid)


def test_missing_binary_is_a_clear_error(tmp_path: Path) -> None:
    missing = private_redis(binary=str(tmp_path / "no-such-redis-server"))
    with pytest.raises(RedisServerError, match="redis-server not found"), missing:
        pass


def test_demo_without_redis_server_on_path_says_so(tmp_path: Path) -> None:
    from clirun import meetq, one_line_error

    proc = meetq("demo", "--duration", "1", env={"PATH": str(tmp_path)})
    assert proc.returncode == 4
    assert "redis-server not found" in one_line_error(proc)
