"""In-process task scheduler on the native timer wheel.

Ready tasks wait in four FIFO lanes, one per priority, and a pump started with `call_soon`
starts them highest lane first while fewer than `workers` are running: strict priority,
FIFO within a priority. Plain `def` handlers run inline in the pump (they cannot be
interrupted, so no timeout applies to them); `in_thread=True` runs them in a thread pool;
an `async def` handler runs in one of the scheduler's long-lived runner tasks
(`meetq._core.runners`), which runs nothing else until it ends: its first step at once, in
the pump, with that runner as the current task (a handler that never suspends costs no
task), the rest in the runner's own steps. Any other awaitable a handler returns runs as an
asyncio task.

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
import logging
import os
import random
import time
import types
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from enum import StrEnum
from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple

from meetq import _native
from meetq._core.runner import describe
from meetq._core.runners import RunnerPool
from meetq._native import SchedulerCore, register_task_enums
from meetq._pure import sched as _pure_sched
from meetq._pure.sched import (
    BY_CANCEL,
    BY_STOP,
    BY_TIMEOUT,
    CANCELLED,
    COMPLETED,
    DELAYED,
    DONE,
    FAILED,
    NEW,
    NO_REASON,
    OVERDUE,
    READY,
    RUNNING,
    TIMEOUT,
    FinishedTask,
)
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


_STATUSES = tuple(TaskStatus)
# The Task record and the scheduler core are native (pure twins in meetq/_pure/task.py and
# meetq/_pure/sched.py); both twins learn the enums their tasks start with.
for _register in (register_task_enums, _pure_sched.register_task_enums):
    _register(Priority.NORMAL, _STATUSES)

if TYPE_CHECKING:
    from meetq._pure.task import Task as Task
else:
    Task = _native.Task


class TaskResult(NamedTuple):
    """How a task ended. `start_time`/`end_time` are epoch seconds (`start_time` is None if
    it never ran); `duration` spans the first attempt's start to the end."""

    task_id: str
    status: TaskStatus
    error: str | None
    duration: float
    start_time: float | None
    end_time: float


_wall = time.time
_Coroutine = types.CoroutineType


def _result(task: Task | FinishedTask) -> TaskResult:
    start = task._started or None
    end = task._ended
    status = TaskStatus(task.status)
    return TaskResult(task.id, status, task._error, end - start if start else 0.0, start, end)


