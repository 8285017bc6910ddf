"""What the operator commands, the metrics and the dashboard read about queues.

`QueueInspector` holds one redis-py client and one `QueueAdmin` per queue name (stats and
the DLQ without a worker). A queue snapshot costs a constant
number of Redis commands whatever the queue's size: the stats script (LLEN/ZCARD/HGETALL
of a small hash) plus the head of each ready list and their bodies for the oldest age.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio

from meetq._redis.keys import READY_LEVELS, QueueKeys, StreamKeys
from meetq.errors import MalformedMessageError, MessageTooLargeError
from meetq.ops.common import redis_client
from meetq.priority import Priority
from meetq.queue import DeadLetter, QueueAdmin, QueueConfig

PRIORITY_NAMES = {int(p): p.name.lower() for p in Priority}
_STATS_SCAN = QueueKeys("*").named("stats")
"""SCAN pattern matching the stats hash of every queue (discovery only, never a scrape)."""
_STREAM_SCAN = StreamKeys("*").stream


@dataclass(slots=True)
class StreamSnapshot:
    """One RedisStreamEventBus topic: its length, dead letters, and per consumer group
    the entries not yet delivered (lag) and delivered but not acked (pending)."""

    topic: str
    length: int
    dead_letters: int
    groups: dict[str, dict[str, int]]

    def as_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "length": self.length,
            "dead_letters": self.dead_letters,
            "groups": self.groups,
        }


@dataclass(slots=True)
class QueueSnapshot:
    """One queue's state at `taken_at` (time.time())."""

    name: str
    ready: dict[str, int]
    inflight: int
    delayed: int
    dead_letters: int
    published: int
    processed: int
    failed: int
    retried: int
    dead_lettered: int
    oldest_ready_age: float
    taken_at: float = field(default_factory=time.time)

    @property
    def ready_total(self) -> int:
        return sum(self.ready.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ready": dict(self.ready),
            "ready_total": self.ready_total,
            "inflight": self.inflight,
            "delayed": self.delayed,
            "dead_letters": self.dead_letters,
            "published": self.published,
            "processed": self.processed,
            "failed": self.failed,
            "retried": self.retried,
            "dead_lettered": self.dead_lettered,
            "oldest_ready_age": round(self.oldest_ready_age, 3),
            "taken_at": self.taken_at,
        }


@dataclass(slots=True)
class DeadLetterPage:
    """A page of DLQ entries and where the next page starts (None: no more)."""

    entries: list[DeadLetter]
    next_offset: int | None
    total: int
    scanned: int


