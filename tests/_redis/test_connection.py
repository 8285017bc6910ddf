"""RespConnection against a real redis-server: pipelining, errors, ACL, SELECT, unix, loss."""

from __future__ import annotations

import asyncio
import ssl
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from redis.exceptions import (
    AuthenticationError,
    NoPermissionError,
    NoScriptError,
    ResponseError,
)

from helpers import RedisServer, async_wait_until, free_port
from meetq import MeetqConnectionError
from meetq._redis.connection import ConnectionSettings, RespConnection, RespScript
from tls import Certs, make_certs, tls_args


async def blocked_clients(conn: RespConnection) -> int:
    info: bytes = await conn.execute("INFO", "clients")
    for line in info.decode().splitlines():
        if line.startswith("blocked_clients:"):
            return int(line.split(":")[1])
    raise AssertionError(info)


async def test_execute_replies(redis_url: str) -> None:
    async with await RespConnection.connect(redis_url) as conn:
        assert await conn.execute("PING") == b"PONG"
        assert await conn.execute("SET", "k", "välue") == b"OK"
        assert await conn.execute("GET", "k") == "välue".encode()
        assert await conn.execute("GET", "missing") is None
        assert await conn.execute("INCRBY", "n", -7) == -7
        assert await conn.execute("RPUSH", "l", 1.5, b"\x00\xff", memoryview(b"mv")) == 3
        assert await conn.execute("LRANGE", "l", 0, -1) == [b"1.5", b"\x00\xff", b"mv"]
        assert await conn.execute("CONFIG GET", "maxmemory") == [b"maxmemory", b"0"]
        assert conn.pending == 0
    assert conn.closed


async def test_execute_many_ten_thousand_commands_in_one_batch(redis_url: str) -> None:
    payload = b"p" * 100
    async with await RespConnection.connect(redis_url) as conn:
        replies = await conn.execute_many([("RPUSH", "q", payload)] * 10_000)
        assert replies == list(range(1, 10_001))
        got = await conn.execute_many(("LINDEX", "q", i) for i in range(0, 10_000, 97))
        assert got == [payload] * len(range(0, 10_000, 97))
        assert await conn.execute_many([]) == []


async def test_concurrent_callers_are_pipelined_in_order(redis_url: str) -> None:
    async with await RespConnection.connect(redis_url) as conn:

        async def one(i: int) -> None:
            await conn.execute("SET", f"k{i}", i)
            assert await conn.execute("GET", f"k{i}") == str(i).encode()
            replies = await conn.execute_many([("INCR", f"c{i}")] * (i % 7 + 1))
            assert replies == list(range(1, i % 7 + 2))

        await asyncio.gather(*(one(i) for i in range(500)))
        assert conn.pending == 0
        assert await conn.execute("DBSIZE") == 1000


async def test_error_replies(redis_url: str) -> None:
    async with await RespConnection.connect(redis_url) as conn:
        await conn.execute("SET", "s", "x")
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await conn.execute("LPUSH", "s", 1)
        with pytest.raises(ResponseError, match="unknown command"):
            await conn.execute("NOSUCHCOMMAND")
        replies = await conn.execute_many([("INCR", "n"), ("LPUSH", "s", 1), ("INCR", "n")])
        assert replies[0] == 1 and replies[2] == 2
        assert isinstance(replies[1], ResponseError)
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await conn.execute_many([("INCR", "n"), ("LPUSH", "s", 1)], raise_on_error=True)
        # every reply of the failed batch was consumed: the stream is still in sync
        assert await conn.execute("GET", "n") == b"3"