class TaskScheduler:
    """Runs `Task`s with strict priority, `workers` at a time, with delays, timeouts,
    retries and cancellation; see the module docs."""

    # The core in use; a class attribute so a benchmark can pit the pure twin against the
    # native core in one process.
    _Core: Any = SchedulerCore

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
        self._core = core = self._Core(
            buffer_size,
            workers,
            max_results,
            result_ttl,
            f"task-{os.getpid():x}-{id(self):x}-",
            int(time.monotonic() * 1000.0),
            arm=self._arm,
            kick=self._kick,
            reject=self._reject,
            finished=self._on_finished,
            idle=self._check_idle,
            start_async=self._start_async,
            start_thread=self._start_thread,
            failed=self._failed_attempt,
        )
        # Every task by id: live ones, and finished ones until evicted (oldest first, by
        # count and age), in the core's id table; results are built from them on demand.
        self._lookup: Callable[[str], Task | FinishedTask | None] = core.lookup
        # The hot paths are the core's own methods: no Python frame in between.
        self.submit: Callable[[Task], str] = core.submit  # type: ignore[method-assign]
        self.cancel: Callable[[str], bool] = core.cancel  # type: ignore[method-assign]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._threads: dict[str, Future[Any]] = {}  # thread runs in progress, by task id
        self._idle: asyncio.Future[None] | None = None
        self._runners: RunnerPool | None = None

    # -- public API -------------------------------------------------------------------

    def submit(self, task: Task) -> str:  # replaced by the core's method in __init__
        """Queues `task` and returns its id. Raises `QueueFullError` when it is ready now
        and `buffer_size` tasks are already waiting; delayed tasks never raise it."""
        return str(self._core.submit(task))

    def cancel(self, task_id: str) -> bool:  # replaced by the core's method in __init__
        """Cancels a pending, delayed or running task (a running async handler receives
        `CancelledError`; a thread handler cannot be interrupted: its run keeps its worker
        until it returns); False when the task already finished or is unknown."""
        return bool(self._core.cancel(task_id))

    def _reject(self, task: Task, full: bool) -> None:
        if full:
            raise QueueFullError(f"task {task.id!r}: {self.buffer_size} tasks already waiting")
        if self._core.closed:
            raise MeetqError("scheduler is stopped")
        if task.handler is None:
            raise ValueError("task has no handler")
        if task._where != NEW:
            raise ValueError(f"task {task.id!r} was already submitted")
        raise ValueError(f"priority must be 0..3, got {task.priority!r}")

    def status(self, task_id: str) -> TaskStatus:
        """The task's current status; `TaskNotFoundError` for an unknown or forgotten id."""
        task = self._lookup(task_id)
        if task is None:
            raise TaskNotFoundError(task_id)
        return TaskStatus(task.status)

    async def wait(self, task_id: str) -> TaskResult:
        """Waits for the task to finish; `TaskNotFoundError` for an unknown id."""
        task = self._lookup(task_id)
        if task is None:
            raise TaskNotFoundError(task_id)
        if not isinstance(task, Task) or task._where == DONE:
            return _result(task)
        fut: asyncio.Future[TaskResult] = asyncio.get_running_loop().create_future()
        waiters = task._waiters
        if waiters is None:
            waiters = task._waiters = []
        waiters.append(fut)
        return await fut

    def get_stats(self) -> dict[str, int]:
        """Counts; `failed_tasks` ended FAILED or TIMEOUT, `retried_tasks` counts retry
        attempts scheduled, `active_tasks` the async and thread runs holding a worker."""
        stats: dict[str, int] = self._core.stats()
        return stats

    # -- lifecycle --------------------------------------------------------------------

    @property
    def _closed(self) -> bool:
        return bool(self._core.closed)

    @property
    def _timer_at(self) -> float:
        """Wheel ms the loop timer is armed for (inf when none)."""
        return float(self._core.timer_at)

    async def start(self) -> None:
        if self._core.running:
            return
        if self._core.closed:
            raise MeetqError("a stopped scheduler cannot be restarted")
        self._loop = asyncio.get_running_loop()
        self._runners = runners = RunnerPool(self._loop, self._ran, "meetq-task")
        self._core.use_runners(self._loop, runners.idle, runners.hand_over)
        self._core.start()

    async def stop(self, *, discard: bool = False, timeout: float | None = None) -> list[Task]:
        """Stops accepting tasks and shuts down gracefully.

        Ready and running tasks are finished (or, with `discard=True` or once `timeout`
        passes, cancelled). Failures no longer retry. Tasks still waiting for their delay or
        retry are dropped as CANCELLED and returned. Thread runs that timed out or were
        cancelled are waited for too: a thread cannot be interrupted.
        """
        core = self._core
        if core.closed:
            return []
        core.close()
        dropped = [t for t in core.entries() if isinstance(t, Task) and t._where == DELAYED]
        for task in dropped:
            core.unqueue(task)
            core.finish(task, CANCELLED, "dropped by stop()")
        if dropped:
            log.warning("stop() dropped %d delayed task(s)", len(dropped))
        if not core.running:
            self._cancel_all_waiting()
        else:
            if discard:
                self._cancel_all_waiting()
                self._cancel_running()
            if not core.is_idle():
                self._idle = self._loop.create_future()  # type: ignore[union-attr]
                core.watch_idle = True
                try:
                    await asyncio.wait_for(asyncio.shield(self._idle), timeout)
                except TimeoutError:
                    self._cancel_all_waiting()
                    self._cancel_running()
                    if not core.is_idle():
                        await self._idle
            core.halt()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        if self._runners is not None:
            await self._runners.close()
        return dropped

    async def __aenter__(self) -> TaskScheduler:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _cancel_all_waiting(self) -> None:
        core = self._core
        waiting = [
            t for t in core.entries() if isinstance(t, Task) and t._where in (READY, OVERDUE)
        ]
        for task in waiting:
            core.unqueue(task)
            core.finish(task, CANCELLED, "cancelled by stop()")
        core.clear_waiting()

    def _cancel_running(self) -> None:
        for task in self._core.entries():
            if isinstance(task, Task) and task._where == RUNNING and task._why == NO_REASON:
                task._why = BY_STOP
                if task._future is not None:
                    task._future.cancel()

    # -- running (called back by the core) --------------------------------------------

    def _kick(self) -> None:
        self._loop.call_soon(self._core.pump)  # type: ignore[union-attr]

    def _start_async(self, task: Task, result: Any) -> None:
        if type(result) is _Coroutine:
            # The first step runs now, inside an idle runner task (the pump runs in a loop
            # callback, where there is no task at all); a handler that never suspends
            # finishes here with no timeout timer. One that suspends holds that runner,
            # which stands for the run (cancel, timeout) until `_ran`.
            try:
                runner, value = self._runners.first_step(result, task)  # type: ignore[union-attr]
            except (Exception, asyncio.CancelledError) as exc:
                self._failed_attempt(task, exc)  # a handler's own CancelledError fails it
                return
            if runner is None:
                if task._why == BY_CANCEL:
                    self._core.finish(task, CANCELLED, "cancelled")
                else:
                    task.result = value
                    self._core.finish(task, COMPLETED, None)
            else:
                self._core.track(task, runner)
        else:
            self._track(task, asyncio.ensure_future(result))

    def _start_thread(self, task: Task) -> None:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="meetq-task")
        run = self._executor.submit(task.handler, task)
        self._threads[task.id] = run
        self._track(task, asyncio.wrap_future(run, loop=self._loop))

    def _track(self, task: Task, fut: asyncio.Future[Any]) -> None:
        self._core.track(task, fut)
        fut.add_done_callback(partial(self._on_done, task))

    def _on_done(self, task: Task, fut: asyncio.Future[Any]) -> None:
        why = task._why
        if fut.cancelled() and task.in_thread and why != NO_REASON:
            # Timed out or cancelled while its thread runs on: the outcome stands now, the
            # worker stays taken until the thread returns (a retry never overlaps it).
            self._record(task, why, fut)
            return
        self._core.settle(task)
        if task.in_thread:
            self._threads.pop(task.id, None)
        self._record(task, why, fut)
        self._core.after_settle()

    def _ran(self, task: Task, cancelled: bool, error: BaseException | None, result: Any) -> None:
        """A runner's run (one that suspended) ended: called inside that runner's task."""
        why = self._core.settle(task)
        self._conclude(task, why, cancelled, error, result)
        self._core.after_settle()

    def _record(self, task: Task, why: int, fut: asyncio.Future[Any]) -> None:
        thread_running = fut.cancelled() and task.in_thread and why != NO_REASON
        if why == BY_TIMEOUT and thread_running and self._will_retry(task):
            self._thread_finally(task, fut, retry=True)
            return
        if why != NO_REASON or fut.cancelled():
            self._conclude(task, why, fut.cancelled(), None, None)
        else:
            error = fut.exception()
            self._conclude(task, why, False, error, None if error is not None else fut.result())
        if thread_running:
            self._thread_finally(task, fut, retry=False)

    def _conclude(
        self, task: Task, why: int, cancelled: bool, error: BaseException | None, result: Any
    ) -> None:
        if why == BY_TIMEOUT:
            self._failed_attempt(task, None)
        elif why != NO_REASON:
            self._core.finish(task, CANCELLED, "stopped" if why == BY_STOP else "cancelled")
        elif cancelled:
            # CancelledError raised by the handler itself: a failure, not a cancellation.
            self._failed_attempt(task, asyncio.CancelledError())
        elif error is not None:
            self._failed_attempt(task, error)
        else:
            task.result = result
            self._core.finish(task, COMPLETED, None)

    def _thread_finally(self, task: Task, fut: asyncio.Future[Any], *, retry: bool) -> None:
        """Frees the worker of a thread run once its thread really returns."""
        inner = self._threads.pop(task.id, None)
        loop: asyncio.AbstractEventLoop = self._loop  # type: ignore[assignment]

        def returned() -> None:
            self._core.settle(task)
            if retry:
                self._failed_attempt(task, None)
            self._core.after_settle()

        def on_thread_done(_: Any) -> None:
            if not loop.is_closed():
                loop.call_soon_threadsafe(returned)

        if inner is None:
            returned()
        else:
            inner.add_done_callback(on_thread_done)

    def _will_retry(self, task: Task) -> bool:
        return task.retry_count < task.max_retries and not self._core.closed

    def _failed_attempt(self, task: Task, exc: BaseException | None) -> None:
        """`exc` None means the attempt timed out."""
        if exc is None:
            error = f"handler timed out after {task.timeout}s"
        elif isinstance(exc, asyncio.CancelledError):
            error = "handler was cancelled"  # its own: a failure, as the runner reports it
        else:
            error = describe(exc)
        if self._will_retry(task):
            task.retry_count += 1
            base = min(task.retry_backoff * 2 ** (task.retry_count - 1), self.max_backoff)
            backoff = base / 2 + random.random() * base / 2  # "equal jitter"
            log.info(
                "task %s attempt %d failed (%s); retry in %.3fs",
                task.id,
                task.retry_count,
                error,
                backoff,
            )
            self._core.retry(task, backoff)
            return
        status = FAILED if exc is not None else TIMEOUT
        log.warning("task %s (%s) %s: %s", task.id, task.type, _STATUSES[status].value, error)
        self._core.finish(task, status, error)

    def _on_finished(self, task: Task) -> None:
        waiters = task._waiters
        if waiters:
            task._waiters = None
            result = _result(task)
            for fut in waiters:
                if not fut.done():
                    fut.set_result(result)
        if self._idle is not None:
            self._check_idle()

    # -- the one loop timer -----------------------------------------------------------

    def _arm(self, deadline_ms: int) -> None:
        """The core wants the loop timer to fire by `deadline_ms` (earlier than before)."""
        if self._timer is not None:
            self._timer.cancel()
        # At least one tick: uvloop rounds to whole ms on a cached clock, so a shorter delay
        # would become 0 and the loop would spin until the deadline instead of sleeping.
        delay = max(deadline_ms / 1000.0 - time.monotonic(), 0.001)
        self._timer = self._loop.call_later(delay, self._on_timer)  # type: ignore[union-attr]

    def _on_timer(self) -> None:
        self._timer = None
        self._core.on_timer()

    def _check_idle(self) -> None:
        idle = self._idle
        if idle is not None and self._core.is_idle():
            self._idle = None
            self._core.watch_idle = False
            if not idle.done():
                idle.set_result(None)
