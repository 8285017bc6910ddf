"""How a `RedisStreamEventBus` consumes: one XREADGROUP loop that reads at most
`max_in_flight` entries beyond those it holds; handler runs by the shared rule
(`broadcast.handlers`); acks and dead-letters batched into one write; a failed run retried
here after a backoff (XCLAIM to itself, counting the delivery); a dead consumer's entries
claimed with XAUTOCLAIM once idle (`lua/streams/claim.lua`), long-running ones of ours
touched so nobody claims them; dead consumers reaped; the stream trimmed behind what every
group still needs."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from redis.exceptions import NoScriptError, ResponseError

from meetq._core.backoff import backoff
from meetq._redis.retry import TRANSIENT, is_transient
from meetq.broadcast import scripts
from meetq.broadcast.bus import FAILED_CALL, Bus
from meetq.errors import MeetqError

if TYPE_CHECKING:
    from meetq._redis.keys import StreamKeys
    from meetq._redis.links import Link
    from meetq._redis.router import ClusterRouter
    from meetq.broadcast.handlers import FanOut, HandlerSpec
    from meetq.broadcast.message import BroadcastCodec

log = logging.getLogger("meetq.broadcast.streams")


class StreamConsumer(Bus):
    """Mixin of `RedisStreamEventBus`: reading, running, acking, claiming, trimming."""

    service: str
    consumer: str
    batch: int
    max_in_flight: int
    block: float
    claim_idle: float
    claim_interval: float
    max_deliveries: int
    retry_backoff: float
    max_backoff: float
    dead_consumer_after: float
    trim_interval: float
    dead_letter_max: int
    _link: Link | ClusterRouter
    _reserved: int
    _codec: BroadcastCodec
    _runner: FanOut
    _handlers: dict[str, list[HandlerSpec]]
    _topic_of: dict[bytes, str]
    _held: dict[tuple[str, bytes], float]
    _acks: dict[str, list[bytes]]
    _dead: list[tuple[str, bytes, str, int]]
    _flush: asyncio.Event
    _room: asyncio.Event
    _retry_timers: set[asyncio.TimerHandle]
    _cursors: dict[str, bytes]
    _ackdel: bool
    _processed: int
    _retried: int
    _claimed: int
    _dead_lettered: int
    _malformed: int
    _trimmed: int
    _reaped: int

    def _key(self, topic: str) -> StreamKeys:
        raise NotImplementedError

    async def _ensure_groups(self) -> None:
        raise NotImplementedError

    async def _read_loop(self, streams: list[str], reader: Link) -> None:
        """XREADGROUP of `streams` on `reader` (all topics on one server; one slot's topics
        per loop on Redis Cluster, which refuses a read across slots), within the window
        shared by every loop: what a read may return is reserved before it blocks."""
        block_ms = max(1, int(self.block * 1000))
        outage = self._outage(f"streams[{self.service}] read")
        while not self._stopping:
            room = self.max_in_flight - len(self._held) - self._reserved
            if room <= 0:
                self._room.clear()
                await self._room.wait()
                continue
            count = min(room, self.batch)
            self._reserved += count
            try:
                reply = await reader.execute(
                    "XREADGROUP", "GROUP", self.service, self.consumer,
                    "COUNT", count, "BLOCK", block_ms,
                    "STREAMS", *streams, *(">" for _ in streams),
                )  # fmt: skip
                outage.succeeded()
            except ResponseError as exc:
                if is_transient(exc):  # CLUSTERDOWN, TRYAGAIN, MASTERDOWN: a failover
                    await asyncio.sleep(outage.failed(exc))
                    continue
                if "NOGROUP" not in str(exc):
                    raise
                log.warning("streams[%s]: group gone (redis restarted?): recreating", self.service)
                await self._ensure_groups()
                continue
            except TRANSIENT as exc:
                await asyncio.sleep(outage.failed(exc))
                continue
            finally:
                self._reserved -= count
                self._room.set()
            if not reply:
                continue
            dispatch = self._dispatch
            for stream, entries in reply:
                topic = self._topic_of[stream]
                now = time.monotonic()
                for eid, fields in entries:
                    dispatch(topic, eid, fields, 1, now)

    def _dispatch(
        self,
        topic: str,
        eid: bytes,
        fields: list[bytes] | None,
        deliveries: int,
        now: float | None = None,
    ) -> None:
        self._held[(topic, eid)] = time.monotonic() if now is None else now
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
        except FAILED_CALL as exc:
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
            except FAILED_CALL as exc:
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
        claim = f"streams[{self.service}] claim"
        await self._every(self.claim_interval, self._claim_once, log, claim)

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
        await self._every(self.trim_interval, self.trim, None, "trim")

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
