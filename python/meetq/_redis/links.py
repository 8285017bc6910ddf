"""Client plumbing shared by every Redis-backed component.

- `Endpoint`: the server a component was given (a URL or a redis.asyncio client). It holds
  the redis-py client for the cold paths, makes the component's private connections (a
  `Link` per hot path, a blocking clone for threads) and closes only what it opened.
- `Link`: one hot-path connection (meetq's `RespConnection`, or a private redis-py client
  without a URL) that replaces itself when it breaks or goes silent.
- `retrying`: the one reconnect policy: transient errors are retried with backoff and
  jitter within a budget, then raised as one `MeetqConnectionError` with the cause kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast
from urllib.parse import quote

import redis
import redis.asyncio
import redis.asyncio.connection
import redis.connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from meetq._core.backoff import backoff
from meetq._redis.cluster import ClusterSettings, SlotConnection
from meetq._redis.connection import RespConnection
from meetq._redis.sentinel import SentinelConnection, SentinelSettings
from meetq.errors import MeetqConnectionError, MeetqError, RedisCommandError

log = logging.getLogger("meetq.redis")

T = TypeVar("T")

HotConnection = RespConnection | SlotConnection | SentinelConnection
"""What a `Link` talks through: one socket, or one that follows a cluster slot or the
sentinels' master (same calls)."""

ROUTED_SCHEMES = ("redis+cluster://", "redis+sentinel://")


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


TRANSIENT: tuple[type[BaseException], ...] = (
    RedisConnectionError,  # includes LOADING (BusyLoadingError)
    RedisTimeoutError,
    ReadOnlyError,  # a replica (a failover demoted our server, or the URL names a replica)
    MeetqConnectionError,
    ConnectionError,
    OSError,
    TimeoutError,
)
"""Errors after which the same call may succeed later or on a new connection."""

_TRANSIENT_REPLIES = ("MASTERDOWN", "READONLY", "LOADING", "TRYAGAIN", "CLUSTERDOWN")
"""Error replies that redis-py leaves as a plain ResponseError but that mean "not now"."""


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the call that raised `exc` (after a pause) may succeed."""
    if isinstance(exc, TRANSIENT):
        return True
    return isinstance(exc, ResponseError) and str(exc).startswith(_TRANSIENT_REPLIES)


async def retrying(call: Callable[[], Awaitable[T]], budget: float, what: str) -> T:
    """Runs `call`, retrying `TRANSIENT` errors with backoff within `budget` seconds, then
    raises `MeetqConnectionError` ("redis unavailable for <what>") with the cause kept."""
    deadline = time.monotonic() + budget
    attempt = 0
    while True:
        try:
            return await call()
        except Exception as exc:
            if not is_transient(exc):
                if isinstance(exc, ResponseError) and not isinstance(exc, MeetqError):
                    # e.g. a key of the wrong type, written by someone else
                    raise RedisCommandError(f"redis refused a command of {what}: {exc}") from exc
                raise
            pause = backoff(attempt)
            attempt += 1
            if time.monotonic() + pause > deadline:
                raise MeetqConnectionError(
                    f"redis unavailable for {what}: {type(exc).__name__}: {exc}"
                ) from exc
            log.debug("%s: retrying after %r", what, exc)
            await asyncio.sleep(pause)


_STANDARD = (
    redis.asyncio.connection.Connection,
    redis.asyncio.connection.SSLConnection,
    redis.asyncio.connection.UnixDomainSocketConnection,
)


def is_standard(client: redis.asyncio.Redis) -> bool:
    """A client whose connections we can clone from its kwargs (not Sentinel-managed or
    otherwise custom: those find their server themselves, so we share the client)."""
    pool = getattr(client, "connection_pool", None)  # RedisCluster has none
    return pool is not None and pool.connection_class in _STANDARD


def url_of(client: redis.asyncio.Redis) -> str | None:
    """The URL of a redis-py client's server, when a plain URL says everything (no TLS
    options, no credential provider); None keeps that client's own connection code."""
    if not is_standard(client):
        return None
    pool = client.connection_pool
    kw = pool.connection_kwargs
    cls = pool.connection_class
    if kw.get("credential_provider") is not None:
        return None
    auth = ""
    if kw.get("password") is not None:
        auth = f"{quote(kw.get('username') or '', safe='')}:{quote(kw['password'], safe='')}@"
    db = int(kw.get("db") or 0)
    if issubclass(cls, redis.asyncio.connection.UnixDomainSocketConnection):
        return f"unix://{auth}{kw['path']}?db={db}"
    if issubclass(cls, redis.asyncio.connection.SSLConnection):
        return None
    if issubclass(cls, redis.asyncio.connection.Connection):
        return f"redis://{auth}{kw.get('host') or 'localhost'}:{kw.get('port') or 6379}/{db}"
    return None


