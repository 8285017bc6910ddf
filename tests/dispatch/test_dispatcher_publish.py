"""A publish MULTI whose connection dies before EXEC's reply: the retry asks Redis whether
the transaction ran (the first task's status hash) before it sends it again, so the task
is published once."""

from __future__ import annotations

import asyncio
from typing import Any

from helpers import async_wait_until, redis_client
from meetq import ServiceRoute, TaskDispatcher, TaskRequest
from meetq._redis.keys import QueueKeys

QUEUE = "test_tasks"


async def test_a_multi_whose_connection_dies_unanswered_is_published_once(
    redis_url: str, route: ServiceRoute
) -> None:
    async with (
        TaskDispatcher(redis_url, routes=[route], retry_budget=10.0, stop_grace=0) as d,
        redis_client(redis_url) as r,
    ):
        await d.dispatch(TaskRequest(type="echo", timeout=20))  # the connection is open
        assert d.publishes == 1
        await r.execute_command("CLIENT", "PAUSE", 20_000, "WRITE")
        try:
            waiting = asyncio.ensure_future(d.dispatch(TaskRequest(type="echo", timeout=20)))
            # the MULTI reached Redis and waits there, its EXEC postponed by the pause
            await async_wait_until(lambda: _postponed(r), timeout=10)
            await r.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        finally:
            await r.execute_command("CLIENT", "UNPAUSE")
        await asyncio.wait_for(waiting, 20)
        assert d.publishes == 2
        assert await r.hlen(QueueKeys(QUEUE).named("msg")) == 2  # each task once


async def _postponed(r: Any) -> bool:
    """A client inside MULTI (x) and blocked (b): an EXEC held by CLIENT PAUSE."""
    return any("x" in c["flags"] and "b" in c["flags"] for c in await r.client_list())
