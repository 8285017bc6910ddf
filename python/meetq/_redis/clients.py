"""Turning what a caller gave (a URL, a redis-py client) into redis-py clients: which
clients can be cloned, the URL of a client's server, the routed clients of cluster and
sentinel URLs, and the start-up check of the server's eviction policy."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast
from urllib.parse import quote

import redis
import redis.asyncio
import redis.asyncio.connection

from meetq._redis.cluster import ClusterSettings
from meetq._redis.sentinel import SentinelSettings

log = logging.getLogger("meetq.redis")

ROUTED_SCHEMES = ("redis+cluster://", "redis+sentinel://")

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


def decodes(client: redis.asyncio.Redis) -> bool:
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
