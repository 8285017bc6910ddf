"""The queue on every kind of connection (issue 12 item 5): TCP and unix-socket servers,
a URL or a given client, a client that decodes responses or not, with and without meetq's
own RESP connection. Each case runs the whole cycle: publish, a handler slower than the
lease (renewal must keep it from a second delivery), a failure to the DLQ, a reply, stats,
the DLQ peek and a clean stop."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio

from helpers import RedisServer, async_wait_until, outlive_first_lease, reply_objects
from meetq import Message, RedisMessageQueue
from meetq._redis.keys import QueueKeys


@pytest.fixture
def unix_socket() -> Iterator[Path]:
    # a short path: unix socket names are limited to ~100 bytes
    with tempfile.TemporaryDirectory(prefix="mq", dir="/tmp") as d:
        yield Path(d) / "redis.sock"


@contextlib.asynccontextmanager
async def target(
    kind: str, server_url: str, client: str
) -> AsyncIterator[str | redis.asyncio.Redis]:
    if client == "url":
        yield server_url
        return
    r = redis.asyncio.Redis.from_url(server_url, decode_responses=client == "decoding")
    try:
        yield r
    finally:
        await r.aclose()


@pytest.mark.parametrize("resp_connection", [True, False], ids=["resp", "redis-py"])
@pytest.mark.parametrize("client", ["url", "client", "decoding"])
@pytest.mark.parametrize("transport", ["tcp", "unix"])
async def test_queue_cycle_on_every_connection(
    redis_factory: Callable[..., RedisServer],
    unix_socket: Path,
    transport: str,
    client: str,
    resp_connection: bool,
) -> None:
    server = redis_factory("--unixsocket", str(unix_socket), "--unixsocketperm", "700")
    url = server.url if transport == "tcp" else f"unix://{unix_socket}?db=0"
    name = f"conn-{transport}-{client}-{resp_connection}"
    reply_key = QueueKeys(name).named("reply:r1")
    runs: dict[str, int] = {}

    async def handler(msg: Message) -> dict[str, Any]:
        runs[msg.id] = runs.get(msg.id, 0) + 1
        if msg.payload.get("fail"):
            raise ValueError("bad input")
        if msg.payload.get("slow"):
            async with redis_client_of(url) as r:  # its work lasts past its first lease
                await outlive_first_lease(r, name, msg.id)
        return {"ok": msg.payload.get("n")}

    async with target(transport, url, client) as given:
        q = RedisMessageQueue(
            given, name, workers=2, visibility_timeout=1.0, resp_connection=resp_connection
        )
        q.register_handler("t", handler)
        async with q:
            slow = await q.publish(Message(type="t", payload={"slow": True}, timeout=10))
            bad = await q.publish(Message(type="t", payload={"fail": True}))
            good = await q.publish(Message(type="t", payload={"n": 7}, reply_to=reply_key))
            await async_wait_until(lambda: runs.get(slow) == 1 and len(runs) == 3, timeout=20)
            async with redis_client_of(url) as r:
                _, raw = await r.blpop([reply_key], timeout=10)  # type: ignore[misc]
            [reply] = reply_objects(raw)
            assert (reply["id"], reply["status"], reply["result"]) == (good, "completed", {"ok": 7})

            async def settled() -> bool:
                stats = await q.get_stats()
                return bool(stats["total_processed"] == 2 and stats["dead_letter_count"] == 1)

            await async_wait_until(settled, timeout=20)
            [dead] = await q.dead_letters()
            assert (dead.id, dead.reason) == (bad, "ValueError: bad input")
            assert dead.message is not None and dead.message.payload == {"fail": True}
            stats = await q.get_stats()
            assert stats["processing_count"] == 0 and stats["queue_length"]["total"] == 0
        assert runs == {slow: 1, bad: 1, good: 1}  # the slow one was never delivered twice
        assert not q.leases.renewing
        if client != "url":
            assert await given.ping()  # type: ignore[union-attr]  # a given client stays open


@contextlib.asynccontextmanager
async def redis_client_of(url: str) -> AsyncIterator[Any]:
    r = redis.asyncio.Redis.from_url(url)
    try:
        yield r
    finally:
        await r.aclose()


async def test_unix_url_admin_calls_work_without_a_worker(
    redis_factory: Callable[..., RedisServer], unix_socket: Path
) -> None:
    redis_factory("--unixsocket", str(unix_socket), "--unixsocketperm", "700")
    q = RedisMessageQueue(f"unix://{unix_socket}", "unix-admin")
    try:
        await q.publish(Message(type="t"))
        assert (await q.get_stats())["total_published"] == 1
        assert await q.dead_letter_count() == 0
    finally:
        await q.stop()
