"""`RedisStreamEventBus`: durable, at-least-once event fan-out on Redis Streams.

One stream per topic (`meetq:stream:{topic}`), one consumer group per service (the group is
named after the service), one consumer per process. Every service sees every event; within
a service, each event goes to one of its processes.

- Publishing is XADD (approximate MAXLEN or MINID trimming when configured), many per write.
- Reading: one XREADGROUP loop on its own connection reads at most `max_in_flight` entries
  beyond those it holds, so a consumer's pending list never exceeds that window. Handlers
  run by the shared rule (`broadcast.handlers`); acks are batched into one write.
- A failed handler run is retried by this process after a backoff (XCLAIM to itself, which
  counts the delivery); the run that fails on delivery `max_deliveries` sends the entry to
  the topic's dead-letter stream with the error text. An undecodable entry goes there at once.
- A dead (SIGKILLed) or wedged consumer's entries are claimed by the live ones with
  XAUTOCLAIM once idle for `claim_idle`; one delivered more than `max_deliveries` times goes
  to the dead-letter stream. Entries a handler here is still running are touched
  (XCLAIM JUSTID) so nobody claims them. Consumers idle for `dead_consumer_after` with
  nothing pending are removed from the group.
- Memory stays bounded: every `trim_interval` the stream is trimmed behind the oldest entry
  any group still needs (`lua/streams/trim.lua`); on Redis 8.2+ acks are XACKDEL ... ACKED,
  which deletes an entry once every group has acknowledged it.
- `replay(topic, since=...)` reads history by id or time; `rewind` moves this service's
  group back so it receives again from there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

import redis.asyncio
from redis.exceptions import ResponseError

from meetq._core.lifecycle import Supervisor
from meetq._redis.cluster import key_slot
from meetq._redis.keys import StreamKeys
from meetq._redis.links import Link
from meetq._redis.retry import retrying
from meetq._redis.router import ClusterRouter
from meetq.broadcast import scripts
from meetq.broadcast.bus import FAILED_CALL, bus_link, required_url
from meetq.broadcast.handlers import FanOut, HandlerSpec, spec_of
from meetq.broadcast.message import DEFAULT_MAX_SIZE, BroadcastCodec, Format, StreamEvent
from meetq.broadcast.stream_admin import StreamAdmin
from meetq.broadcast.stream_admin import entry_id as entry_id
from meetq.broadcast.stream_consumer import StreamConsumer

log = logging.getLogger("meetq.broadcast.streams")

Handler = Callable[[StreamEvent], Any]


def _consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"


class RedisStreamEventBus(StreamConsumer, StreamAdmin):
    """Durable event fan-out, one consumer group per service; see the module docstring."""

    def __init__(
        self,
        redis_or_url: str | redis.asyncio.Redis,
        service: str,
        *,
        consumer: str | None = None,
        start_from: str = "$",
        batch: int = 100,
        max_in_flight: int = 200,
        block: float = 2.0,
        claim_idle: float = 30.0,
        claim_interval: float | None = None,
        max_deliveries: int = 5,
        retry_backoff: float = 1.0,
        max_backoff: float = 60.0,
        dead_consumer_after: float = 300.0,
        maxlen: int | None = None,
        retention: float | None = None,
        trim_interval: float = 1.0,
        handler_timeout: float = 30.0,
        dead_letter_max: int = 100_000,
        retry_budget: float = 10.0,
        serializer: Format = "json",
        max_message_size: int = DEFAULT_MAX_SIZE,
        stop_timeout: float = 10.0,
        source: str = "",
    ) -> None:
        url = required_url(redis_or_url, "RedisStreamEventBus")
        if not service:
            raise ValueError("service (the consumer group) must be non-empty")
        if max_deliveries < 1 or batch < 1 or max_in_flight < 1:
            raise ValueError("max_deliveries, batch and max_in_flight must be positive")
        self.service = service
        self.consumer = consumer or _consumer_name()
        self.start_from = start_from
        self.batch = batch
        self.max_in_flight = max_in_flight
        self.block = block
        self.claim_idle = claim_idle
        self.claim_interval = claim_interval if claim_interval is not None else claim_idle / 4
        self.max_deliveries = max_deliveries
        self.retry_backoff = retry_backoff
        self.max_backoff = max_backoff
        self.dead_consumer_after = dead_consumer_after
        self.maxlen = maxlen
        self.retention = retention
        self.trim_interval = trim_interval
        self.dead_letter_max = dead_letter_max
        self.retry_budget = retry_budget
        self.stop_timeout = stop_timeout
        self.source = source
        self._codec = BroadcastCodec(serializer, max_message_size)
        self._url = url
        self._cluster = url.startswith("redis+cluster://")
        self._link = bus_link(url, timeout=10.0)
        self._readers: dict[int | None, tuple[list[str], Link]] = {}
        self._reserved = 0
        self._runner = FanOut(handler_timeout, f"streams[{service}]")
        self._handlers: dict[str, list[HandlerSpec]] = {}
        self._keys: dict[str, StreamKeys] = {}
        self._topic_of: dict[bytes, str] = {}
        # entries read and not yet finished (acked, dead-lettered, or dropped): the window
        self._held: dict[tuple[str, bytes], float] = {}
        self._acks: dict[str, list[bytes]] = {}
        self._dead: list[tuple[str, bytes, str, int]] = []
        self._flush = asyncio.Event()
        self._room = asyncio.Event()
        self._retry_timers: set[asyncio.TimerHandle] = set()
        self._cursors: dict[str, bytes] = {}
        self._supervisor = Supervisor(f"streams[{service}]")
        self._state = "stopped"
        self._stopping = False
        self._ackdel = False
        self._published = 0
        self._processed = 0
        self._retried = 0
        self._claimed = 0
        self._dead_lettered = 0
        self._malformed = 0
        self._trimmed = 0
        self._reaped = 0

    # -- registration and life cycle ---------------------------------------------------------

    def subscribe(self, topic: str, handler: Handler, *, in_thread: bool = False) -> None:
        """Runs `handler(event)` for every event of `topic` this service receives (several
        handlers may share a topic; the event is acked once all of them succeeded).
        Register before `start`."""
        if self._state != "stopped":
            raise RuntimeError("subscribe before start()")
        if not topic or "{" in topic or "}" in topic:
            raise ValueError("topic must be non-empty and free of braces")
        self._handlers.setdefault(topic, []).append(spec_of(handler, in_thread))
        self._key(topic)

    def _key(self, topic: str) -> StreamKeys:
        keys = self._keys.get(topic)
        if keys is None:
            keys = self._keys[topic] = StreamKeys(topic)
            self._topic_of[keys.stream.encode()] = topic
        return keys

    async def start(self) -> None:
        """Creates this service's group on every subscribed topic (at `start_from`: "$"
        = only new events, "0" = the whole stream), then starts reading."""
        if self._state != "stopped":
            return
        self._stopping = False
        self._state = "starting"
        try:
            info: bytes = await self._retrying(lambda: self._link.execute("INFO", "server"))
            self._ackdel = _server_version(info) >= (8, 2)
            await self._ensure_groups()
            for script in scripts.ALL:
                await self._link.load(script.source)
        except BaseException:
            self._state = "stopped"
            await self._link.close()
            raise
        self._state = "live"
        if self._handlers:
            supervise = self._supervisor.supervise
            for slot, (streams, reader) in self._make_readers().items():
                name = "read" if slot is None else f"read:{slot}"
                supervise(name, lambda s=streams, r=reader: self._read_loop(s, r))  # type: ignore[misc]
            supervise("ack", self._ack_loop)
            supervise("claim", self._claim_loop)
            if not self._ackdel:
                supervise("trim", self._trim_loop)

    async def stop(self) -> None:
        """Stops reading, lets handler runs finish (cancelling those past `stop_timeout`),
        flushes the acks and closes the connections. Entries read and not finished stay
        pending in Redis: the service's other processes claim them after `claim_idle`."""
        if self._state == "stopped":
            await self._link.close()  # a publisher that was never started
            return
        self._stopping = True
        self._state = "stopping"
        names = ["read" if slot is None else f"read:{slot}" for slot in self._readers]
        reading = {t for n in names if (t := self._supervisor.task(n)) is not None}
        for reader in reading:
            reader.cancel()
        if reading:
            await asyncio.wait(reading)
        await self._runner.drain(self.stop_timeout)
        self._runner.close()
        for timer in self._retry_timers:
            timer.cancel()
        self._retry_timers.clear()
        await self._supervisor.stop()
        with contextlib.suppress(*FAILED_CALL):
            await self._flush_once()
        for _, link in self._readers.values():
            await link.close()
        self._readers.clear()
        await self._link.close()
        self._held.clear()
        self._state = "stopped"

    def _make_readers(self) -> dict[int | None, tuple[list[str], Link]]:
        """The XREADGROUP connections: one for every topic, or on Redis Cluster one per
        slot (a `SlotConnection` that follows the slot's master through a failover)."""
        timeout = self.block + 10
        url = self._url
        streams = [self._key(t).stream for t in self._handlers]
        if not self._cluster:
            link = Link(url, lambda: redis.asyncio.Redis.from_url(url), timeout=timeout)
            self._readers = {None: (streams, link)}
            return self._readers
        by_slot: dict[int, list[str]] = {}
        for stream in streams:
            by_slot.setdefault(key_slot(stream), []).append(stream)
        self._readers = {
            slot: (group, Link(url, lambda: redis.asyncio.Redis.from_url(url), timeout, slot=slot))
            for slot, group in by_slot.items()
        }
        return self._readers

    async def _ensure_groups(self) -> None:
        for topic in self._handlers:
            keys = self._key(topic)
            try:
                await self._retrying(
                    lambda k=keys: self._link.execute(  # type: ignore[misc]
                        "XGROUP", "CREATE", k.stream, self.service, self.start_from, "MKSTREAM"
                    )
                )
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def _retrying(self, call: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
        return await retrying(call, self.retry_budget, f"streams[{self.service}]")

    # -- publishing ----------------------------------------------------------------------------

    def _xadd(self, topic: str, event: StreamEvent) -> tuple[Any, ...]:
        if not event.source and self.source:
            event.source = self.source
        body = self._codec.encode_event(event)
        stream = self._key(topic).stream
        if self.maxlen is not None:
            return ("XADD", stream, "MAXLEN", "~", self.maxlen, "*", "d", body)
        if self.retention is not None:
            floor = int((time.time() - self.retention) * 1000)
            return ("XADD", stream, "MINID", "~", max(0, floor), "*", "d", body)
        return ("XADD", stream, "*", "d", body)

    async def publish(
        self,
        topic: str,
        event: StreamEvent | str,
        payload: dict[str, Any] | None = None,
        source: str = "",
    ) -> str:
        """Appends one event (a `StreamEvent`, or its type plus payload); returns its id."""
        if isinstance(event, str):
            event = StreamEvent(event, payload or {}, source)
        command = self._xadd(topic, event)
        reply = await self._retrying(lambda: self._link.execute(*command))
        self._published += 1
        event.id, event.topic = reply.decode(), topic
        return event.id

    async def publish_batch(self, topic: str, events: Iterable[StreamEvent]) -> list[str]:
        """Appends many events with one write; returns their ids in order."""
        batch = list(events)
        commands = [self._xadd(topic, e) for e in batch]
        if not commands:
            return []
        link = self._link
        if isinstance(link, ClusterRouter):  # one topic: one slot, hashed once
            slot = key_slot(self._key(topic).stream)
            replies = await self._retrying(lambda: link.execute_many(commands, slot=slot))
        else:
            replies = await self._retrying(lambda: link.execute_many(commands))
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        self._published += len(replies)
        for event, reply in zip(batch, replies, strict=True):
            event.id, event.topic = reply.decode(), topic
        return [e.id for e in batch]


def _server_version(info: bytes) -> tuple[int, ...]:
    for line in info.decode(errors="replace").splitlines():
        if line.startswith("redis_version:"):
            return tuple(int(p) for p in line.split(":", 1)[1].strip().split(".")[:3])
    return (0,)
