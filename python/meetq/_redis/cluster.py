"""Redis Cluster routing for meetq's own connections.

Every key of one meetq component carries the same hash tag (`_redis/keys.py`), so all
the commands a hot path sends touch ONE slot. Routing is therefore per slot, not per
command: a `SlotConnection` is a `RespConnection` to whichever master serves its slot
now. It learns the owner from CLUSTER SLOTS, and when the cluster answers MOVED (the slot
moved for good: a failover or a resharding) it re-reads the map, reconnects and sends the
refused commands again; ASK (the slot is being migrated and this key is already on the
target) sends ASKING and the command to the target once, without changing the map. A
connection error re-reads the map from any node that answers, so a promoted replica is
found without a restart.

Commands Redis refused with MOVED/ASK were not run, so resending them is safe; commands of
the same batch that ran keep their replies. A MULTI/EXEC batch whose EXEC was aborted by a
redirection is resent whole.

URLs: `redis+cluster://[[user]:password@]host:port[,host:port...][/?query]` (the query as
for `rediss://`, with `tls=true` for TLS). redis-py's `RedisCluster` is what the rest of
meetq (administration, scripts loaded on every master) uses for the same URL.
"""

from __future__ import annotations

import binascii
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote, urlsplit

from redis.exceptions import AskError, MovedError, RedisError, ResponseError

from meetq._redis.connection import Arg, ConnectionSettings, RespConnection
from meetq._redis.following import FollowingConnection
from meetq.errors import MeetqConnectionError

__all__ = ["ClusterSettings", "SlotConnection", "key_slot", "master_url", "slot_map"]

SLOTS = 16384


def key_slot(key: bytes | str) -> int:
    """The cluster slot of `key`: CRC16 (XMODEM) of its hash tag (the text between the
    first `{` and the next `}`, when not empty), else of the whole key, mod 16384."""
    data = key.encode() if isinstance(key, str) else key
    start = data.find(b"{")
    if start >= 0:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            data = data[start + 1 : end]
    return binascii.crc_hqx(data, 0) % SLOTS


@dataclass(frozen=True, slots=True)
class ClusterSettings:
    """What a `redis+cluster://` URL says: seed nodes and how to talk to every node."""

    seeds: tuple[tuple[str, int], ...]
    node: ConnectionSettings

    @classmethod
    def from_url(cls, url: str) -> ClusterSettings:
        parts = urlsplit(url)
        if parts.scheme != "redis+cluster":
            raise ValueError(f"not a cluster URL: {url!r}")
        auth, _, hosts = parts.netloc.rpartition("@")
        seeds: list[tuple[str, int]] = []
        for hostport in hosts.split(","):
            host, _, port = hostport.rpartition(":")
            if not host:
                host, port = hostport, "6379"
            seeds.append((host.strip("[]"), int(port)))
        if not seeds:
            raise ValueError(f"cluster URL without nodes: {url!r}")
        query = f"?{parts.query}" if parts.query else ""
        tls = "tls=true" in parts.query.lower()
        scheme = "rediss" if tls else "redis"
        prefix = f"{auth}@" if auth else ""
        node = ConnectionSettings.from_url(f"{scheme}://{prefix}{seeds[0][0]}:{seeds[0][1]}{query}")
        if parts.path.strip("/") not in ("", "0"):
            raise ValueError(f"Redis Cluster has only db 0: {url!r}")
        return cls(tuple(seeds), node)

    def url_for(self, host: str, port: int) -> str:
        """A plain URL for one node, carrying the credentials and TLS options."""
        s = self.node
        auth = ""
        if s.password is not None:
            auth = f"{quote(s.username or '', safe='')}:{quote(s.password, safe='')}@"
        query = ""
        if s.tls:
            opts = [f"ssl_cert_reqs={s.ssl_cert_reqs}"]
            if s.ssl_ca_certs:
                opts.append(f"ssl_ca_certs={s.ssl_ca_certs}")
            if not s.ssl_check_hostname:
                opts.append("ssl_check_hostname=false")
            query = "?" + "&".join(opts)
        return f"{'rediss' if s.tls else 'redis'}://{auth}{host}:{port}/0{query}"

    def with_seed(self, host: str, port: int) -> ClusterSettings:
        """The same settings with `host:port` tried first next time."""
        rest = tuple(s for s in self.seeds if s != (host, port))
        return replace(self, seeds=((host, port), *rest))


