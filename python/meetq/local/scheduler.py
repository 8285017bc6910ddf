"""In-process task scheduler on the native timer wheel.

Ready tasks wait in four FIFO lanes, one per priority, and a pump started with `call_soon`
starts them highest lane first while fewer than `workers` are running: strict priority,
FIFO within a priority. Plain `def` handlers run inline in the pump (they cannot be
interrupted, so no timeout applies to them); `in_thread=True` runs them in a thread pool;
a handler that returns an awaitable (any `async def`) runs as an asyncio task.

Everything time-based goes through ONE `TimerWheel`: delayed tasks (`delay`,
`scheduled_at`), retry backoffs and the timeouts of running tasks. One loop timer is armed
for the wheel's next deadline and re-armed only when an earlier deadline arrives; there is
no periodic poll. Wheel time is `time.monotonic()` in whole ms: deadlines are rounded up and
the clock is read rounded down, so a timer never fires early even when the loop's own
cached clock is a little stale (an early loop wake-up just re-arms).

The scheduler is in memory by design: `stop()` drops tasks still waiting for their time
and returns them, so the caller can log or re-submit them elsewhere (durable delayed work
belongs to `RedisMessageQueue`). Call `submit`/`cancel`/`status` from the loop's thread.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import math
import os
import random
import time
import types
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from functools import partial
from typing import Any, NamedTuple, NoReturn

from meetq._core.eager import Resume
from meetq._native import TimerWheel
from meetq.errors import MeetqError, QueueFullError, TaskNotFoundError
from meetq.priority import Priority

log = logging.getLogger("meetq.local.scheduler")

Handler = Callable[["Task"], Any]


class TaskStatus(StrEnum):
    """Life cycle of a task; a delayed task (or one waiting for its retry) is PENDING."""

    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"


# Where a submitted task is; lets cancel() act in O(1) without searching queues.
_NEW, _READY, _OVERDUE, _DELAYED, _RUNNING, _DONE = range(6)
# Why a running task is being cancelled.
_NO_REASON, _BY_CANCEL, _BY_TIMEOUT, _BY_STOP = range(4)


@dataclass(eq=False, slots=True)
class Task:
    """A unit of work: `handler(task)` runs once the task is ready and a worker is free.

    `timeout` (seconds, None or 0 = none) bounds async and thread handlers; `max_retries`
    failed attempts are retried after `retry_backoff * 2**(n-1)` seconds (with jitter).
    `delay` (seconds) or `scheduled_at` (epoch seconds) postpone the first attempt.
    `result` receives the handler's return value.
    """

    type: str = ""
    handler: Handler | None = None
    priority: Priority | int = Priority.NORMAL
    payload: dict[str, Any] = field(default_factory=dict)
    id: str = ""
    timeout: float | None = 30.0
    max_retries: int = 0
    retry_count: int = 0
    retry_backoff: float = 1.0
    delay: float = 0.0
    scheduled_at: float | None = None
    in_thread: bool = False
    status: TaskStatus = TaskStatus.PENDING
    result: Any = None
    # Scheduler state (not part of the constructor).
    _where: int = field(default=_NEW, init=False, repr=False)
    _timer: int = field(default=-1, init=False, repr=False)  # wheel handle, -1 = none
    _why: int = field(default=_NO_REASON, init=False, repr=False)
    _started: float = field(default=0.0, init=False, repr=False)  # epoch s, 0 = never ran
    _ended: float = field(default=0.0, init=False, repr=False)  # epoch s, once finished
    _error: str | None = field(default=None, init=False, repr=False)
    _future: asyncio.Future[Any] | None = field(default=None, init=False, repr=False)
    _waiters: list[asyncio.Future[TaskResult]] | None = field(default=None, init=False, repr=False)


class TaskResult(NamedTuple):
    """How a task ended. `start_time`/`end_time` are epoch seconds (`start_time` is None if
    it never ran); `duration` spans the first attempt's start to the end."""

    task_id: str
    status: TaskStatus
    error: str | None
    duration: float
    start_time: float | None
    end_time: float


_LANE: dict[Priority | int, int] = {p: int(p) for p in Priority}
# Hot-path constants: one global load instead of a global plus an attribute.
_PENDING, _PROCESSING, _COMPLETED = TaskStatus.PENDING, TaskStatus.PROCESSING, TaskStatus.COMPLETED
_CANCELLED = TaskStatus.CANCELLED
_wall = time.time
_Coroutine = types.CoroutineType


