"""Client plumbing shared by every Redis-backed component.

- `Endpoint`: the server a component was given (a URL or a redis.asyncio client). It holds
  the redis-py client for the cold paths, makes the component's private connections (a
  `Link` per hot path, a blocking clone for threads) and closes only what it opened.
- `Link`: one hot-path connection (meetq's `RespConnection`, or a private redis-py client
  without a URL) that replaces itself when it breaks or goes silent.

The reconnect policy is `_redis/retry.py`; making redis-py clients is `_redis/clients.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis
import redis.asyncio
import redis.asyncio.connection
import redis.connection
from redis.exceptions import ReadOnlyError, RedisError

from meetq._redis.clients import (
    ROUTED_SCHEMES,
    cluster_url_of,
    decodes,
    is_standard,
    routed_client,
    routed_sync_client,
    url_of,
)
from meetq._redis.cluster import SlotConnection
from meetq._redis.connection import RespConnection
from meetq._redis.sentinel import SentinelConnection
from meetq.errors import MeetqConnectionError

log = logging.getLogger("meetq.redis")

T = TypeVar("T")

HotConnection = RespConnection | SlotConnection | SentinelConnection
"""What a `Link` talks through: one socket, or one that follows a cluster slot or the
sentinels' master (same calls)."""


async def open_hot(url: str, reply_timeout: float | None, slot: int | None) -> HotConnection:
    """Our own connection for a hot path: to the server a plain URL names, to the master of
    `slot` for a cluster URL, or to the sentinels' master."""
    if url.startswith("redis+cluster://"):
        if slot is None:
            raise ValueError("a cluster connection needs the slot of the keys it serves")
        return await SlotConnection.connect(url, slot, timeout=5.0, reply_timeout=reply_timeout)
    if url.startswith("redis+sentinel://"):
        return await SentinelConnection.connect(url, timeout=5.0, reply_timeout=reply_timeout)
    return await RespConnection.connect(url, timeout=5.0, reply_timeout=reply_timeout)