class Outage:
    """The retry policy of a long-running loop (a fetcher, a subscriber): it keeps going.

    `failed(exc)` returns the pause before the next try (backoff with jitter, capped at
    `cap`), logs the first failure of an outage at WARNING and the rest at DEBUG; once the
    outage has lasted `budget` seconds it logs ONE error and sets `error` to a
    `MeetqConnectionError` with the cause kept (`on_down` is told, e.g. to mark the
    component unhealthy). `succeeded()` ends the outage (`on_up`, logged at INFO when an
    error had been reported)."""

    def __init__(
        self,
        what: str,
        budget: float,
        on_down: Callable[[MeetqConnectionError], None] | None = None,
        on_up: Callable[[], None] | None = None,
        cap: float = 5.0,
    ) -> None:
        self.what = what
        self.budget = budget
        self.on_down = on_down
        self.on_up = on_up
        self.cap = cap
        self.error: MeetqConnectionError | None = None
        self.attempt = 0
        self._since: float | None = None

    def failed(self, exc: BaseException) -> float:
        now = time.monotonic()
        if self._since is None:
            self._since = now
            log.warning("%s: %r; reconnecting with backoff", self.what, exc)
        else:
            log.debug("%s: still failing: %r", self.what, exc)
        if self.error is None and now - self._since >= self.budget:
            error = MeetqConnectionError(
                f"redis unavailable for {self.what} for {now - self._since:.1f}s: "
                f"{type(exc).__name__}: {exc}"
            )
            error.__cause__ = exc
            self.error = error
            log.error("%s: %s (still retrying)", self.what, error)
            if self.on_down is not None:
                self.on_down(error)
        pause = backoff(self.attempt, cap=self.cap)
        self.attempt += 1
        return pause

    def succeeded(self) -> None:
        if self._since is None:
            return
        if self.error is not None:
            log.info("%s: redis reachable again", self.what)
            if self.on_up is not None:
                self.on_up()
        self._since = None
        self.error = None
        self.attempt = 0


class Link:
    """A connection of the queue's own for one hot path (fetch, doorbell, publish).

    meetq's `RespConnection` (one write per call, hiredis replies) costs a quarter of a
    redis-py round trip; it has no reconnect of its own, so a broken or silent connection
    (no reply within `timeout`) is dropped here and the next call opens a new one. Without
    a URL a private redis-py client does the same job.
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
        except (MeetqConnectionError, OSError):
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
            return await conn.execute_many(commands)
        except (MeetqConnectionError, OSError):
            await self._drop(conn)
            raise

    def send_many(self, commands: list[tuple[Any, ...]]) -> asyncio.Future[list[Any]]:
        """`execute_many` as a future, with no task when the connection is open: the
        fetcher waits on it together with other things."""
        conn = self._conn
        if self._url is not None and conn is not None and not conn.closed:
            return conn.send_many(commands)
        return asyncio.ensure_future(self.execute_many(commands))

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


SAFE_POLICIES = ("noeviction", "volatile-lru", "volatile-lfu", "volatile-random", "volatile-ttl")
"""maxmemory policies that never evict meetq's queue keys (they carry no TTL)."""


