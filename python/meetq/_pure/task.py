"""Pure-Python twin of the native task record (`rust/src/py_task.rs`): `Task`, what is kept
of a finished one (`FinishedTask`), the state codes the scheduler core shares with the
Python shell, and the registry of the `TaskStatus`/`Priority` members a record carries.
The scheduler core that moves records around is `meetq._pure.sched`.
"""

from __future__ import annotations

from typing import Any

# Where a submitted task is (`_where`).
NEW, READY, OVERDUE, DELAYED, RUNNING, DONE = range(6)
# Why a running task is being cancelled (`_why`).
NO_REASON, BY_CANCEL, BY_TIMEOUT, BY_STOP = range(4)
# Index of each TaskStatus member in the registered tuple.
PENDING, PROCESSING, COMPLETED, FAILED, CANCELLED, TIMEOUT = range(6)

_enums: tuple[Any, tuple[Any, ...]] | None = None


def register_task_enums(normal: Any, statuses: tuple[Any, ...]) -> None:
    """`Priority.NORMAL` and the six `TaskStatus` members (defined by the scheduler)."""
    global _enums
    if len(statuses) != 6:
        raise ValueError("six statuses expected")
    if _enums is None:
        _enums = (normal, tuple(statuses))


def _statuses() -> tuple[Any, ...]:
    if _enums is None:
        raise RuntimeError("import meetq.local.scheduler first")
    return _enums[1]


class Task:
    """A unit of work: `handler(task)` runs once the task is ready and a worker is free.

    `timeout` (seconds, None or 0 = none) bounds async and thread handlers; `max_retries`
    failed attempts are retried after `retry_backoff * 2**(n-1)` seconds (with jitter).
    `delay` (seconds) or `scheduled_at` (epoch seconds) postpone the first attempt.
    `result` receives the handler's return value.
    """

    __slots__ = (
        "_ended",
        "_error",
        "_future",
        "_lane",
        "_payload",
        "_started",
        "_timer",
        "_waiters",
        "_where",
        "_why",
        "delay",
        "handler",
        "id",
        "in_thread",
        "max_retries",
        "priority",
        "result",
        "retry_backoff",
        "retry_count",
        "scheduled_at",
        "status",
        "timeout",
        "type",
    )

    type: Any
    handler: Any
    priority: Any
    id: Any
    timeout: float | None
    max_retries: int
    retry_count: int
    retry_backoff: float
    delay: float
    scheduled_at: float | None
    in_thread: bool
    status: Any
    result: Any
    _where: int
    _why: int
    _started: float
    _ended: float
    _error: str | None
    _future: Any
    _waiters: list[Any] | None
    _timer: int
    _lane: int

    def __init__(
        self,
        type: Any = None,
        handler: Any = None,
        priority: Any = None,
        payload: Any = None,
        id: Any = None,
        timeout: float | None = 30.0,
        max_retries: int = 0,
        retry_count: int = 0,
        retry_backoff: float = 1.0,
        delay: float = 0.0,
        scheduled_at: float | None = None,
        in_thread: bool = False,
        status: Any = None,
        result: Any = None,
    ) -> None:
        if _enums is None:
            raise RuntimeError("import meetq.local.scheduler first")
        normal, statuses = _enums
        self.type = "" if type is None else type
        self.handler = handler
        self.priority = normal if priority is None else priority
        self._payload = payload
        self.id = "" if id is None else id
        # As the native record stores them: floats, ints and a bool.
        self.timeout = None if timeout is None else float(timeout)
        self.max_retries = int(max_retries)
        self.retry_count = int(retry_count)
        self.retry_backoff = float(retry_backoff)
        self.delay = float(delay)
        self.scheduled_at = None if scheduled_at is None else float(scheduled_at)
        self.in_thread = bool(in_thread)
        self.status = statuses[PENDING] if status is None else status
        self.result = result
        self._where = NEW
        self._why = NO_REASON
        self._started = 0.0
        self._ended = 0.0
        self._error = None
        self._future = None
        self._waiters = None
        self._timer = -1
        self._lane = 1

    @property
    def payload(self) -> Any:
        if self._payload is None:
            self._payload = {}
        return self._payload

    @payload.setter
    def payload(self, value: Any) -> None:
        self._payload = value

    def __repr__(self) -> str:
        payload = "{}" if self._payload is None else repr(self._payload)
        return (
            f"Task(type={self.type!r}, handler={self.handler!r}, priority={self.priority!r}, "
            f"payload={payload}, id={self.id!r}, timeout={self.timeout!r}, "
            f"max_retries={self.max_retries}, retry_count={self.retry_count}, "
            f"retry_backoff={self.retry_backoff!r}, delay={self.delay!r}, "
            f"scheduled_at={self.scheduled_at!r}, in_thread={self.in_thread}, "
            f"status={self.status!r}, result={self.result!r})"
        )


class FinishedTask:
    """What the scheduler keeps of a finished task (for `status`, `wait`, `TaskResult`)."""

    __slots__ = ("_ended", "_error", "_started", "id", "status")
    _where = DONE

    def __init__(self, id: Any, status: Any, error: str | None, started: float, ended: float):
        self.id = id
        self.status = status
        self._error = error
        self._started = started
        self._ended = ended

    def __repr__(self) -> str:
        return f"FinishedTask(id={self.id!r}, status={self.status!r})"
