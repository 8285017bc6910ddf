"""What the two buses share besides the handler runner (`broadcast.handlers`): the URL they
need (their readers run on connections of their own), the life-cycle surface (`state`,
`healthy`, `async with`), and their background loops' plumbing: a loop that keeps trying
to (re)connect or read with the shared outage policy (`_redis.retry.Outage`: backoff with
jitter, one warning per outage, an error once it lasts `retry_budget`), and a periodic
loop whose failed calls are logged, never fatal."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Self, TypeVar

import redis.asyncio
from redis.exceptions import RedisError

from meetq._core.lifecycle import Supervisor
from meetq._redis.clients import cluster_url_of, url_of
from meetq._redis.links import Link
from meetq._redis.retry import TRANSIENT, Outage
from meetq._redis.router import ClusterRouter

T = TypeVar("T")

FAILED_CALL: tuple[type[BaseException], ...] = (*TRANSIENT, RedisError)
"""A call that did not go through: the connection, or an error reply."""

LOOP_BACKOFF_CAP = 2.0
"""Longest pause between a background loop's tries (the `backoff` default)."""


def required_url(redis_or_url: str | redis.asyncio.Redis, owner: str) -> str:
    """The URL of `redis_or_url`; a client no URL can describe is refused."""
    if isinstance(redis_or_url, redis.asyncio.RedisCluster):
        return cluster_url_of(redis_or_url)
    url = redis_or_url if isinstance(redis_or_url, str) else url_of(redis_or_url)
    if url is None:
        raise ValueError(
            f"{owner} needs a URL, or a plain TCP/unix redis.asyncio client that a URL can "
            "describe (its reader runs on a connection of its own)"
        )
    return url


def bus_link(url: str, timeout: float) -> Link | ClusterRouter:
    """The bus's connection for commands on many keys: a self-replacing `Link`, or on
    Redis Cluster a router (one connection per master, each command on its slot's)."""
    if url.startswith("redis+cluster://"):
        return ClusterRouter(url, reply_timeout=timeout)
    return Link(url, lambda: redis.asyncio.Redis.from_url(url), timeout=timeout)


class Bus:
    """The life-cycle surface and loop plumbing of `RedisPubSubQueue` and
    `RedisStreamEventBus` (each sets `_state`, `_stopping` and `_supervisor`)."""

    _state: str
    _stopping: bool
    _supervisor: Supervisor
    retry_budget: float

    @property
    def state(self) -> str:
        return self._state

    @property
    def healthy(self) -> bool:
        return self._state == "live" and self._supervisor.healthy

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _outage(self, what: str) -> Outage:
        return Outage(what, self.retry_budget, cap=LOOP_BACKOFF_CAP)

    async def _until_done(
        self, call: Callable[[], Awaitable[T]], outage: Outage
    ) -> tuple[T | None, int]:
        """Runs `call` until it succeeds (pausing after each `TRANSIENT` failure by
        `outage`) or the bus stops; returns its result (None when stopped) and the
        number of attempts."""
        attempts = 0
        while not self._stopping:
            attempts += 1
            try:
                result = await call()
            except TRANSIENT as exc:
                await asyncio.sleep(outage.failed(exc))
                continue
            outage.succeeded()
            return result, attempts
        return None, attempts

    async def _every(
        self,
        period: float,
        call: Callable[[], Awaitable[Any]],
        log: logging.Logger | None,
        what: str,
    ) -> None:
        """Calls `call` every `period` seconds until the bus stops; a failed call is logged
        (at WARNING when `log` is given) and the loop goes on."""
        while not self._stopping:
            await asyncio.sleep(period)  # a period, not a synchronization
            try:
                await call()
            except FAILED_CALL as exc:
                if log is not None:
                    log.warning("%s failed: %r", what, exc)