async def warn_if_evicting(client: redis.asyncio.Redis, what: str) -> str | None:
    """Logs a WARNING when the server's maxmemory-policy may evict keys without a TTL
    (meetq's messages would silently vanish under memory pressure); returns the policy.
    Best effort: an unreachable server is left to the component's own retries."""
    try:
        async with asyncio.timeout(2.0):
            info: Any = await client.info("memory")
    except Exception as exc:
        log.debug("%s: could not read maxmemory-policy: %r", what, exc)
        return None
    infos = info.values() if info and all(isinstance(v, dict) for v in info.values()) else [info]
    for node in infos:
        policy = node.get("maxmemory_policy")
        if isinstance(policy, bytes):
            policy = policy.decode()
        if policy and policy not in SAFE_POLICIES:
            log.warning(
                "%s: redis maxmemory-policy is %r: under memory pressure Redis may EVICT "
                "meetq's queue keys and lose messages; use noeviction (or a volatile-* policy)",
                what,
                policy,
            )
            return str(policy)
    return None


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
            options: dict[str, Any] = {"socket_connect_timeout": 5, "socket_timeout": 30.0}
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
        if _decodes(self.client):
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
        return pool.connection_class, kwargs

    def _clone_async(self, socket_timeout: float | None, connections: int) -> redis.asyncio.Redis:
        cls, kwargs = self._conn_kwargs()
        kwargs["socket_timeout"] = socket_timeout
        pool = redis.asyncio.ConnectionPool(
            connection_class=cls, max_connections=connections, **kwargs
        )
        return redis.asyncio.Redis(connection_pool=pool)


def _decodes(client: redis.asyncio.Redis) -> bool:
    """Whether a redis-py client returns str instead of bytes."""
    get_encoder = getattr(client, "get_encoder", None)
    if get_encoder is None:
        return False
    return bool(get_encoder().decode_responses)


def _client_options(url: str) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """The nodes a cluster or sentinel URL names, and redis-py options for its servers."""
    if url.startswith("redis+cluster://"):
        c = ClusterSettings.from_url(url)
        node = c.node
        options: dict[str, Any] = {"username": node.username, "password": node.password}
        if node.tls:
            options.update(
                ssl=True,
                ssl_cert_reqs=node.ssl_cert_reqs,
                ssl_ca_certs=node.ssl_ca_certs,
                ssl_check_hostname=node.ssl_check_hostname,
            )
        return list(c.seeds), options
    s = SentinelSettings.from_url(url)
    return list(s.sentinels), {"username": s.username, "password": s.password, "db": s.db}


def routed_client(url: str) -> redis.asyncio.Redis:
    """redis-py's client for a `redis+cluster://` or `redis+sentinel://` URL."""
    nodes, options = _client_options(url)
    timeouts = {"socket_connect_timeout": 5.0, "socket_timeout": 30.0}
    make: Any
    if url.startswith("redis+cluster://"):
        from redis.asyncio.cluster import ClusterNode

        make = redis.asyncio.RedisCluster
        client = make(startup_nodes=[ClusterNode(h, p) for h, p in nodes], **options, **timeouts)
    else:
        s = SentinelSettings.from_url(url)
        make = redis.asyncio.Sentinel
        sentinel = make(nodes, sentinel_kwargs={"password": s.sentinel_password, **timeouts},
                        **timeouts)  # fmt: skip
        client = sentinel.master_for(s.master_name, **options)
    return cast(redis.asyncio.Redis, client)


def routed_sync_client(url: str, socket_timeout: float) -> redis.Redis:
    """The blocking twin of `routed_client`, for a thread."""
    nodes, options = _client_options(url)
    timeouts = {"socket_connect_timeout": 5.0, "socket_timeout": socket_timeout}
    make: Any
    if url.startswith("redis+cluster://"):
        from redis.cluster import ClusterNode

        make, node = redis.RedisCluster, cast(Any, ClusterNode)
        client = make(startup_nodes=[node(h, p) for h, p in nodes], **options, **timeouts)
    else:
        s = SentinelSettings.from_url(url)
        make = redis.Sentinel
        sentinel = make(nodes, sentinel_kwargs={"password": s.sentinel_password, **timeouts},
                        **timeouts)  # fmt: skip
        client = sentinel.master_for(s.master_name, **options)
    return cast(redis.Redis, client)


def cluster_url_of(client: redis.asyncio.RedisCluster) -> str:
    """A `redis+cluster://` URL for the nodes a given RedisCluster knows."""
    kw = client.nodes_manager.connection_kwargs
    auth = ""
    if kw.get("password") is not None:
        auth = f"{quote(kw.get('username') or '', safe='')}:{quote(kw['password'], safe='')}@"
    nodes = ",".join(f"{n.host}:{n.port}" for n in client.get_nodes()) or ",".join(
        f"{n.host}:{n.port}" for n in client.nodes_manager.startup_nodes.values()
    )
    return f"redis+cluster://{auth}{nodes}"