async def test_noscript_is_surfaced_and_scripts_reload(redis_url: str) -> None:
    script = RespScript("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    async with await RespConnection.connect(redis_url) as conn:
        with pytest.raises(NoScriptError):
            await conn.execute(*script.command(["x"], [1]))
        replies = await conn.execute_many([script.command(["x"], [1])])
        assert isinstance(replies[0], NoScriptError)
        assert await script(conn, ["x"], [5]) == 5  # loaded on NOSCRIPT and rerun
        await conn.execute("SCRIPT", "FLUSH")
        assert await script.run_many(conn, [(["x"], [1])] * 100) == list(range(6, 106))
        assert await script(conn, ["x"], [1]) == 106


async def test_acl_user_auth(redis_server: RedisServer) -> None:
    port = redis_server.port
    async with await RespConnection.connect(redis_server.url) as admin:
        await admin.execute("ACL", "SETUSER", "alice", "on", ">s3cr:et", "~app:*", "+@all")
    url = f"redis://alice:s3cr%3Aet@127.0.0.1:{port}/0"
    async with await RespConnection.connect(url) as conn:
        assert await conn.execute("ACL", "WHOAMI") == b"alice"
        assert await conn.execute("SET", "app:1", "v") == b"OK"
        with pytest.raises(NoPermissionError):
            await conn.execute("SET", "other", "v")
    with pytest.raises(AuthenticationError):
        await RespConnection.connect(f"redis://alice:wrong@127.0.0.1:{port}/0")


async def test_password_only_url_and_select(redis_server: RedisServer) -> None:
    async with await RespConnection.connect(redis_server.url) as admin:
        await admin.execute("CONFIG", "SET", "requirepass", "pw")
        with pytest.raises(AuthenticationError):
            await admin.execute("AUTH", "nope")
    async with await RespConnection.connect(
        f"redis://:pw@127.0.0.1:{redis_server.port}/5", client_name="meetq-test"
    ) as conn:
        await conn.execute("SET", "in5", 1)
        assert b"db=5" in await conn.execute("CLIENT", "INFO")
        assert await conn.execute("CLIENT", "GETNAME") == b"meetq-test"
    async with await RespConnection.connect(f"redis://:pw@127.0.0.1:{redis_server.port}") as c0:
        assert await c0.execute("EXISTS", "in5") == 0
        assert await c0.execute("SELECT", 5) == b"OK"
        assert await c0.execute("EXISTS", "in5") == 1


async def test_unix_socket(redis_factory: Callable[..., RedisServer]) -> None:
    with tempfile.TemporaryDirectory(prefix="meetq-sock-") as d:
        sock = Path(d) / "r.sock"
        redis_factory("--unixsocket", str(sock), "--unixsocketperm", "700")
        async with await RespConnection.connect(f"unix://{sock}?db=2") as conn:
            assert await conn.execute("SET", "u", 1) == b"OK"
            assert b"db=2" in await conn.execute("CLIENT", "INFO")
            assert await conn.execute_many([("INCR", "u")] * 3) == [2, 3, 4]


async def test_server_killed_fails_every_pending_request(redis_server: RedisServer) -> None:
    conn = await RespConnection.connect(redis_server.url)
    watcher = await RespConnection.connect(redis_server.url)
    blocked = asyncio.ensure_future(conn.execute("BLPOP", "never", 0))
    behind = [asyncio.ensure_future(conn.execute("PING")) for _ in range(10)]
    batch = asyncio.ensure_future(conn.execute_many([("PING",)] * 100))
    await async_wait_until(lambda: blocked_clients(watcher))
    assert conn.pending == 12
    redis_server.kill()
    results = await asyncio.gather(blocked, *behind, batch, return_exceptions=True)
    for result in results:
        assert isinstance(result, MeetqConnectionError), result
        assert isinstance(result.__cause__, BaseException)
    assert conn.closed
    with pytest.raises(MeetqConnectionError) as info:
        await conn.execute("PING")
    assert info.value.__cause__ is not None
    await conn.close()
    await watcher.close()


async def test_close_fails_pending_and_later_calls(redis_url: str) -> None:
    conn = await RespConnection.connect(redis_url)
    watcher = await RespConnection.connect(redis_url)
    blocked = asyncio.ensure_future(conn.execute("BLPOP", "never", 0))
    await async_wait_until(lambda: blocked_clients(watcher))
    await conn.close()
    with pytest.raises(MeetqConnectionError):
        await blocked
    with pytest.raises(MeetqConnectionError):
        await conn.execute_many([("PING",)])
    await watcher.close()


async def test_cancelled_caller_keeps_the_stream_in_sync(redis_url: str) -> None:
    async with (
        await RespConnection.connect(redis_url) as conn,
        await RespConnection.connect(redis_url) as other,
    ):
        blocked = asyncio.ensure_future(conn.execute("BLPOP", "wake", 0))
        after = asyncio.ensure_future(conn.execute("GET", "x"))
        await async_wait_until(lambda: blocked_clients(other))
        blocked.cancel()
        await other.execute("SET", "x", "after")
        await other.execute("RPUSH", "wake", "1")
        assert await after == b"after"  # the BLPOP reply was read and dropped, not given here
        assert await conn.execute("PING") == b"PONG"
        assert conn.pending == 0


async def test_reply_timeout_fails_a_silent_request_and_spares_answered_ones(
    redis_url: str,
) -> None:
    async with (
        await RespConnection.connect(redis_url, reply_timeout=0.3) as conn,
        await RespConnection.connect(redis_url) as other,
    ):
        # answered within the timeout, again and again: the connection stays up
        for _ in range(3):
            assert await conn.execute("BLPOP", "empty", 0.1) is None
        assert await conn.send_many([("PING",), ("GET", "x")]) == [b"PONG", None]
        assert not conn.closed
        # a reply that never comes in time fails everything pending, with the cause
        blocked = conn.send_many([("BLPOP", "never", 0), ("PING",)])
        behind = asyncio.ensure_future(conn.execute("PING"))
        async with asyncio.timeout(10):  # fails, not hangs, without the watchdog
            results = await asyncio.gather(blocked, behind, return_exceptions=True)
        for result in results:
            assert isinstance(result, MeetqConnectionError), result
            assert isinstance(result.__cause__, TimeoutError)
        assert conn.closed
        await async_wait_until(lambda: _no_blocked(other))


async def _no_blocked(conn: RespConnection) -> bool:
    return await blocked_clients(conn) == 0


async def test_send_many_returns_errors_in_place(redis_url: str) -> None:
    async with await RespConnection.connect(redis_url) as conn:
        future = conn.send_many([("SET", "s", "v"), ("LPUSH", "s", "x"), ("GET", "s")])
        ok, wrong, value = await future
        assert ok == b"OK" and value == b"v"
        assert isinstance(wrong, ResponseError) and "WRONGTYPE" in str(wrong)
        with pytest.raises(ValueError):
            conn.send_many([])


async def test_connect_refused_is_a_meetq_connection_error() -> None:
    with pytest.raises(MeetqConnectionError) as info:
        await RespConnection.connect(f"redis://127.0.0.1:{free_port()}/0", timeout=2.0)
    assert isinstance(info.value.__cause__, OSError)


def test_url_parsing() -> None:
    s = ConnectionSettings.from_url("redis://u%40x:p%3Aw@10.0.0.1:6380/3")
    assert (s.host, s.port, s.db, s.username, s.password, s.tls) == (
        "10.0.0.1",
        6380,
        3,
        "u@x",
        "p:w",
        False,
    )
    s = ConnectionSettings.from_url("rediss://:pw@h?ssl_cert_reqs=none&db=4")
    assert (s.host, s.port, s.db, s.username, s.password, s.tls) == ("h", 6379, 4, None, "pw", True)
    ctx = s.ssl_context()
    assert not ctx.check_hostname
    s = ConnectionSettings.from_url("unix:///tmp/r.sock?db=2")
    assert (s.path, s.db, s.host) == ("/tmp/r.sock", 2, None)
    with pytest.raises(ValueError):
        ConnectionSettings.from_url("http://h")


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return make_certs(tmp_path)


async def test_tls(redis_factory: Callable[..., RedisServer], certs: Certs) -> None:
    tls_port = free_port()
    redis_factory(*tls_args(certs, tls_port))
    base = f"rediss://127.0.0.1:{tls_port}/3"
    async with await RespConnection.connect(f"{base}?ssl_ca_certs={certs.ca}") as conn:
        assert await conn.execute_many([("SET", "t", 1), ("GET", "t")]) == [b"OK", b"1"]
        assert b"db=3" in await conn.execute("CLIENT", "INFO")
    async with await RespConnection.connect(f"{base}?ssl_cert_reqs=none") as conn:
        assert await conn.execute("GET", "t") == b"1"
    with pytest.raises(MeetqConnectionError) as info:  # the default CAs do not trust it
        await RespConnection.connect(base)
    assert isinstance(info.value.__cause__, ssl.SSLError)