async def slot_map(
    settings: ClusterSettings,
    *,
    timeout: float = 5.0,
    ssl_context: ssl.SSLContext | None = None,
) -> list[tuple[int, int, str, int]]:
    """(first slot, last slot, master host, master port) for every served range, from the
    first seed node that answers CLUSTER SLOTS."""
    errors: list[BaseException] = []
    for host, port in settings.seeds:
        try:
            conn = await RespConnection.connect(
                settings.url_for(host, port),
                timeout=timeout,
                reply_timeout=timeout,
                ssl_context=ssl_context,
            )
        except (MeetqConnectionError, RedisError) as exc:
            errors.append(exc)
            continue
        try:
            reply = await conn.execute("CLUSTER", "SLOTS")
        except (MeetqConnectionError, RedisError) as exc:
            errors.append(exc)
            continue
        finally:
            await conn.close()
        ranges = []
        for entry in reply:
            lo, hi, master = int(entry[0]), int(entry[1]), entry[2]
            mhost = master[0].decode() if master[0] else host
            ranges.append((lo, hi, mhost, int(master[1])))
        if ranges:
            return sorted(ranges)
    cause = errors[-1] if errors else None
    raise MeetqConnectionError(
        f"no cluster node answered CLUSTER SLOTS (tried {len(settings.seeds)})"
    ) from cause


async def master_url(url: str, slot: int, *, timeout: float = 5.0) -> str:
    """A plain URL of the master serving `slot` now, for a redis-py client of that node
    (a Pub/Sub subscription: cluster PUBLISH reaches every node)."""
    settings = ClusterSettings.from_url(url)
    host, port = _owner(await slot_map(settings, timeout=timeout), slot)
    return settings.url_for(host, port)


def _owner(ranges: Sequence[tuple[int, int, str, int]], slot: int) -> tuple[str, int]:
    for lo, hi, host, port in ranges:
        if lo <= slot <= hi:
            return host, port
    raise MeetqConnectionError(f"no master serves slot {slot} (cluster down?)")


def _redirect(reply: object) -> tuple[str, str, int] | None:
    """("MOVED"|"ASK", host, port) when `reply` is a redirection error."""
    if isinstance(reply, MovedError | AskError):
        return ("ASK" if isinstance(reply, AskError) else "MOVED", reply.host, int(reply.port))
    if isinstance(reply, ResponseError):
        text = str(reply)
        for kind in ("MOVED", "ASK"):
            if text.startswith(kind + " "):
                _, _, where = text.split(" ", 2)
                host, _, port = where.rpartition(":")
                return kind, host, int(port)
    return None


class SlotConnection(FollowingConnection):
    """A `RespConnection` to the master of one slot, following the slot when it moves.

    Same calls as `RespConnection` (`execute`, `execute_many`, `send_many`, `close`) for
    commands whose keys are all in `slot`; keyless commands go to that master too.
    """

    def __init__(
        self, settings: ClusterSettings, slot: int, *, max_redirects: int = 5, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self._settings = settings
        self.slot = slot
        self._max_redirects = max_redirects
        self.owner: tuple[str, int] | None = None
        self.redirects = 0
        """MOVED/ASK replies followed so far (for tests and metrics)."""

    @classmethod
    async def connect(cls, url: str, slot: int, **kwargs: Any) -> SlotConnection:
        conn = cls(ClusterSettings.from_url(url), slot, **kwargs)
        await conn._connection()
        return conn

    async def _locate(self) -> RespConnection:
        ranges = await slot_map(
            self._settings, timeout=self._timeout, ssl_context=self._ssl_context
        )
        host, port = _owner(ranges, self.slot)
        conn = await self._open(self._settings.url_for(host, port))
        self.owner = (host, port)
        self._settings = self._settings.with_seed(host, port)
        return conn

    async def execute_many(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        """One write to the slot's master; redirected commands are resent where the
        cluster says, the others keep their replies (in place, errors included)."""
        commands = list(commands)
        transaction = bool(commands) and _name(commands[0]) == b"MULTI"
        conn, replies = await self._send(commands)
        for _ in range(self._max_redirects):
            redirected = [(i, rd) for i, r in enumerate(replies) if (rd := _redirect(r))]
            if not redirected:
                return replies
            self.redirects += 1
            kind, host, port = redirected[0][1]
            todo = range(len(commands)) if transaction else [i for i, _ in redirected]
            resend = [commands[i] for i in todo]
            if kind == "MOVED":
                conn = await self._connection(stale=conn)
                again = await conn.execute_many(resend)
            else:
                target = await self._open(self._settings.url_for(host, port))
                try:
                    asked: list[Sequence[Arg]] = []
                    for command in resend:
                        asked += [("ASKING",), command]
                    again = (await target.execute_many(asked))[1::2]
                finally:
                    await target.close()
            for i, reply in zip(todo, again, strict=True):
                replies[i] = reply
        raise MeetqConnectionError(
            f"slot {self.slot} still redirected after {self._max_redirects} tries"
        )


def _name(command: Sequence[Arg]) -> bytes:
    head = command[0]
    return (head.encode() if isinstance(head, str) else bytes(head)).upper()  # type: ignore[arg-type]
