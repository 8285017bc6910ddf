"""`QueueConfig`: every knob of a `RedisMessageQueue` in one checked object.

`RedisMessageQueue(url, name, workers=4, visibility_timeout=30.0, prefetch=...)` still
takes them as keyword arguments; `config=QueueConfig(...)` passes them as one value (the
manager and the CLI build one from their own settings), and keywords override it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, TypedDict

from meetq._core.codec import DEFAULT_MAX_SIZE, Format
from meetq.errors import InvalidArgumentError


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """Knobs of one queue (DESIGN.md's four first, then meetq's own)."""

    workers: int = 4
    """Concurrent async / in-thread handlers (sync ones run inline, one at a time)."""
    visibility_timeout: float = 30.0
    """Seconds a lease lasts without renewal: how soon a lost worker's messages return."""
    retry_backoff: float = 1.0
    """Base (seconds) of the exponential retry backoff, with jitter."""
    prefetch: int | None = None
    """Messages held beyond `workers` (default max(64, 4 * workers))."""
    max_backoff: float = 300.0
    max_deliveries: int = 10
    """A lease that expires this often sends the message to the DLQ (poison messages)."""
    dead_letter_max: int = 100_000
    dead_letter_max_age: float = 7 * 86400.0
    stop_grace: float = 10.0
    """Seconds `stop()` lets running handlers finish before releasing their leases."""
    result_ttl: float = 3600.0
    """Seconds a reply list lives."""
    block_timeout: float = 2.0
    """Longest doorbell wait (a dead connection is noticed within it)."""
    retry_budget: float = 10.0
    """Seconds a publisher or admin call retries before `MeetqConnectionError`."""
    serializer: Format = "json"
    max_message_size: int = DEFAULT_MAX_SIZE
    resp_connection: bool = True
    """False keeps every path on redis-py (no meetq RespConnection)."""
    ack_delay: float = 0.02
    """Longest an ack waits to be batched with others while the fetcher is idle."""
    wait_replicas: int = 0
    """A publish returns only once this many replicas have it (WAIT); 0 trusts Redis's
    asynchronous replication, so a failover can lose the last publishes a master took."""
    wait_timeout: float = 1.0
    """Seconds WAIT may take before the publish fails with `MeetqConnectionError`."""
    max_handler_time: float = 3600.0
    """How long a message with no timeout of its own (`timeout=0`) may run: its run is
    cancelled (async) or its lease stops being renewed (sync, thread) after that."""

    def __post_init__(self) -> None:
        if self.workers <= 0:
            raise InvalidArgumentError("workers must be positive")
        if self.visibility_timeout <= 0:
            raise InvalidArgumentError("visibility_timeout must be positive")
        if self.prefetch is not None and self.prefetch < 0:
            raise InvalidArgumentError("prefetch must not be negative")
        if self.wait_replicas < 0:
            raise InvalidArgumentError("wait_replicas must not be negative")
        if self.max_handler_time <= 0:
            raise InvalidArgumentError("max_handler_time must be positive")

    def with_changes(self, **changes: Any) -> QueueConfig:
        """A copy with `changes`; an unknown name is a TypeError, as for a keyword."""
        return dataclasses.replace(self, **changes)

    # derived values the parts share

    @property
    def capacity(self) -> int:
        """Messages this process holds at most (running + fetched, not started)."""
        extra = self.prefetch if self.prefetch is not None else max(64, 4 * self.workers)
        return self.workers + extra

    @property
    def fetch_max(self) -> int:
        """Most ids one dequeue asks for."""
        return max(1, min(1000, self.capacity // 2))

    @property
    def lease_ms(self) -> int:
        return int(self.visibility_timeout * 1000)

    @property
    def result_ttl_ms(self) -> int:
        return max(1, int(self.result_ttl * 1000))

    @property
    def renew_interval(self) -> float:
        """How often leases are renewed (and how fresh the loop's heartbeat must be)."""
        return max(0.05, self.visibility_timeout / 3)

    def allowed(self, timeout: float) -> float:
        """How long a run of a message with `timeout` keeps its lease: the timeout (or
        `max_handler_time` when it has none) plus a margin of one visibility timeout."""
        return (timeout if timeout > 0 else self.max_handler_time) + self.visibility_timeout

    @property
    def ack_wait(self) -> float:
        """`ack_delay`, bounded well inside the lease."""
        return min(self.ack_delay, self.visibility_timeout / 10)

    @property
    def dlq_args(self) -> tuple[int, int]:
        """The DLQ bounds as the scripts take them: count, age in ms."""
        return self.dead_letter_max, int(self.dead_letter_max_age * 1000)


class QueueKnobs(TypedDict, total=False):
    """The keyword form of `QueueConfig` (for `**knobs` of `RedisMessageQueue`)."""

    prefetch: int | None
    max_backoff: float
    max_deliveries: int
    dead_letter_max: int
    dead_letter_max_age: float
    stop_grace: float
    result_ttl: float
    block_timeout: float
    retry_budget: float
    serializer: Format
    max_message_size: int
    resp_connection: bool
    ack_delay: float
    wait_replicas: int
    wait_timeout: float
    max_handler_time: float


__all__ = ["QueueConfig", "QueueKnobs"]