def _result(task: Task) -> TaskResult:
    start = task._started or None
    end = task._ended
    return TaskResult(task.id, task.status, task._error, end - start if start else 0.0, start, end)


def _ms_ceil(seconds_from_now: float) -> int:
    return math.ceil((time.monotonic() + seconds_from_now) * 1000.0)


def _now_ms() -> int:
    return int(time.monotonic() * 1000.0)


class TaskScheduler:
    """Runs `Task`s with strict priority, `workers` at a time, with delays, timeouts,
    retries and cancellation; see the module docs."""

    _pump_batch = 512

    def __init__(
        self,
        buffer_size: int = 1000,
        workers: int = 8,
        *,
        max_results: int = 10_000,
        result_ttl: float = 3600.0,
        max_backoff: float = 300.0,
    ) -> None:
        if buffer_size <= 0 or workers <= 0:
            raise ValueError("buffer_size and workers must be positive")
        self.buffer_size = buffer_size
        self.workers = workers
        self.max_results = max_results
        self.result_ttl = result_ttl
        self.max_backoff = max_backoff
        self._wheel = TimerWheel(_now_ms())
        self._lanes: tuple[deque[Task], ...] = tuple(deque() for _ in Priority)
        self._lanes_high_first = self._lanes[::-1]
        self._ready = 0  # live tasks in the lanes (cancelled ones are skipped lazily)
        self._overdue: deque[Task] = deque()  # due while the lanes were full, in due order
        self._overdue_count = 0
        self._delayed = 0  # tasks waiting in the wheel for their delay or retry
        self._active = 0  # running async / thread handlers
        # Every task by id: live ones, and finished ones until evicted (oldest first from
        # `_done`, by count and age); results are built from the finished Task on demand.
        self._tasks: dict[str, Task] = {}
        self._done: deque[Task] = deque()
        self._ids = itertools.count(1)
        self._prefix = f"task-{os.getpid():x}-{id(self):x}-"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf  # wheel ms the loop timer is armed for
        self._pump_scheduled = False
        self._executor: ThreadPoolExecutor | None = None
        self._running = False
        self._closed = False
        self._idle: asyncio.Future[None] | None = None
        self._total = self._completed = self._failed = self._cancelled = self._retried = 0

    # -- public API -------------------------------------------------------------------

    def submit(self, task: Task) -> str:
        """Queues `task` and returns its id. Raises `QueueFullError` when it is ready now
        and `buffer_size` tasks are already waiting; delayed tasks never raise it."""
        lane = _LANE.get(task.priority)
        if lane is None or task._where != _NEW or task.handler is None or self._closed:
            self._reject(task)
        tid = task.id
        tasks = self._tasks
        if not tid:
            tid = task.id = self._prefix + str(next(self._ids))
        elif tid in tasks and tasks[tid]._where != _DONE:
            raise ValueError(f"task id {tid!r} is already scheduled")
        task.status = _PENDING
        if task.delay > 0 or task.scheduled_at is not None:
            delay = task.delay if task.scheduled_at is None else task.scheduled_at - _wall()
            if delay > 0:
                tasks[tid] = task
                self._total += 1
                self._to_wheel(task, _ms_ceil(delay))
                return tid
        if self._ready >= self.buffer_size:
            raise QueueFullError(f"task {tid!r}: {self.buffer_size} tasks already waiting")
        tasks[tid] = task
        self._total += 1
        self._lanes[lane].append(task)
        task._where = _READY
        self._ready += 1
        if not self._pump_scheduled:
            self._kick()
        return tid

    def _reject(self, task: Task) -> NoReturn:
        if self._closed:
            raise MeetqError("scheduler is stopped")
        if task.handler is None:
            raise ValueError("task has no handler")
        if task._where != _NEW:
            raise ValueError(f"task {task.id!r} was already submitted")
        raise ValueError(f"priority must be 0..3, got {task.priority!r}")

    def cancel(self, task_id: str) -> bool:
        """Cancels a pending, delayed or running task (a running async handler receives
        `CancelledError`); False when the task already finished or is unknown."""
        task = self._tasks.get(task_id)
        if task is None or task._where == _DONE:
            return False
        where = task._where
        if where == _RUNNING:
            fut = task._future
            if fut is not None and fut.done():
                return False  # finished; its result is being recorded
            if task._why == _NO_REASON:
                task._why = _BY_CANCEL
                task.status = _CANCELLED
                if fut is not None:
                    fut.cancel()
            return True
        self._unqueue(task)
        self._finish(task, _CANCELLED, "cancelled")
        return True

    def status(self, task_id: str) -> TaskStatus:
        """The task's current status; `TaskNotFoundError` for an unknown or forgotten id."""
        task = self._tasks.get(task_id)
        if task is None:
            raise TaskNotFoundError(task_id)
        return task.status

    async def wait(self, task_id: str) -> TaskResult:
        """Waits for the task to finish; `TaskNotFoundError` for an unknown id."""
        task = self._tasks.get(task_id)
        if task is None:
            raise TaskNotFoundError(task_id)
        if task._where == _DONE:
            return _result(task)
        fut: asyncio.Future[TaskResult] = asyncio.get_running_loop().create_future()
        if task._waiters is None:
            task._waiters = []
        task._waiters.append(fut)
        return await fut

    def get_stats(self) -> dict[str, int]:
        return {
            "total_tasks": self._total,
            "completed_tasks": self._completed,
            "failed_tasks": self._failed,  # ended FAILED or TIMEOUT
            "cancelled_tasks": self._cancelled,
            "retried_tasks": self._retried,  # retry attempts scheduled
            "active_tasks": self._active,
            "delayed_tasks": self._delayed,
            "pending_tasks": self._ready + self._overdue_count,
        }

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        if self._running:
            return
        if self._closed:
            raise MeetqError("a stopped scheduler cannot be restarted")
        self._loop = asyncio.get_running_loop()
        self._running = True
        nd = self._wheel.next_deadline()
        if nd is not None:
            self._arm(nd)
        self._kick()

    async def stop(self, *, discard: bool = False, timeout: float | None = None) -> list[Task]:
        """Stops accepting tasks and shuts down gracefully.

        Ready and running tasks are finished (or, with `discard=True` or once `timeout`
        passes, cancelled). Failures no longer retry. Tasks still waiting for their delay or
        retry are dropped as CANCELLED and returned.
        """
        if self._closed:
            return []
        self._closed = True
        dropped = [t for t in self._tasks.values() if t._where == _DELAYED]
        for task in dropped:
            self._unqueue(task)
            self._finish(task, _CANCELLED, "dropped by stop()")
        if dropped:
            log.warning("stop() dropped %d delayed task(s)", len(dropped))
        if not self._running:
            self._cancel_all_waiting()
        else:
            if discard:
                self._cancel_all_waiting()
                self._cancel_running()
            if not self._is_idle():
                self._idle = self._loop.create_future()  # type: ignore[union-attr]
                try:
                    await asyncio.wait_for(asyncio.shield(self._idle), timeout)
                except TimeoutError:
                    self._cancel_all_waiting()
                    self._cancel_running()
                    if not self._is_idle():
                        await self._idle
            self._running = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        return dropped

    async def __aenter__(self) -> TaskScheduler:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- queues -----------------------------------------------------------------------

    def _to_wheel(self, task: Task, deadline_ms: int) -> None:
        task._where = _DELAYED
        self._delayed += 1
        task._timer = self._wheel.insert(deadline_ms, task)
        self._arm(deadline_ms)

    def _make_ready(self, task: Task) -> None:
        """A delayed task came due: into its lane, or behind the lanes while they are full."""
        if self._ready < self.buffer_size:
            self._lanes[int(task.priority)].append(task)
            task._where = _READY
            self._ready += 1
        else:
            self._overdue.append(task)
            task._where = _OVERDUE
            self._overdue_count += 1

    def _unqueue(self, task: Task) -> None:
        """Takes a waiting task out of the books; lanes and overdue skip it lazily."""
        where = task._where
        if where == _READY:
            self._ready -= 1
        elif where == _OVERDUE:
            self._overdue_count -= 1
        elif where == _DELAYED:
            self._wheel.cancel(task._timer)
            task._timer = -1
            self._delayed -= 1
        task._where = _DONE

    def _refill(self) -> None:
        overdue = self._overdue
        while overdue and self._ready < self.buffer_size:
            task = overdue.popleft()
            if task._where == _OVERDUE:
                self._overdue_count -= 1
                self._lanes[int(task.priority)].append(task)
                task._where = _READY
                self._ready += 1

    def _cancel_all_waiting(self) -> None:
        for task in [t for t in self._tasks.values() if t._where in (_READY, _OVERDUE)]:
            self._unqueue(task)
            self._finish(task, _CANCELLED, "cancelled by stop()")
        for lane in self._lanes:
            lane.clear()
        self._overdue.clear()

    def _cancel_running(self) -> None:
        for task in list(self._tasks.values()):
            if task._where == _RUNNING and task._why == _NO_REASON:
                task._why = _BY_STOP
                if task._future is not None:
                    task._future.cancel()

    # -- running ----------------------------------------------------------------------

    def _kick(self) -> None:
        if not self._pump_scheduled and self._running and (self._ready or self._overdue_count):
            self._pump_scheduled = True
            self._loop.call_soon(self._pump)  # type: ignore[union-attr]

    def _pump(self) -> None:
        """Starts ready tasks, highest priority first, while workers are free."""
        self._pump_scheduled = False
        if not self._running:
            return
        lanes = self._lanes_high_first
        run = self._run
        workers = self.workers
        for _ in range(self._pump_batch):
            if not self._ready or self._active >= workers:
                break
            task = None
            for lane in lanes:
                while lane:
                    task = lane.popleft()
                    if task._where == _READY:
                        break
                    task = None  # cancelled while queued
                if task is not None:
                    break
            assert task is not None, "ready count out of sync with the lanes"
            self._ready -= 1
            if self._overdue_count:
                self._refill()
            run(task)
        else:
            self._kick()  # let the loop breathe between batches
            return
        if self._idle is not None:
            self._check_idle()

    def _run(self, task: Task) -> None:
        task._where = _RUNNING
        task.status = _PROCESSING
        if not task._started:
            task._started = _wall()
        handler: Handler = task.handler  # type: ignore[assignment]
        if task.in_thread:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="meetq-task")
            pool = self._loop.run_in_executor  # type: ignore[union-attr]
            self._track(task, pool(self._executor, handler, task))
            return
        try:
            result = handler(task)
        except Exception as exc:
            self._failed_attempt(task, exc)
            return
        if type(result) is _Coroutine:
            # The first step runs eagerly (see `_eager`): a handler that never suspends
            # finishes here with no task and no timeout timer.
            try:
                first = result.send(None)
            except StopIteration as finished:
                result = finished.value
            except asyncio.CancelledError:
                self._finish(task, _CANCELLED, "cancelled")
                return
            except Exception as exc:
                self._failed_attempt(task, exc)
                return
            else:
                loop: asyncio.AbstractEventLoop = self._loop  # type: ignore[assignment]
                self._track(task, loop.create_task(Resume(result, first)))
                return
            if task._why == _BY_CANCEL:
                self._finish(task, _CANCELLED, "cancelled")
            else:
                task.result = result
                self._finish(task, _COMPLETED, None)
        elif result is not None and inspect.isawaitable(result):
            self._track(task, asyncio.ensure_future(result))
        elif task._why == _BY_CANCEL:  # the handler cancelled itself
            self._finish(task, _CANCELLED, "cancelled")
        else:
            task.result = result
            self._finish(task, _COMPLETED, None)

    def _track(self, task: Task, fut: asyncio.Future[Any]) -> None:
        """Counts a started async/thread attempt and arms its timeout."""
        self._active += 1
        task._future = fut
        if task.timeout:
            deadline = _ms_ceil(task.timeout)
            task._timer = self._wheel.insert(deadline, task)
            self._arm(deadline)
        fut.add_done_callback(partial(self._on_done, task))

    def _on_done(self, task: Task, fut: asyncio.Future[Any]) -> None:
        if fut.cancelled():
            self._settle(task, True, None, None)
        elif (exc := fut.exception()) is not None:
            self._settle(task, False, exc, None)
        else:
            self._settle(task, False, None, fut.result())

    def _settle(self, task: Task, cancelled: bool, exc: BaseException | None, result: Any) -> None:
        self._active -= 1
        task._future = None
        if task._timer >= 0:
            self._wheel.cancel(task._timer)
            task._timer = -1
        why = task._why
        if why == _BY_TIMEOUT:
            self._failed_attempt(task, None)
        elif why != _NO_REASON or cancelled:
            reason = "stopped" if why == _BY_STOP else "cancelled"
            self._finish(task, _CANCELLED, reason)
        elif exc is None:
            task.result = result
            self._finish(task, _COMPLETED, None)
        else:
            self._failed_attempt(task, exc)
        if self._ready and not self._pump_scheduled:
            self._pump()
        elif self._idle is not None:
            self._check_idle()

    def _failed_attempt(self, task: Task, exc: BaseException | None) -> None:
        """`exc` None means the attempt timed out."""
        if exc is None:
            error = f"timed out after {task.timeout}s"
        else:
            error = f"{type(exc).__name__}: {exc}"
        if task.retry_count < task.max_retries and not self._closed:
            task.retry_count += 1
            self._retried += 1
            task.status = _PENDING
            task._why = _NO_REASON
            base = min(task.retry_backoff * 2 ** (task.retry_count - 1), self.max_backoff)
            backoff = base / 2 + random.random() * base / 2  # "equal jitter"
            log.info(
                "task %s attempt %d failed (%s); retry in %.3fs",
                task.id,
                task.retry_count,
                error,
                backoff,
            )
            self._to_wheel(task, _ms_ceil(backoff))
            return
        status = TaskStatus.FAILED if exc is not None else TaskStatus.TIMEOUT
        log.warning("task %s (%s) %s: %s", task.id, task.type, status.value, error)
        self._finish(task, status, error)

    def _finish(self, task: Task, status: TaskStatus, error: str | None) -> None:
        task.status = status
        task._where = _DONE
        task._error = error
        end = task._ended = _wall()
        if status is _COMPLETED:
            self._completed += 1
        elif status is _CANCELLED:
            self._cancelled += 1
        else:
            self._failed += 1
        done = self._done
        done.append(task)
        if len(done) > self.max_results or done[0]._ended < end - self.result_ttl:
            self._forget_old(end)
        waiters = task._waiters
        if waiters:
            task._waiters = None
            result = _result(task)
            for fut in waiters:
                if not fut.done():
                    fut.set_result(result)
        if self._idle is not None:
            self._check_idle()

    def _forget_old(self, now: float) -> None:
        """Finished tasks stay for `result_ttl` seconds, at most `max_results` of them.

        Over the count, the oldest eighth goes at once, so eviction is amortized."""
        done, tasks = self._done, self._tasks
        cutoff = now - self.result_ttl
        keep = self.max_results
        if len(done) > keep:
            keep -= keep // 8
        while done and (len(done) > keep or done[0]._ended < cutoff):
            old = done.popleft()
            if tasks.get(old.id) is old:  # the id may have been reused by a newer task
                del tasks[old.id]

    # -- the one loop timer -----------------------------------------------------------

    def _arm(self, deadline_ms: int) -> None:
        """Makes sure the loop timer fires by `deadline_ms` (only ever moves it earlier)."""
        if not self._running or deadline_ms >= self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline_ms
        # At least one tick: uvloop rounds to whole ms on a cached clock, so a shorter delay
        # would become 0 and the loop would spin until the deadline instead of sleeping.
        delay = max(deadline_ms / 1000.0 - time.monotonic(), 0.001)
        self._timer = self._loop.call_later(delay, self._on_timer)  # type: ignore[union-attr]

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = math.inf
        for task in self._wheel.advance(_now_ms()):
            task._timer = -1
            if task._where == _RUNNING:
                fut = task._future
                if fut is not None and not fut.done() and task._why == _NO_REASON:
                    task._why = _BY_TIMEOUT
                    fut.cancel()
            else:
                self._delayed -= 1
                self._make_ready(task)
        nd = self._wheel.next_deadline()
        if nd is not None:
            self._arm(nd)
        if self._ready and self._active < self.workers:
            self._pump()  # start due tasks now, not one loop iteration later

    def _is_idle(self) -> bool:
        return not (self._active or self._ready or self._overdue_count)

    def _check_idle(self) -> None:
        idle = self._idle
        if idle is not None and self._is_idle():
            self._idle = None
            if not idle.done():
                idle.set_result(None)
