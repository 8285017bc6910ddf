"""Redis Sentinel for meetq's own connections: find the current master, follow failovers.

A `SentinelConnection` asks the sentinels (SENTINEL get-master-addr-by-name) where the
master is, checks that the server there really is a master (ROLE), and connects. When
that connection is lost, or the server answers READONLY (it was demoted to a replica by a
failover), it asks the sentinels again and resends the batch to the new master. Commands
refused with READONLY were not run, so resending them is safe; a batch lost with its
connection may have run (at-least-once, like every reconnect: meetq's writes are
idempotent on message ids).

URLs: `redis+sentinel://[[user]:password@]host:port[,host:port...]/<master name>[/db][?query]`;
the credentials are the data nodes' (sentinels are asked without them unless the query says
`sentinel_password=...`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from redis.exceptions import ReadOnlyError, RedisError

from meetq._core.backoff import backoff
from meetq._redis.connection import Arg, RespConnection
from meetq._redis.following import FollowingConnection
from meetq.errors import MeetqConnectionError

__all__ = ["SentinelConnection", "SentinelSettings", "find_master"]


@dataclass(frozen=True, slots=True)
class SentinelSettings:
    sentinels: tuple[tuple[str, int], ...]
    master_name: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None

    @classmethod
    def from_url(cls, url: str) -> SentinelSettings:
        parts = urlsplit(url)
        if parts.scheme != "redis+sentinel":
            raise ValueError(f"not a sentinel URL: {url!r}")
        auth, _, hosts = parts.netloc.rpartition("@")
        sentinels = []
        for hostport in hosts.split(","):
            host, _, port = hostport.rpartition(":")
            sentinels.append((host or hostport, int(port) if host else 26379))
        path = [p for p in parts.path.split("/") if p]
        if not path:
            raise ValueError(f"sentinel URL without a master name: {url!r}")
        user, _, password = auth.partition(":")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        return cls(
            tuple(sentinels),
            unquote(path[0]),
            int(path[1]) if len(path) > 1 else 0,
            unquote(user) or None,
            unquote(password) if auth and ":" in auth else None,
            query.get("sentinel_password"),
        )

    def master_url(self, host: str, port: int) -> str:
        auth = ""
        if self.password is not None:
            auth = f"{quote(self.username or '', safe='')}:{quote(self.password, safe='')}@"
        return f"redis://{auth}{host}:{port}/{self.db}"


async def find_master(settings: SentinelSettings, timeout: float = 5.0) -> tuple[str, int]:
    """The master's address as the first answering sentinel reports it."""
    errors: list[BaseException] = []
    for host, port in settings.sentinels:
        auth = (
            f":{quote(settings.sentinel_password, safe='')}@" if settings.sentinel_password else ""
        )
        try:
            conn = await RespConnection.connect(
                f"redis://{auth}{host}:{port}/0", timeout=timeout, reply_timeout=timeout
            )
        except (MeetqConnectionError, RedisError) as exc:
            errors.append(exc)
            continue
        try:
            addr = await conn.execute("SENTINEL", "get-master-addr-by-name", settings.master_name)
        except (MeetqConnectionError, RedisError) as exc:
            errors.append(exc)
            continue
        finally:
            await conn.close()
        if addr:
            return addr[0].decode(), int(addr[1])
    raise MeetqConnectionError(
        f"no sentinel knows master {settings.master_name!r} (asked {len(settings.sentinels)})"
    ) from (errors[-1] if errors else None)


class SentinelConnection(FollowingConnection):
    """A `RespConnection` to whichever server the sentinels call the master now."""

    def __init__(
        self, settings: SentinelSettings, *, retry_budget: float = 30.0, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self._settings = settings
        self._budget = retry_budget
        self.master: tuple[str, int] | None = None
        self.failovers = 0
        """Times a new master was found after the first (for tests and metrics)."""

    @classmethod
    async def connect(cls, url: str, **kwargs: Any) -> SentinelConnection:
        conn = cls(SentinelSettings.from_url(url), **kwargs)
        await conn._connection()
        return conn

    async def _locate(self) -> RespConnection:
        """The master the sentinels name, once it says ROLE master itself (right after a
        failover the sentinels may still name the demoted one), within the budget."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._budget
        attempt = 0
        while True:
            try:
                host, port = await find_master(self._settings, self._timeout)
                conn = await self._open(self._settings.master_url(host, port))
                role = await conn.execute("ROLE")
                if role[0] == b"master":
                    break
                await conn.close()
                cause: BaseException = ReadOnlyError(f"{host}:{port} is a {role[0]!r}")
            except (MeetqConnectionError, RedisError) as exc:
                cause = exc
            if loop.time() > deadline:
                raise MeetqConnectionError(
                    f"no master for {self._settings.master_name!r} within {self._budget}s"
                ) from cause
            await asyncio.sleep(backoff(attempt, base=0.05, cap=1.0))
            attempt += 1
        if self.master is not None and self.master != (host, port):
            self.failovers += 1
        self.master = (host, port)
        return conn

    async def execute_many(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        """One write to the master; after a lost connection or READONLY, the batch goes to
        the new master (replies in place, errors included)."""
        commands = list(commands)
        conn, replies = await self._send(commands)
        if any(isinstance(r, ReadOnlyError) for r in replies):
            conn = await self._connection(stale=conn)
            replies = await conn.execute_many(commands)
        return replies
