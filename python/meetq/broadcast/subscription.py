"""Keeping a `RedisPubSubQueue`'s subscription live: connect and subscribe the whole table
(confirmed by the server), notice the connection is lost (closed, or a publish-and-echo
probe on the private channel not echoed), reconnect with the shared outage policy,
re-subscribe everything and emit `meetq.pubsub.reconnected` with the time away. On Redis
Cluster the subscription is a `ShardedSubscriber` (one connection per master, a probe
each) that the same machinery keeps live."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from meetq import events
from meetq._redis.sentinel import SentinelSettings, find_master
from meetq.broadcast.bus import FAILED_CALL, Bus
from meetq.broadcast.sharded import ShardedSubscriber
from meetq.broadcast.subscriber import SubscriberConnection
from meetq.errors import MeetqConnectionError

if TYPE_CHECKING:
    from meetq._redis.links import Link
    from meetq._redis.router import ClusterRouter
    from meetq.broadcast.handlers import HandlerSpec

log = logging.getLogger("meetq.broadcast.pubsub")

_TABLES = ((b"SUBSCRIBE", b"UNSUBSCRIBE"), (b"PSUBSCRIBE", b"PUNSUBSCRIBE"))

Subscription = SubscriberConnection | ShardedSubscriber


class SubscriptionKeeper(Bus):
    """Mixin of `RedisPubSubQueue`: the subscription connection and its supervision."""

    _url: str
    _cluster: bool
    _instance: str
    _publish_command: bytes
    _link: Link | ClusterRouter
    _channels: dict[bytes, list[HandlerSpec]]
    _patterns: dict[bytes, list[HandlerSpec]]
    _probe_channel: bytes
    subscribe_batch: int
    probe_interval: float
    probe_timeout: float
    _conn: Subscription | None
    _paused: bool
    _down: asyncio.Event
    _lost_cause: BaseException | None
    _lost_alive: float
    _lost_detected: float
    _probe_token: int
    _probe_waits: dict[bytes, tuple[bytes, asyncio.Future[None]] | None]
    _reconnects: int
    _probes_failed: int
    _last_away: float | None
    _last_subscribe_time: float | None

    def _on_push(self, reply: list[Any]) -> None:
        raise NotImplementedError

    def _emit_local(self, name: str, payload: dict[str, Any]) -> None:
        raise NotImplementedError

    def _write(self, commands: list[tuple[bytes, ...]], confirmations: int) -> None:
        conn = self._conn
        if conn is None or self._state != "live":
            return  # (re)connecting: the whole table is subscribed then
        with contextlib.suppress(MeetqConnectionError):
            conn.write(commands, confirmations)

    async def confirmed(self) -> None:
        """Returns once every subscribe/unsubscribe made so far is confirmed by the server
        (at once when not started: `start` confirms them all)."""
        conn = self._conn
        if conn is not None and self._state == "live":
            await conn.confirmed()

    async def _server_url(self) -> str:
        """The server to subscribe on: the URL's, or the master the sentinels name now (a
        subscriber left on a demoted master still receives: PUBLISH is replicated)."""
        if not self._url.startswith("redis+sentinel://"):
            return self._url
        settings = SentinelSettings.from_url(self._url)
        host, port = await find_master(settings)
        return settings.master_url(host, port)

    async def _connect(self) -> None:
        """Opens a subscription connection and subscribes the whole table, confirmed."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        conn: Subscription
        commands: list[tuple[bytes, ...]] = []
        count = 0
        if self._cluster:
            conn = await ShardedSubscriber.open(self._url, self._instance)
        else:
            conn = await SubscriberConnection.open(await self._server_url())
        try:
            conn.enter_push_mode(self._on_push)  # a sharded one subscribes its probes here
            conn.on_lost = lambda exc: self._lost(conn, exc)
            if isinstance(conn, ShardedSubscriber):
                self._probe_waits = dict.fromkeys(conn.probes.values())
            else:
                commands.append((b"SUBSCRIBE", self._probe_channel))
                count = 1
            snapshot: list[set[bytes]] = []
            for (command, _), table in zip(_TABLES, (self._channels, self._patterns), strict=True):
                names = list(table)
                snapshot.append(set(names))
                count += len(names)
                size = self.subscribe_batch
                commands.extend((command, *names[i : i + size]) for i in range(0, len(names), size))
            conn.write(commands, count)
            async with asyncio.timeout(max(10.0, count / 2000)):
                await conn.confirmed()
                # (un)subscribed while this connection was being confirmed: catch up
                late: list[tuple[bytes, ...]] = []
                for (add, drop), table, sent in zip(
                    _TABLES, (self._channels, self._patterns), snapshot, strict=True
                ):
                    late += [(add, n) for n in table if n not in sent]
                    late += [(drop, n) for n in sent if n not in table]
                if late:
                    conn.write(late, len(late))
                    await conn.confirmed()
        except BaseException:
            await conn.close()
            raise
        self._last_subscribe_time = loop.time() - started
        self._paused = False
        self._conn = conn
        self._state = "live"
        if conn.closed:  # lost between the confirmation and here
            self._lost(conn, conn._lost)

    def _lost(self, conn: Subscription, cause: BaseException | None) -> None:
        if conn is not self._conn:
            return
        self._conn = None
        if self._stopping:
            return
        self._state = "reconnecting"
        self._lost_cause = cause
        self._lost_alive = conn.last_data
        self._lost_detected = asyncio.get_running_loop().time()
        log.warning("pubsub subscription lost (%r); reconnecting", cause)
        self._down.set()

    async def _reconnect_loop(self) -> None:
        loop = asyncio.get_running_loop()
        outage = self._outage("pubsub reconnect")
        while not self._stopping:
            await self._down.wait()
            self._down.clear()
            if self._stopping:
                return
            _, attempts = await self._until_done(self._connect, outage)
            if self._stopping:
                return
            away = loop.time() - self._lost_alive
            self._reconnects += 1
            self._last_away = away
            log.warning(
                "pubsub re-subscribed %d channels and %d patterns after %.3fs away",
                len(self._channels),
                len(self._patterns),
                away,
            )
            self._emit_local(
                events.PUBSUB_RECONNECTED,
                {
                    "away": away,
                    "detected_after": self._lost_detected - self._lost_alive,
                    "reason": repr(self._lost_cause),
                    "channels": len(self._channels),
                    "patterns": len(self._patterns),
                    "attempts": attempts,
                },
            )

    async def _probe_loop(self) -> None:
        await self._every(self.probe_interval, self._probe_once, None, "pubsub probe")

    async def _probe_once(self) -> None:
        """Publish-and-echo on the private channel when the subscription was quiet for
        `probe_interval`; no echo within `probe_timeout` drops the connection."""
        conn = self._conn
        if conn is None or self._state != "live" or self._paused:
            return
        loop = asyncio.get_running_loop()
        targets = (
            conn.probe_targets()
            if isinstance(conn, ShardedSubscriber)
            else [(conn, self._probe_channel)]
        )
        # traffic arrived lately on a connection: its path is alive
        quiet = [ch for m, ch in targets if loop.time() - m.last_data >= self.probe_interval]
        if not quiet:
            return
        self._probe_token += 1
        token = str(self._probe_token).encode()
        futures: list[asyncio.Future[None]] = []
        for channel in quiet:
            future: asyncio.Future[None] = loop.create_future()
            self._probe_waits[channel] = (token, future)
            futures.append(future)
        try:
            async with asyncio.timeout(self.probe_timeout):
                await self._link.execute_many([(self._publish_command, ch, token) for ch in quiet])
                await asyncio.gather(*futures)
        except FAILED_CALL as exc:
            if conn is self._conn and not self._paused:
                self._probes_failed += 1
                log.warning("pubsub probe not echoed (%r): dropping the subscription", exc)
                conn.abort(TimeoutError(f"probe not echoed within {self.probe_timeout}s"))
                # the publish connection may sit on the same dead path: replace it too
                # (publishes in flight on it fail over and retry on a fresh one)
                await self._link.close()
        finally:
            for channel in quiet:
                if channel in self._probe_waits:
                    self._probe_waits[channel] = None
