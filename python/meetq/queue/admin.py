"""`QueueAdmin`: stats and the dead-letter queue of one queue, without a worker.

The CLI (`meetq stats`, `meetq dlq ...`), the dashboard, the metrics exporter and
`QueueManager` use it on its own; `RedisMessageQueue` exposes the same calls. Every call is
one script or one pipeline on the endpoint's redis-py client, retried within the budget;
requeue and purge go a page (`DLQ_PAGE` entries, one script call) at a time, so a large DLQ
never blocks Redis for long. Counts are checked (`InvalidArgumentError`), and garbage a
foreign client wrote into the stats or DLQ keys reads as zero / empty, never as a crash.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio

from meetq._redis import scripts
from meetq._redis.keys import QueueKeys
from meetq._redis.links import Endpoint
from meetq._redis.retry import retrying
from meetq.errors import InvalidArgumentError, MalformedMessageError, MessageTooLargeError
from meetq.queue.config import QueueConfig
from meetq.queue.message import Codec, Message

DLQ_PAGE = 500
"""DLQ entries per requeue/purge script call."""


def _count(value: Any) -> int:
    """A counter read from Redis; garbage counts 0."""
    try:
        return int(value)
    except (TypeError, ValueError):
        try:
            return int(float(value))
        except (TypeError, ValueError, OverflowError):
            return 0


@dataclass(slots=True)
class DeadLetter:
    """One DLQ entry: the message (None when its bytes do not decode) and why it died."""

    id: str
    message: Message | None
    raw: bytes | None
    reason: str
    failed_at: float
    deliveries: int
    retries: int


class QueueAdmin:
    """Stats and DLQ operations of queue `queue_name` (no fetching, no handlers)."""

    def __init__(
        self,
        redis_or_url: str | redis.asyncio.Redis | Endpoint,
        queue_name: str,
        config: QueueConfig | None = None,
    ) -> None:
        self.config = config or QueueConfig()
        self.endpoint = (
            redis_or_url if isinstance(redis_or_url, Endpoint) else Endpoint(redis_or_url)
        )
        self._owns_endpoint = not isinstance(redis_or_url, Endpoint)
        self.queue_name = queue_name
        self.keys = QueueKeys(queue_name)
        self.codec = Codec(self.config.serializer, self.config.max_message_size)
        self._what = f"queue {queue_name!r}"

    async def close(self) -> None:
        """Closes the client if this admin made it from a URL."""
        if self._owns_endpoint:
            await self.endpoint.close()

    async def __aenter__(self) -> QueueAdmin:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def get_stats(self) -> dict[str, Any]:
        """The shared counters and depths (see DESIGN.md), without the process-local part."""
        client = self.endpoint.client
        keys = self.keys.all
        r = await retrying(
            lambda: scripts.stats(client, keys, []), self.config.retry_budget, self._what
        )
        raw = r[7]
        counters = {
            raw[i].decode(errors="replace"): _count(raw[i + 1]) for i in range(0, len(raw), 2)
        }
        ready = [int(x) for x in r[:4]]
        return {
            "total_published": counters.get("published", 0),
            "total_processed": counters.get("processed", 0),
            "total_failed": counters.get("failed", 0),
            "total_retried": counters.get("retried", 0),
            "total_dead_letter": counters.get("dead_letter", 0),
            # finished at dequeue, never delivered: cancelled, or past a dispatcher's
            # deadline
            "total_cancelled": counters.get("cancelled", 0),
            "total_expired": counters.get("timeout", 0),
            "queue_length": {
                "critical": ready[0],
                "high": ready[1],
                "normal": ready[2],
                "low": ready[3],
                "total": sum(ready),
            },
            "processing_count": int(r[4]),
            "delayed_count": int(r[5]),
            "dead_letter_count": int(r[6]),
            "workers": self.config.workers,
        }

    async def dead_letter_count(self) -> int:
        key = self.keys.named("dlq")
        client = self.endpoint.client
        n: int = await retrying(lambda: client.zcard(key), self.config.retry_budget, self._what)
        return n

    async def requeue_dead_letters(self, n: int = 100) -> int:
        """Moves the `n` oldest DLQ entries back to ready with their retry count reset (a
        page per script call); returns how many were moved (entries without a body are
        dropped, not moved)."""
        if n < 0:
            raise InvalidArgumentError(f"requeue_dead_letters: n must be >= 0, got {n}")
        client, keys = self.endpoint.client, self.keys.all
        moved = 0
        while n > 0:
            page = min(n, DLQ_PAGE)
            got, taken = await retrying(
                lambda: scripts.requeue_dlq(client, keys, [page]),  # noqa: B023
                self.config.retry_budget,
                self._what,
            )
            moved += int(got)
            n -= int(taken)
            if taken < page:
                break
        return moved

    async def purge_dead_letters(self) -> int:
        """Removes every DLQ entry and its body (a page per script call)."""
        client, keys = self.endpoint.client, self.keys.all
        removed = 0
        while True:
            n: int = await retrying(
                lambda: scripts.purge_dlq(client, keys, [DLQ_PAGE]),
                self.config.retry_budget,
                self._what,
            )
            removed += n
            if n < DLQ_PAGE:
                return removed

    async def dead_letters(self, count: int = 10, start: int = 0) -> list[DeadLetter]:
        """Peeks at DLQ entries, oldest first, without moving them: `count` of them from
        position `start` (both >= 0; count 0 is none)."""
        if count < 0 or start < 0:
            raise InvalidArgumentError(
                f"dead_letters: count and start must be >= 0, got {count} and {start}"
            )
        if count == 0:
            return []
        client = self.endpoint.client
        budget = self.config.retry_budget
        ids: list[bytes] = await retrying(
            lambda: client.zrange(self.keys.named("dlq"), start, start + count - 1),
            budget,
            self._what,
        )
        if not ids:
            return []

        async def read() -> list[Any]:
            pipe = client.pipeline(transaction=False)
            pipe.hmget(self.keys.named("msg"), ids)
            pipe.hmget(self.keys.named("dlqinfo"), ids)
            result: list[Any] = await pipe.execute()
            return result

        bodies, infos = await retrying(read, budget, self._what)
        out = []
        for raw_id, body, info in zip(ids, bodies, infos, strict=True):
            meta: Any = {}
            with contextlib.suppress(Exception):
                meta = orjson.loads(info) if info else {}
            if not isinstance(meta, dict):
                meta = {}
            msg = None
            raw = body[1:] if body else None
            if raw is not None:
                with contextlib.suppress(MalformedMessageError, MessageTooLargeError):
                    msg = self.codec.decode(raw)
            out.append(
                DeadLetter(
                    id=raw_id.decode(errors="backslashreplace"),
                    message=msg,
                    raw=raw,
                    reason=str(meta.get("reason", "")),
                    failed_at=float(_count(meta.get("time", 0))),
                    deliveries=_count(meta.get("deliveries", 0)),
                    retries=_count(meta.get("retries", 0)),
                )
            )
        return out


__all__ = ["DLQ_PAGE", "DeadLetter", "QueueAdmin"]
