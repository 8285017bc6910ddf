"""`RedisPubSubQueue`: Redis Pub/Sub broadcast that never fails silently.

One subscription connection per instance (our `RespConnection` in push mode), fanned out
locally to every handler of the channel or pattern; a message no local handler wants is
counted and not decoded. Publishing goes through a self-replacing `Link` (one write per
batch).

Never silent. The subscription is watched three ways: the socket closing (`CLIENT KILL`, a
restart), and a publish-and-echo probe on a private channel every `probe_interval` seconds
of quiet, which catches a path that stays open but delivers nothing (a half-open TCP path,
a proxy that swallows bytes). On any of them the connection is dropped and a supervisor
reconnects with backoff and jitter, re-subscribes every channel and pattern, waits for the
server to confirm them, and emits the local event `meetq.pubsub.reconnected` with `away`:
the seconds since the old connection last proved alive, i.e. the window in which messages
may have been missed.

Gaps. Every message meetq publishes carries its publisher's id and a sequence number per
(publisher, channel). A subscriber that sees a number jump emits `meetq.pubsub.gap` with
the missing range, and drops a repeat (a publish retried after a lost reply). Pub/Sub is
still at-most-once: what was published while nobody listened is gone, and a gap is only
seen when that publisher publishes again. Use `RedisStreamEventBus` for what must arrive.

Local events go to handlers registered with `on(name, fn)` and, when a `local_bus` is
given, are emitted on it too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any

import redis.asyncio

from meetq import events
from meetq._core.lifecycle import Supervisor
from meetq._redis.keys import pubsub_probe_channel
from meetq._redis.retry import retrying
from meetq.broadcast.bus import bus_link, required_url
from meetq.broadcast.handlers import FanOut, HandlerSpec, spec_of
from meetq.broadcast.message import (
    DEFAULT_MAX_SIZE,
    BroadcastCodec,
    Format,
    PubSubMessage,
    instance_id,
)
from meetq.broadcast.publisher import Publisher
from meetq.broadcast.sequence import SequenceTracker
from meetq.broadcast.subscriber import SubscriberConnection
from meetq.broadcast.subscription import SubscriptionKeeper
from meetq.errors import InvalidArgumentError, MeetqError

log = logging.getLogger("meetq.broadcast.pubsub")

Handler = Callable[[PubSubMessage], Any]


class RedisPubSubQueue(SubscriptionKeeper):
    """Pub/Sub broadcast with local fan-out; see the module docstring.

    Knobs beyond DESIGN.md: `handler_timeout` (async/thread handlers), `probe_interval` and
    `probe_timeout` (the liveness probe), `max_in_flight` (suspended handler runs before
    reading pauses: back-pressure instead of unbounded tasks), `subscribe_batch` (channels
    per SUBSCRIBE command), `retry_budget` (seconds `start` and publishers retry),
    `gap_detection`, `local_bus` (a `LocalEventBus` that also receives the local events),
    `serializer` and `max_message_size`.
    """

    def __init__(
        self,
        redis_or_url: str | redis.asyncio.Redis,
        *,
        handler_timeout: float = 10.0,
        probe_interval: float = 1.0,
        probe_timeout: float = 2.0,
        max_in_flight: int = 1000,
        subscribe_batch: int = 1000,
        retry_budget: float = 10.0,
        gap_detection: bool = True,
        local_bus: Any = None,
        serializer: Format = "json",
        max_message_size: int = DEFAULT_MAX_SIZE,
        stop_timeout: float = 10.0,
        source: str = "",
    ) -> None:
        url = required_url(redis_or_url, "RedisPubSubQueue")
        if probe_interval <= 0 or probe_timeout <= 0:
            raise ValueError("probe_interval and probe_timeout must be positive")
        if max_in_flight <= 0 or subscribe_batch <= 0:
            raise ValueError("max_in_flight and subscribe_batch must be positive")
        self._url = url
        self.probe_interval = probe_interval
        self.probe_timeout = probe_timeout
        self.max_in_flight = max_in_flight
        self.subscribe_batch = subscribe_batch
        self.retry_budget = retry_budget
        self.gap_detection = gap_detection
        self.stop_timeout = stop_timeout
        self.source = source
        self.local_bus = local_bus
        self._codec = BroadcastCodec(serializer, max_message_size)
        self._instance = instance_id()
        self._probe_channel = pubsub_probe_channel(self._instance).encode()
        self._cluster = url.startswith("redis+cluster://")
        self._link = bus_link(url, timeout=5.0)
        self._publish_command = b"SPUBLISH" if self._cluster else b"PUBLISH"
        self._publisher = Publisher(
            self._link, self._codec, self._instance, retry_budget, source, self._publish_command
        )
        self._runner = FanOut(handler_timeout, "pubsub")
        self._runner.on_release = self._released

        self._channels: dict[bytes, list[HandlerSpec]] = {}
        self._patterns: dict[bytes, list[HandlerSpec]] = {}
        self._local: dict[str, list[HandlerSpec]] = {}
        self._sequences = SequenceTracker()
        self._names: dict[bytes, str] = {}  # channel and pattern names already decoded
        self._decode = self._codec.decode_pubsub
        self._done = self._one_done  # one bound method, not one per message

        self._conn: SubscriberConnection | None = None
        self._state = "stopped"
        self._stopping = False
        self._paused = False
        self._down = asyncio.Event()
        self._lost_cause: BaseException | None = None
        self._lost_alive = 0.0  # loop time the lost connection last proved alive
        self._lost_detected = 0.0
        self._supervisor = Supervisor("pubsub")
        self._probe_token = 0
        self._probe_waits: dict[bytes, tuple[bytes, asyncio.Future[None]] | None] = {
            self._probe_channel: None
        }

        self._received = 0
        self._processed = 0
        self._malformed = 0
        self._unrouted = 0
        self._reconnects = 0
        self._probes_failed = 0
        self._last_away: float | None = None
        self._last_subscribe_time: float | None = None

    # -- registration ----------------------------------------------------------------------

    def subscribe(self, channel: str, handler: Handler, *, in_thread: bool = False) -> None:
        """Runs `handler(msg)` for every message on `channel` (several handlers may share
        it). When started, the SUBSCRIBE is written at once; `await confirmed()` waits
        for the server's confirmation."""
        self._add(self._channels, channel, handler, in_thread, b"SUBSCRIBE")

    def psubscribe(self, pattern: str, handler: Handler, *, in_thread: bool = False) -> None:
        """Like `subscribe` for a glob pattern (`meeting.*`); `msg.pattern` is set.
        Not on Redis Cluster (InvalidArgumentError): patterns have no sharded form, and a
        classic PSUBSCRIBE would never see the SPUBLISHed messages."""
        if self._cluster:
            raise InvalidArgumentError(
                "psubscribe is not available on Redis Cluster: shard channels (SSUBSCRIBE) "
                "have no patterns; subscribe to the channels by name"
            )
        self._add(self._patterns, pattern, handler, in_thread, b"PSUBSCRIBE")

    def unsubscribe(self, channel: str, handler: Handler | None = None) -> bool:
        """Removes `handler` (or every handler) of `channel`; the last one removed
        unsubscribes. Returns whether anything was removed."""
        return self._remove(self._channels, channel, handler, b"UNSUBSCRIBE")

    def punsubscribe(self, pattern: str, handler: Handler | None = None) -> bool:
        return self._remove(self._patterns, pattern, handler, b"PUNSUBSCRIBE")

    def on(self, name: str, handler: Handler, *, in_thread: bool = False) -> None:
        """Handles a local event: `events.PUBSUB_RECONNECTED` (payload: away,
        detected_after, reason, channels, patterns, attempts) or `events.PUBSUB_GAP`
        (channel, publisher, from, to, missed)."""
        self._local.setdefault(name, []).append(spec_of(handler, in_thread))

    def _add(
        self,
        table: dict[bytes, list[HandlerSpec]],
        name: str,
        handler: Handler,
        in_thread: bool,
        command: bytes,
    ) -> None:
        if not name:
            raise ValueError("channel or pattern must be non-empty")
        key = name.encode()
        reg = spec_of(handler, in_thread)
        existing = table.get(key)
        # a fresh list: a message being fanned out keeps the list it started with
        table[key] = [*existing, reg] if existing else [reg]
        if not existing:
            self._write([(command, key)], 1)

    def _remove(
        self,
        table: dict[bytes, list[HandlerSpec]],
        name: str,
        handler: Handler | None,
        command: bytes,
    ) -> bool:
        key = name.encode()
        existing = table.get(key)
        if not existing:
            return False
        kept = [] if handler is None else [r for r in existing if r.fn != handler]
        if len(kept) == len(existing):
            return False
        if kept:
            table[key] = kept
        else:
            del table[key]
            self._write([(command, key)], 1)
        return True

    # -- life cycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Connects, subscribes every channel and pattern and returns once the server has
        confirmed them all; retries with backoff for `retry_budget` seconds, then raises
        `MeetqConnectionError`. (`state`: stopped, connecting, live, reconnecting or
        stopping.)"""
        if self._state != "stopped":
            return
        self._stopping = False
        self._state = "connecting"
        try:
            await retrying(self._connect, self.retry_budget, "pubsub subscribe")
        except BaseException:
            self._state = "stopped"
            raise
        self._down.clear()
        self._supervisor.supervise("reconnect", self._reconnect_loop)
        self._supervisor.supervise("probe", self._probe_loop)

    async def stop(self) -> None:
        """Closes the subscription, lets handler runs in flight finish (cancelling those
        still running after `stop_timeout`) and closes the publish connection."""
        if self._state == "stopped":
            await self._link.close()  # a publisher that was never started
            return
        self._stopping = True
        self._state = "stopping"
        await self._supervisor.stop()
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()
        await self._runner.drain(self.stop_timeout)
        self._runner.close()
        await self._link.close()
        self._paused = False
        self._state = "stopped"

    # -- receiving ---------------------------------------------------------------------------

    def _on_push(self, reply: list[Any]) -> None:
        kind = reply[0]
        if kind == b"message" or kind == b"smessage":
            channel = reply[1]
            if channel in self._probe_waits:
                wait = self._probe_waits[channel]
                if wait is not None and reply[2] == wait[0] and not wait[1].done():
                    wait[1].set_result(None)
                return
            pattern = None
            data = reply[2]
            handlers = self._channels.get(channel)
        elif kind == b"pmessage":
            pattern = reply[1]
            channel = reply[2]
            data = reply[3]
            handlers = self._patterns.get(pattern)
        else:
            return  # pong and the like
        self._received += 1
        if not handlers:
            self._unrouted += 1
            return
        names = self._names
        name = names.get(channel)
        if name is None:
            name = self._name(channel)
        pattern_name = None
        if pattern is not None:
            pattern_name = names.get(pattern)
            if pattern_name is None:
                pattern_name = self._name(pattern)
        try:
            msg = self._decode(data, name, pattern_name)
        except MeetqError as exc:
            self._malformed += 1
            if self._malformed <= 10 or self._malformed % 1000 == 0:
                log.warning(
                    "malformed pubsub message on %r (%d so far): %s", channel, self._malformed, exc
                )
            return
        if self.gap_detection and msg.publisher and not self._in_sequence(channel, pattern, msg):
            return
        try:
            self._runner.run_all(handlers, msg, self._done)
        except Exception:  # our own bug: never let it reach the reader
            log.exception("pubsub fan-out failed")
        if not self._paused and len(self._runner.tasks) >= self.max_in_flight:
            self._pause()

    def _name(self, raw: bytes) -> str:
        """A channel or pattern name as text, remembered (up to 100,000 of them)."""
        name = raw.decode(errors="replace")
        if len(self._names) < 100_000:
            self._names[raw] = name
        return name

    def _one_done(self, error: str | None) -> None:
        self._processed += 1

    def _in_sequence(self, channel: bytes, pattern: bytes | None, msg: PubSubMessage) -> bool:
        """Gap detection; False for a repeat (dropped)."""
        gap = self._sequences.check(channel, pattern, msg)
        if gap is False:
            return False
        if gap:
            first, last = gap  # type: ignore[misc]
            self._emit_local(
                events.PUBSUB_GAP,
                {
                    "channel": msg.channel,
                    "publisher": msg.publisher,
                    "from": first,
                    "to": last,
                    "missed": last - first + 1,
                },
            )
        return True

    def _pause(self) -> None:
        conn = self._conn
        if conn is not None and not conn.closed:
            self._paused = True
            conn.hold()

    def _released(self) -> None:
        if self._paused and self._runner.in_flight < self.max_in_flight:
            self._paused = False
            conn = self._conn
            if conn is not None:
                conn.release()

    def _emit_local(self, name: str, payload: dict[str, Any]) -> None:
        handlers = self._local.get(name)
        if handlers:
            msg = PubSubMessage(name, payload, source="meetq.pubsub").stamp()
            self._runner.run_all(handlers, msg, _ignore)
        if self.local_bus is not None:
            try:
                self.local_bus.emit(name, payload, "meetq.pubsub")
            except Exception:
                log.exception("local bus refused %s", name)

    # -- publishing --------------------------------------------------------------------------

    async def publish(self, channel: str, message: PubSubMessage) -> int:
        """Publishes one message; returns how many subscriptions received it. Works on an
        instance that was never started."""
        return await self._publisher.publish(channel, message)

    async def publish_batch(self, channel: str, messages: Iterable[PubSubMessage]) -> list[int]:
        """Publishes many messages to one channel with one write and one round trip;
        returns each one's receiver count."""
        return await self._publisher.publish_batch(channel, messages)

    # -- stats ---------------------------------------------------------------------------------

    def get_stats(self) -> dict[str, Any]:
        """The seed's counters (total_published, total_received, total_processed,
        total_failed, channel_count) and what the never-silent machinery saw."""
        return {
            "total_published": self._publisher.published,
            "total_received": self._received,
            "total_processed": self._processed,
            "total_failed": self._runner.failed,
            "channel_count": len(self._channels),
            "pattern_count": len(self._patterns),
            "malformed": self._malformed,
            "unrouted": self._unrouted,
            "gaps": self._sequences.gaps,
            "missed": self._sequences.missed,
            "duplicates": self._sequences.duplicates,
            "reconnects": self._reconnects,
            "probes_failed": self._probes_failed,
            "last_away": self._last_away,
            "last_subscribe_seconds": self._last_subscribe_time,
            "in_flight": self._runner.in_flight,
            "state": self._state,
        }


def _ignore(error: str | None) -> None:
    return None