class Link:
    """A connection of the queue's own for one hot path (fetch, doorbell, publish).

    meetq's `RespConnection` (one write per call, hiredis replies) costs a quarter of a
    redis-py round trip; it has no reconnect of its own, so a broken or silent connection
    (no reply within `timeout`) is dropped here and the next call opens a new one. So is a
    connection whose server answers READONLY: a failover demoted it, and the address may
    lead to the new primary now (a VIP, a DNS name, a proxy). Without a URL a private
    redis-py client does the same job.
    """

    def __init__(
        self,
        url: str | None,
        make_client: Callable[[], redis.asyncio.Redis],
        timeout: float,
        owned: bool = True,
        slot: int | None = None,
    ) -> None:
        self._url = url
        self._slot = slot
        self._owned = owned
        self._make_client = make_client
        self._timeout = timeout
        self._conn: HotConnection | None = None
        self._client: redis.asyncio.Redis | None = None
        self._lock: asyncio.Lock | None = None
        self._id: int | None = None
        self._closing: set[asyncio.Future[None]] = set()

    @property
    def is_open(self) -> bool:
        """Whether `send_many` can write at once (else it opens the connection first)."""
        return self._url is None or (self._conn is not None and not self._conn.closed)

    @property
    def _redis(self) -> redis.asyncio.Redis:
        """The redis-py client of a link without a URL, made on first use."""
        if self._client is None:
            self._client = self._make_client()
        return self._client

    async def _pipeline(self, commands: list[tuple[Any, ...]], transaction: bool) -> list[Any]:
        pipe = self._redis.pipeline(transaction=transaction)
        for command in commands:
            pipe.execute_command(*command)
        replies: list[Any] = await pipe.execute(raise_on_error=transaction)
        return replies

    async def execute(self, *args: Any) -> Any:
        if self._url is None:
            run: Callable[..., Awaitable[Any]] = self._redis.execute_command
            return await run(*args)
        conn = self._conn
        if conn is None or conn.closed:
            conn = await self._open()
        try:
            return await conn.execute(*args)
        except (MeetqConnectionError, OSError, ReadOnlyError):
            await self._drop(conn)
            raise

    async def execute_many(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """One write, replies in order; error replies are returned in place."""
        if self._url is None:
            return await self._pipeline(commands, transaction=False)
        conn = self._conn
        if conn is None or conn.closed:
            conn = await self._open()
        try:
            replies = await conn.execute_many(commands)
        except (MeetqConnectionError, OSError):
            await self._drop(conn)
            raise
        if any(isinstance(r, ReadOnlyError) for r in replies):
            await self._drop(conn)
        return replies

    def send_many(self, commands: list[tuple[Any, ...]]) -> asyncio.Future[list[Any]]:
        """`execute_many` as a future, with no task when the connection is open: the
        fetcher waits on it together with other things."""
        conn = self._conn
        if self._url is not None and conn is not None and not conn.closed:
            sent = conn.send_many(commands)
            sent.add_done_callback(lambda done: self._check_demoted(conn, done))
            return sent
        return asyncio.ensure_future(self.execute_many(commands))

    def _check_demoted(self, conn: HotConnection, done: asyncio.Future[list[Any]]) -> None:
        """After a `send_many` straight on the connection: READONLY drops it too."""
        if done.cancelled() or done.exception() is not None or self._conn is not conn:
            return
        if any(isinstance(r, ReadOnlyError) for r in done.result()):
            self._conn = None
            closing = asyncio.ensure_future(self._drop(conn))
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)

    async def transaction(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """MULTI, the commands, EXEC in one write; EXEC's replies, or the first error raised."""
        if self._url is None:
            return await self._pipeline(commands, transaction=True)
        replies = await self.execute_many([("MULTI",), *commands, ("EXEC",)])
        results = replies[-1]
        if results is None or isinstance(results, Exception):
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
            raise RedisError("transaction aborted")
        for reply in results:
            if isinstance(reply, Exception):
                raise reply
        result: list[Any] = results
        return result

    async def load(self, source: str) -> None:
        """SCRIPT LOAD on this link (redis-py's script_load, so a cluster loads everywhere)."""
        if self._url is None:
            await self._redis.script_load(source)
        else:
            await self.execute("SCRIPT", "LOAD", source)

    async def client_id(self) -> int | None:
        """CLIENT ID of the connection the next call uses (cached per connection)."""
        if not self._owned:
            return None  # a shared pool: no telling which connection serves the next call
        if self._url is not None and (self._conn is None or self._conn.closed):
            self._id = None
        if self._id is None:
            with contextlib.suppress(RedisError):
                self._id = int(await self.execute("CLIENT", "ID"))
        return self._id

    async def _open(self) -> HotConnection:
        assert self._url is not None
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._conn is None or self._conn.closed:
                self._conn = await open_hot(self._url, self._timeout, self._slot)
            return self._conn

    async def _drop(self, conn: HotConnection) -> None:
        if self._conn is conn:
            self._conn = None
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                await conn.close()

    async def close(self) -> None:
        if self._conn is not None:
            await self._drop(self._conn)
        if self._client is not None:
            if self._owned:
                await self._client.aclose()
            self._client = None


class Endpoint:
    """The Redis server of one component, as the caller named it.

    From a URL it builds (and later closes) its own redis-py client; a given client is
    shared and never closed here. `link()` makes private hot-path connections and
    `sync_client()` a blocking one for threads, both cloned from the client's settings when
    its pool is a standard one (else the client itself is shared: Sentinel, Cluster, custom
    pools find their servers themselves). `resp_connection=False` keeps every path on
    redis-py."""

    def __init__(self, redis_or_url: str | redis.asyncio.Redis, resp_connection: bool = True):
        self.client: redis.asyncio.Redis
        self.routed = False
        """A cluster or sentinel deployment: redis-py finds the servers for the cold paths,
        our `SlotConnection`/`SentinelConnection` for the hot ones."""
        if isinstance(redis_or_url, str) and redis_or_url.startswith(ROUTED_SCHEMES):
            self.client = routed_client(redis_or_url)
            self.owns_client = True
            self.standard = False
            self.routed = True
            self.url: str | None = redis_or_url if resp_connection else None
            return
        if isinstance(redis_or_url, redis.asyncio.RedisCluster):
            self.client = redis_or_url
            self.owns_client = False
            self.standard = False
            self.routed = True
            self.url = cluster_url_of(redis_or_url) if resp_connection else None
            return
        if isinstance(redis_or_url, str):
            # socket_timeout: a server that stops answering fails the call instead of
            # hanging it (stats, DLQ, failures and replies run on this client); keepalive
            # is a TCP option (a unix socket connection refuses the argument)
            # READONLY: a failover demoted the server; reconnecting may reach the new
            # primary at the same address (redis-py disconnects, then retries once)
            options: dict[str, Any] = {
                "socket_connect_timeout": 5,
                "socket_timeout": 30.0,
                "retry_on_error": [ReadOnlyError],
            }
            if not redis_or_url.startswith("unix:"):
                options["socket_keepalive"] = True
            self.client = redis.asyncio.Redis.from_url(redis_or_url, **options)
            self.owns_client = True
            url: str | None = redis_or_url
        else:
            self.client = redis_or_url
            self.owns_client = False
            url = url_of(redis_or_url)
        self.standard = is_standard(self.client)
        if decodes(self.client):
            # meetq reads bytes (ids, bodies that may not be UTF-8): a decoding client is
            # replaced by a private clone that does not decode; one we cannot clone is refused
            if not self.standard:
                raise ValueError(
                    "a redis client with decode_responses=True that meetq cannot clone "
                    "(Sentinel, Cluster, custom pool): pass one with decode_responses=False"
                )
            pool = self.client.connection_pool
            self.client = self._clone_async(
                pool.connection_kwargs.get("socket_timeout"), pool.max_connections
            )
            self.owns_client = True
        self.url = url if resp_connection else None

    def longest_block(self, wanted: float) -> float:
        """How long a blocking call may wait on this endpoint: a shared client's pool has
        its own socket timeout, and a BLPOP must stay inside it."""
        if self.standard:
            return wanted
        pool = getattr(self.client, "connection_pool", None)
        limit = pool.connection_kwargs.get("socket_timeout") if pool else None
        return min(wanted, max(0.05, float(limit) / 2)) if limit else wanted

    def link(self, timeout: float, single: bool = False, slot: int | None = None) -> Link:
        """A private hot-path connection whose replies may take at most `timeout` seconds
        (`slot`: the cluster slot of the keys it serves, needed on a cluster)."""
        if self.routed and self.url is not None:
            return Link(self.url, lambda: self.client, timeout, slot=slot)
        if not self.standard:
            return Link(None, lambda: self.client, timeout, owned=False)
        return Link(self.url, lambda: self._clone_async(timeout, 1 if single else 8), timeout)

    def sync_client(self, socket_timeout: float) -> redis.Redis | None:
        """A blocking client of the same server for a thread; None for a shared client."""
        if self.routed and self.url is not None:
            return routed_sync_client(self.url, socket_timeout)
        if not self.standard:
            return None
        cls, kwargs = self._conn_kwargs()
        sync_cls: type[Any] = redis.connection.Connection
        if issubclass(cls, redis.asyncio.connection.SSLConnection):
            sync_cls = redis.connection.SSLConnection
        elif issubclass(cls, redis.asyncio.connection.UnixDomainSocketConnection):
            sync_cls = redis.connection.UnixDomainSocketConnection
        kwargs["socket_timeout"] = socket_timeout
        kwargs.setdefault("socket_connect_timeout", 5.0)
        pool = redis.ConnectionPool(connection_class=sync_cls, max_connections=2, **kwargs)
        return redis.Redis(connection_pool=pool)

    async def close(self) -> None:
        """Closes the client if this endpoint made it."""
        if self.owns_client:
            await self.client.aclose()

    def _conn_kwargs(self) -> tuple[type[Any], dict[str, Any]]:
        pool = self.client.connection_pool
        kwargs = dict(pool.connection_kwargs)
        for drop in ("retry", "redis_connect_func", "parser_class", "connection_pool"):
            kwargs.pop(drop, None)
        kwargs["decode_responses"] = False
        # as for a client made from a URL: a demoted server's connection is replaced
        kwargs["retry_on_error"] = [*(kwargs.get("retry_on_error") or ()), ReadOnlyError]
        return pool.connection_class, kwargs

    def _clone_async(self, socket_timeout: float | None, connections: int) -> redis.asyncio.Redis:
        cls, kwargs = self._conn_kwargs()
        kwargs["socket_timeout"] = socket_timeout
        pool = redis.asyncio.ConnectionPool(
            connection_class=cls, max_connections=connections, **kwargs
        )
        return redis.asyncio.Redis(connection_pool=pool)
