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
from typing import Any, Self

import redis.asyncio
from redis.exceptions import NoScriptError, RedisError, ResponseError

from meetq._core.backoff import backoff
from meetq._core.lifecycle import Supervisor
from meetq._redis.clients import url_of
from meetq._redis.keys import StreamKeys
from meetq._redis.links import Link
from meetq._redis.retry import TRANSIENT, retrying
from meetq.broadcast import scripts
from meetq.broadcast.handlers import FanOut, HandlerSpec, spec_of
from meetq.broadcast.message import DEFAULT_MAX_SIZE, BroadcastCodec, Format, StreamEvent
from meetq.broadcast.stream_admin import StreamAdmin
from meetq.broadcast.stream_admin import entry_id as entry_id
from meetq.errors import MeetqError

log = logging.getLogger("meetq.broadcast.streams")

Handler = Callable[[StreamEvent], Any]
_TRANSIENT = TRANSIENT
_FAILED_CALL: tuple[type[BaseException], ...] = (*TRANSIENT, RedisError)
"""A call that did not go through: the connection, or an error reply."""


def _consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"


class RedisStreamEventBus(StreamAdmin):
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
        url = redis_or_url if isinstance(redis_or_url, str) else url_of(redis_or_url)
        if url is None:
            raise ValueError(
                "RedisStreamEventBus needs a URL, or a plain TCP/unix redis.asyncio client "
                "that a URL can describe"
            )
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
        self._link = Link(url, lambda: redis.asyncio.Redis.from_url(url), timeout=10.0)
        self._reader = Link(url, lambda: redis.asyncio.Redis.from_url(url), timeout=block + 10)
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

    @property
    def state(self) -> str:
        return self._state

    @property
    def healthy(self) -> bool:
        return self._state == "live" and self._supervisor.healthy

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
            supervise("read", self._read_loop)
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
        reader = self._supervisor.task("read")
        if reader is not None:
            reader.cancel()
            await asyncio.wait({reader})
        await self._runner.drain(self.stop_timeout)
        self._runner.close()
        for timer in self._retry_timers:
            timer.cancel()
        self._retry_timers.clear()
        await self._supervisor.stop()
        with contextlib.suppress(*_FAILED_CALL):
            await self._flush_once()
        await self._reader.close()
        await self._link.close()
        self._held.clear()
        self._state = "stopped"

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

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
        replies = await self._retrying(lambda: self._link.execute_many(commands))
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        self._published += len(replies)
        for event, reply in zip(batch, replies, strict=True):
            event.id, event.topic = reply.decode(), topic
        return [e.id for e in batch]

    # -- consuming -----------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        topics = list(self._handlers)
        streams = [self._key(t).stream for t in topics]
        block_ms = max(1, int(self.block * 1000))
        attempt = 0
        while not self._stopping:
            room = self.max_in_flight - len(self._held)
            if room <= 0:
                self._room.clear()
                await self._room.wait()
                continue
            try:
                reply = await self._reader.execute(
                    "XREADGROUP", "GROUP", self.service, self.consumer,
                    "COUNT", min(room, self.batch), "BLOCK", block_ms,
                    "STREAMS", *streams, *(">" for _ in streams),
                )  # fmt: skip
                attempt = 0
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                log.warning("streams[%s]: group gone (redis restarted?): recreating", self.service)
                await self._ensure_groups()
                continue
            except _TRANSIENT as exc:
                if attempt % 20 == 0:
                    log.warning("streams[%s] read failed: %r; retrying", self.service, exc)
                await asyncio.sleep(backoff(attempt))
                attempt += 1
                continue
            if not reply:
                continue
            for stream, entries in reply:
                topic = self._topic_of[stream]
                for eid, fields in entries:
                    self._dispatch(topic, eid, fields, 1)

    def _dispatch(
        self, topic: str, eid: bytes, fields: list[bytes] | None, deliveries: int
    ) -> None:
        key = (topic, eid)
        self._held[key] = time.monotonic()
        body = fields[1] if fields and len(fields) == 2 and fields[0] == b"d" else _body(fields)
        try:
            if body is None:
                raise MeetqError("entry has no body")
            event = self._codec.decode_event(body, eid.decode(), topic, deliveries)
        except MeetqError as exc:
            self._malformed += 1
            log.warning("streams[%s]: malformed entry %s on %s: %s", self.service, eid, topic, exc)
            self._dead.append((topic, eid, f"malformed: {exc}", deliveries))
            self._flush.set()
            return
        self._runner.run_all(
            self._handlers[topic],
            event,
            lambda error: self._finished(topic, eid, deliveries, error),
        )

    def _finished(self, topic: str, eid: bytes, deliveries: int, error: str | None) -> None:
        if error is None:
            self._processed += 1
            self._acks.setdefault(topic, []).append(eid)
            self._flush.set()
        elif deliveries >= self.max_deliveries:
            self._dead.append((topic, eid, error, deliveries))
            self._flush.set()
        elif self._stopping:
            self._release(topic, eid)  # stays pending: claimed by another process later
        else:
            self._retried += 1
            delay = backoff(deliveries - 1, self.retry_backoff, self.max_backoff)
            loop = asyncio.get_running_loop()
            timer: asyncio.TimerHandle | None = None

            def fire() -> None:
                if timer is not None:
                    self._retry_timers.discard(timer)
                task = asyncio.ensure_future(self._redeliver(topic, eid))
                self._runner.tasks.add(task)  # awaited by stop's drain like a handler run
                task.add_done_callback(self._runner.tasks.discard)

            timer = loop.call_later(delay, fire)
            self._retry_timers.add(timer)

    async def _redeliver(self, topic: str, eid: bytes) -> None:
        """Claims a failed entry back to this consumer (counting the delivery) and runs it."""
        keys = self._key(topic)
        try:
            reply = await self._link.execute(
                "XCLAIM", keys.stream, self.service, self.consumer, 0, eid
            )
            pending = await self._link.execute("XPENDING", keys.stream, self.service, eid, eid, 1)
        except _FAILED_CALL as exc:
            log.warning("streams[%s]: retry of %s failed (%r); left to the claimer",
                        self.service, eid, exc)  # fmt: skip
            self._release(topic, eid)
            return
        if not reply or not pending:
            self._release(topic, eid)  # acknowledged or trimmed meanwhile
            return
        self._held.pop((topic, eid), None)
        self._dispatch(topic, eid, reply[0][1], int(pending[0][3]))

    def _release(self, topic: str, eid: bytes) -> None:
        if self._held.pop((topic, eid), None) is not None:
            self._room.set()

    async def _ack_loop(self) -> None:
        while not self._stopping:
            await self._flush.wait()
            self._flush.clear()
            try:
                await self._flush_once()
            except _FAILED_CALL as exc:
                log.warning("streams[%s] ack flush failed: %r; retrying", self.service, exc)
                await asyncio.sleep(backoff(0))
                self._flush.set()

    async def _flush_once(self) -> None:
        acks, self._acks = self._acks, {}
        dead, self._dead = self._dead, []
        commands: list[tuple[Any, ...]] = []
        for topic, ids in acks.items():
            stream = self._key(topic).stream
            if self._ackdel:
                commands.append(("XACKDEL", stream, self.service, "ACKED", "IDS", len(ids), *ids))
            else:
                commands.append(("XACK", stream, self.service, *ids))
        for topic, eid, reason, deliveries in dead:
            keys = self._key(topic)
            commands.append(
                scripts.DEAD_LETTER.command(
                    [keys.stream, keys.dead],
                    [
                        self.service,
                        eid,
                        reason,
                        deliveries,
                        self.dead_letter_max,
                        int(self._ackdel),
                    ],
                )
            )
        if not commands:
            return
        try:
            replies = await self._link.execute_many(commands)
        except BaseException:
            for topic, ids in acks.items():  # put them back for the next try
                self._acks.setdefault(topic, []).extend(ids)
            self._dead.extend(dead)
            raise
        ack_replies, dead_replies = replies[: len(acks)], replies[len(acks) :]
        for (topic, ids), reply in zip(acks.items(), ack_replies, strict=True):
            if isinstance(reply, Exception):  # not acked: stays pending, claimed later
                log.error("streams[%s] ack refused on %s: %r", self.service, topic, reply)
            for eid in ids:
                self._release(topic, eid)
        retry = []
        for item, reply in zip(dead, dead_replies, strict=True):
            if isinstance(reply, NoScriptError):
                retry.append(item)
                continue
            if isinstance(reply, Exception):
                log.error("streams[%s] dead-letter of %s refused: %r", self.service, item[1], reply)
            elif reply:
                self._dead_lettered += 1
            self._release(item[0], item[1])
        if retry:
            await self._link.load(scripts.DEAD_LETTER.source)
            self._dead.extend(retry)
            self._flush.set()

    async def _claim_loop(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.claim_interval)  # a period, not a synchronization
            try:
                await self._claim_once()
            except _FAILED_CALL as exc:
                log.warning("streams[%s] claim failed: %r", self.service, exc)

    async def _claim_once(self) -> None:
        now = time.monotonic()
        idle_ms = int(self.claim_idle * 1000)
        # entries still being handled here: reset their idle time so nobody claims them
        long_held: dict[str, list[bytes]] = {}
        for (topic, eid), since in self._held.items():
            if now - since > self.claim_idle / 2:
                long_held.setdefault(topic, []).append(eid)
        for topic, ids in long_held.items():
            stream = self._key(topic).stream
            await self._link.execute(
                "XCLAIM", stream, self.service, self.consumer, 0, *ids, "JUSTID"
            )
            for eid in ids:
                if (topic, eid) in self._held:
                    self._held[(topic, eid)] = now
        for topic in self._handlers:
            keys = self._key(topic)
            room = self.max_in_flight - len(self._held)
            if room > 0:
                cursor = self._cursors.get(topic, b"0-0")
                reply = await scripts.CLAIM.run(
                    self._link,
                    [keys.stream, keys.dead],
                    [self.service, self.consumer, idle_ms, cursor, min(room, self.batch),
                     self.max_deliveries, self.dead_letter_max, int(self._ackdel)],
                )  # fmt: skip
                self._cursors[topic] = reply[0]
                self._dead_lettered += int(reply[2])
                for eid, deliveries, fields in reply[1]:
                    if (topic, eid) in self._held:
                        continue  # ours, still running here
                    self._claimed += 1
                    self._dispatch(topic, eid, fields, int(deliveries))
            removed = await scripts.REAP.run(
                self._link,
                [keys.stream],
                [self.service, int(self.dead_consumer_after * 1000), self.consumer],
            )
            if removed:
                self._reaped += len(removed)
                log.info("streams[%s] removed dead consumers %s", self.service, removed)

    async def _trim_loop(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.trim_interval)  # a period, not a synchronization
            with contextlib.suppress(*_FAILED_CALL):
                await self.trim()

    async def trim(self) -> int:
        """Trims every subscribed topic behind what its groups still need; returns how many
        entries went (the trim loop calls this every `trim_interval`)."""
        total = 0
        for topic in self._handlers:
            total += int(await scripts.TRIM.run(self._link, [self._key(topic).stream], []))
        self._trimmed += total
        return total


def _body(fields: list[bytes] | None) -> bytes | None:
    if not fields:
        return None
    for i in range(0, len(fields) - 1, 2):
        if fields[i] == b"d":
            return fields[i + 1]
    return None


def _server_version(info: bytes) -> tuple[int, ...]:
    for line in info.decode(errors="replace").splitlines():
        if line.startswith("redis_version:"):
            return tuple(int(p) for p in line.split(":", 1)[1].strip().split(".")[:3])
    return (0,)