class QueueInspector:
    """Stats and DLQ operations on any number of queues through one client."""

    def __init__(self, redis_or_url: str | redis.asyncio.Redis, retry_budget: float = 3.0) -> None:
        # short: a scrape or a page of the dashboard reports a dead Redis, it does not hang
        self._config = QueueConfig(retry_budget=retry_budget)
        if isinstance(redis_or_url, str):
            self._client = redis_client(redis_or_url)
            self._owned = True
        else:
            self._client = redis_or_url
            self._owned = False
        self._queues: dict[str, QueueAdmin] = {}

    @property
    def client(self) -> redis.asyncio.Redis:
        return self._client

    def queue(self, name: str) -> QueueAdmin:
        q = self._queues.get(name)
        if q is None:
            q = self._queues[name] = QueueAdmin(self._client, name, self._config)
        return q

    async def ping(self) -> None:
        await self._client.ping()

    async def discover(self, limit: int = 1000) -> list[str]:
        """Names of the queues that have a stats hash (SCAN; for listing, not scraping)."""
        return await self._scan_names(_STATS_SCAN, limit)

    async def discover_streams(self, limit: int = 1000) -> list[str]:
        """Topics that have a stream (SCAN; for listing, not scraping)."""
        return await self._scan_names(_STREAM_SCAN, limit)

    async def _scan_names(self, pattern: str, limit: int) -> list[str]:
        """The names in the `*` of `pattern` of the keys that match it (hash tags skipped)."""
        prefix, suffix = pattern.split("*", 1)
        names: set[str] = set()
        async for key in self._client.scan_iter(match=pattern, count=500):
            text = key.decode() if isinstance(key, bytes) else str(key)
            inner = text[len(prefix) : len(text) - len(suffix)]
            if inner and "{" not in inner and "}" not in inner:
                names.add(inner)
            if len(names) >= limit:
                break
        return sorted(names)

    async def stream_snapshot(self, topic: str) -> StreamSnapshot:
        """XLEN of the stream and its dead letters, XINFO GROUPS: 3 commands per topic."""
        keys = StreamKeys(topic)
        pipe = self._client.pipeline(transaction=False)
        pipe.xlen(keys.stream)
        pipe.xlen(keys.dead)
        pipe.execute_command("XINFO", "GROUPS", keys.stream)
        length, dead, raw = await pipe.execute(raise_on_error=False)
        groups: dict[str, dict[str, int]] = {}
        for g in raw if isinstance(raw, list) else []:
            info = dict(zip(g[::2], g[1::2], strict=True))
            name = info.get(b"name", b"?")
            lag = info.get(b"lag")
            groups[name.decode() if isinstance(name, bytes) else str(name)] = {
                "lag": int(lag) if lag is not None else -1,
                "pending": int(info.get(b"pending", 0)),
                "consumers": int(info.get(b"consumers", 0)),
            }
        return StreamSnapshot(
            topic,
            int(length) if isinstance(length, int) else 0,
            int(dead) if isinstance(dead, int) else 0,
            groups,
        )

    async def snapshot(self, name: str) -> QueueSnapshot:
        q = self.queue(name)
        stats = await q.get_stats()
        lengths = stats["queue_length"]
        return QueueSnapshot(
            name=name,
            ready={PRIORITY_NAMES[p]: int(lengths[PRIORITY_NAMES[p]]) for p in READY_LEVELS},
            inflight=int(stats["processing_count"]),
            delayed=int(stats.get("delayed_count", 0)),
            dead_letters=int(stats["dead_letter_count"]),
            published=int(stats["total_published"]),
            processed=int(stats["total_processed"]),
            failed=int(stats["total_failed"]),
            retried=int(stats["total_retried"]),
            dead_lettered=int(stats["total_dead_letter"]),
            oldest_ready_age=await self._oldest_ready_age(q),
        )

    async def snapshots(self, names: Iterable[str]) -> list[QueueSnapshot]:
        return [await self.snapshot(n) for n in names]

    async def _oldest_ready_age(self, q: QueueAdmin) -> float:
        """Seconds since the oldest ready message was published: the head of each ready
        list (LINDEX 0) and their bodies, 2 round trips whatever the length."""
        keys = q.keys
        pipe = self._client.pipeline(transaction=False)
        for level in READY_LEVELS:
            pipe.lindex(keys.ready(level), 0)
        heads = [h for h in await pipe.execute() if h is not None]
        if not heads:
            return 0.0
        bodies: list[Any] = await self._client.hmget(keys.named("msg"), heads)  # type: ignore[misc]
        now = time.time()
        oldest = 0.0
        for body in bodies:
            if not body:
                continue
            with contextlib.suppress(MalformedMessageError, MessageTooLargeError):
                msg = q.codec.decode(body[1:])
                if msg.timestamp:
                    oldest = max(oldest, now - msg.timestamp)
        return oldest

    async def dead_letter_page(
        self,
        name: str,
        offset: int = 0,
        limit: int = 50,
        type_filter: str = "",
        reason_filter: str = "",
        scan_budget: int = 5000,
    ) -> DeadLetterPage:
        """Entries from `offset` (oldest first). With a filter it reads on in chunks until
        `limit` entries match or `scan_budget` entries were read, and says where to go on,
        so a page of a huge DLQ never reads the whole DLQ."""
        q = self.queue(name)
        total = await q.dead_letter_count()
        if not type_filter and not reason_filter:
            entries = await q.dead_letters(limit, offset) if limit > 0 else []
            nxt = offset + len(entries)
            return DeadLetterPage(entries, nxt if nxt < total else None, total, len(entries))
        wanted_type = type_filter.lower()
        wanted_reason = reason_filter.lower()
        out: list[DeadLetter] = []
        pos = offset
        scanned = 0
        chunk = max(limit, 200)
        while len(out) < limit and scanned < scan_budget and pos < total:
            batch = await q.dead_letters(chunk, pos)
            if not batch:
                break
            for i, entry in enumerate(batch):
                scanned += 1
                mtype = entry.message.type.lower() if entry.message else ""
                if (not wanted_type or wanted_type == mtype) and (
                    not wanted_reason or wanted_reason in entry.reason.lower()
                ):
                    out.append(entry)
                    if len(out) == limit:
                        pos += i + 1
                        break
            else:
                pos += len(batch)
        return DeadLetterPage(out, pos if pos < total else None, total, scanned)

    async def close(self) -> None:
        for q in self._queues.values():
            await q.close()
        self._queues.clear()
        if self._owned:
            await self._client.aclose()


def dead_letter_dict(entry: DeadLetter) -> dict[str, Any]:
    """A DLQ entry as JSON-ready data (the body as text when it is not a message)."""
    msg = entry.message
    return {
        "id": entry.id,
        "type": msg.type if msg else None,
        "priority": PRIORITY_NAMES[int(msg.priority)] if msg else None,
        "payload": msg.payload if msg else None,
        "raw": None if msg or entry.raw is None else entry.raw[:200].decode(errors="replace"),
        "reason": entry.reason,
        "failed_at": entry.failed_at,
        "deliveries": entry.deliveries,
        "retries": entry.retries,
    }
