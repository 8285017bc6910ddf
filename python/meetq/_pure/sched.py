"""Pure-Python twin of the native scheduler core (`rust/src/py_sched.rs`): same API, same
books, same callbacks into the Python shell in `meetq/local/scheduler.py`, in the same
order. The wheel is the pure wheel; the task record is `meetq._pure.task` (re-exported
here, as the native module exports both).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from meetq._pure.task import (
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
    PENDING,
    PROCESSING,
    READY,
    RUNNING,
    TIMEOUT,
    FinishedTask,
    Task,
    _statuses,
    register_task_enums,
)
from meetq._pure.wheel import TimerWheel

__all__ = [
    "BY_CANCEL",
    "BY_STOP",
    "BY_TIMEOUT",
    "CANCELLED",
    "COMPLETED",
    "DELAYED",
    "DONE",
    "FAILED",
    "NEW",
    "NO_REASON",
    "OVERDUE",
    "PENDING",
    "PROCESSING",
    "READY",
    "RUNNING",
    "TIMEOUT",
    "FinishedTask",
    "SchedulerCore",
    "Task",
    "register_task_enums",
]

_PUMP_BATCH = 512
_wall = time.time
_monotonic = time.monotonic


def _ms_ceil(seconds: float) -> int:
    return math.ceil((_monotonic() + seconds) * 1000.0)


def _is_failure(exc: BaseException) -> bool:
    return isinstance(exc, (Exception, asyncio.CancelledError))


def _is_awaitable(obj: Any) -> bool:
    """What the native core checks: a coroutine, or an object whose type has __await__."""
    return hasattr(type(obj), "__await__")


class SchedulerCore:
    """The books and hot paths of `TaskScheduler`; see `rust/src/py_sched.rs`."""

    def __init__(
        self,
        buffer_size: int,
        workers: int,
        max_results: int,
        result_ttl: float,
        prefix: str,
        start_ms: int,
        *,
        arm: Callable[[int], Any],
        kick: Callable[[], Any],
        reject: Callable[[Task, bool], Any],
        finished: Callable[[Task], Any],
        idle: Callable[[], Any],
        start_async: Callable[[Task, Any], Any],
        start_thread: Callable[[Task], Any],
        failed: Callable[[Task, BaseException], Any],
    ) -> None:
        self._wheel = TimerWheel(start_ms)
        self._lanes: tuple[deque[Task], ...] = tuple(deque() for _ in range(4))
        self._lanes_high_first = self._lanes[::-1]
        self._overdue: deque[Task] = deque()
        self._done: deque[FinishedTask] = deque()
        self._ready = self._overdue_count = self._delayed = self._active = 0
        self._total = self._completed = self._failed = self._cancelled = self._retried = 0
        self._next_id = 1
        self._timer_at: float = math.inf
        self.tasks: dict[Any, Task | FinishedTask] = {}
        self._prefix = prefix
        self._buffer_size = buffer_size
        self._workers = workers
        self._max_results = max_results
        self._result_ttl = result_ttl
        self.running = self.closed = self.pump_scheduled = False
        self.watch_idle = False
        self._arm, self._kick, self._reject = arm, kick, reject
        self._finished, self._idle = finished, idle
        self._start_async, self._start_thread, self._failed_cb = start_async, start_thread, failed

    # -- helpers (the native private methods) ------------------------------------------

    def _arm_if_earlier(self, deadline: int | None) -> None:
        if deadline is None or not self.running or deadline >= self._timer_at:
            return
        self._timer_at = deadline
        self._arm(deadline)

    def kick(self) -> None:
        if self.pump_scheduled or not self.running:
            return
        if not (self._ready or self._overdue_count):
            return
        self.pump_scheduled = True
        self._kick()

    def _to_wheel(self, task: Task, deadline: int) -> None:
        task._where = DELAYED
        self._delayed += 1
        task._timer = self._wheel.insert(deadline, task)
        self._arm_if_earlier(deadline)

    def unqueue(self, task: Task) -> None:
        """Takes a waiting task out of the books (it must be finished next)."""
        where = task._where
        if where == READY:
            self._ready -= 1
        elif where == OVERDUE:
            self._overdue_count -= 1
        elif where == DELAYED:
            if task._timer >= 0:
                self._wheel.cancel(task._timer)
                task._timer = -1
            self._delayed -= 1
        task._where = DONE

    def _make_ready(self, task: Task) -> None:
        if self._ready < self._buffer_size:
            task._where = READY
            self._ready += 1
            self._lanes[task._lane].append(task)
        else:
            task._where = OVERDUE
            self._overdue_count += 1
            self._overdue.append(task)

    def _refill(self) -> None:
        overdue = self._overdue
        while self._ready < self._buffer_size and overdue:
            task = overdue.popleft()
            if task._where == OVERDUE:
                self._overdue_count -= 1
                task._where = READY
                self._ready += 1
                self._lanes[task._lane].append(task)

    def finish(self, task: Task, status: int, error: str | None) -> None:
        """Records the end of a task: `status` is an index into TaskStatus."""
        if not 0 <= status <= 5:
            raise ValueError("status index must be 0..5")
        status_obj = task.status = _statuses()[status]
        task._where = DONE
        end = task._ended = _wall()
        record = FinishedTask(task.id, status_obj, error, task._started, end)
        task._error = error
        has_waiters = task._waiters is not None
        tasks = self.tasks
        tasks[record.id] = record  # from now on the table holds the record, not the task
        if status == COMPLETED:
            self._completed += 1
        elif status == CANCELLED:
            self._cancelled += 1
        else:
            self._failed += 1
        done = self._done
        done.append(record)
        ttl = self._result_ttl
        if len(done) > self._max_results or done[0]._ended < end - ttl:
            cutoff = end - ttl
            keep = self._max_results
            if len(done) > keep:
                keep -= keep // 8
            evicted = []
            while done and (len(done) > keep or done[0]._ended < cutoff):
                evicted.append(done.popleft())
            for old in evicted:
                if tasks.get(old.id) is old:  # the id may have been reused by a newer task
                    del tasks[old.id]
        if has_waiters or self.watch_idle:
            self._finished(task)

    def _complete(self, task: Task, result: Any) -> None:
        if task._why == BY_CANCEL:
            self.finish(task, CANCELLED, "cancelled")
        else:
            task.result = result
            self.finish(task, COMPLETED, None)

    def _run(self, task: Task) -> None:
        task._where = RUNNING
        task.status = _statuses()[PROCESSING]
        if not task._started:
            task._started = _wall()
        if task.in_thread:
            self._start_thread(task)
            return
        try:
            result = task.handler(task)
        except BaseException as exc:
            if not _is_failure(exc):
                raise
            self._failed_cb(task, exc)
            return
        if result is not None and _is_awaitable(result):
            self._start_async(task, result)
        else:
            self._complete(task, result)

    # -- the native public methods -----------------------------------------------------

    def submit(self, task: Task) -> Any:
        """Queues `task` and returns its id (see `TaskScheduler.submit`)."""
        p = task.priority
        valid = isinstance(p, int) and 0 <= p <= 3
        if not valid or task._where != NEW or task.handler is None or self.closed:
            self._reject(task, False)
            raise RuntimeError("task rejected")
        task._lane = int(p)
        tasks = self.tasks
        tid = task.id
        if not tid:
            tid = task.id = f"{self._prefix}{self._next_id}"
            self._next_id += 1
        elif (old := tasks.get(tid)) is not None and old._where != DONE:  # a live Task
            raise ValueError(f"task id {tid!r} is already scheduled")
        task.status = _statuses()[PENDING]
        if task.delay > 0 or task.scheduled_at is not None:
            delay = task.delay if task.scheduled_at is None else task.scheduled_at - _wall()
            if delay > 0:
                tasks[tid] = task
                self._total += 1
                self._to_wheel(task, _ms_ceil(delay))
                return tid
        if self._ready >= self._buffer_size:
            self._reject(task, True)
            raise RuntimeError("task rejected")
        self._total += 1
        self._ready += 1
        task._where = READY
        self._lanes[task._lane].append(task)
        tasks[tid] = task
        self.kick()
        return tid

    def cancel(self, task_id: Any) -> bool:
        """Cancels a waiting or running task; see `TaskScheduler.cancel`."""
        task = self.tasks.get(task_id)
        if task is None or task._where == DONE or not isinstance(task, Task):
            return False
        where = task._where
        if where == RUNNING:
            fut = task._future
            if fut is not None and fut.done():
                return False  # finished; its result is being recorded
            if task._why == NO_REASON:
                task._why = BY_CANCEL
                task.status = _statuses()[CANCELLED]
                if fut is not None:
                    fut.cancel()
            return True
        self.unqueue(task)
        self.finish(task, CANCELLED, "cancelled")
        return True

    def clear_waiting(self) -> None:
        for lane in self._lanes:
            lane.clear()
        self._overdue.clear()

    def pump(self) -> None:
        """Starts ready tasks, highest priority first, while workers are free."""
        self.pump_scheduled = False
        if not self.running:
            return
        lanes = self._lanes_high_first
        for _ in range(_PUMP_BATCH):
            if not self._ready or self._active >= self._workers:
                if self.watch_idle:
                    self._idle()
                return
            task = None
            for lane in lanes:
                while lane:
                    task = lane.popleft()
                    if task._where == READY:
                        break
                    task = None  # cancelled while queued
                if task is not None:
                    break
            if task is None:
                raise RuntimeError("ready count out of sync with the lanes")
            self._ready -= 1
            if self._overdue_count:
                self._refill()
            self._run(task)
        self.kick()  # let the loop breathe between batches

    def on_timer(self) -> None:
        """The loop timer fired: due delayed tasks become ready, due timeouts cancel."""
        now = int(_monotonic() * 1000.0)
        self._timer_at = math.inf
        for task in self._wheel.advance(now):
            task._timer = -1
            if task._where == RUNNING:
                fut = task._future
                if fut is not None and task._why == NO_REASON and not fut.done():
                    task._why = BY_TIMEOUT
                    fut.cancel()
            else:
                self._delayed -= 1
                self._make_ready(task)
        self._arm_if_earlier(self._wheel.next_deadline())
        if self._ready and self._active < self._workers:
            self.pump()  # start due tasks now, not one loop iteration later

    def track(self, task: Task, future: Any) -> None:
        """An async or thread run started: count it and arm its timeout."""
        task._future = future
        timeout = task.timeout
        deadline = _ms_ceil(timeout) if timeout else None
        self._active += 1
        if deadline is not None:
            task._timer = self._wheel.insert(deadline, task)
        self._arm_if_earlier(deadline)

    def settle(self, task: Task) -> int:
        """An async or thread run ended: uncount it, drop its timeout; returns `_why`."""
        self._active -= 1
        task._future = None
        if task._timer >= 0:
            self._wheel.cancel(task._timer)
            task._timer = -1
        return task._why

    def after_settle(self) -> None:
        if self._ready and not self.pump_scheduled:
            self.pump()
        elif self.watch_idle:
            self._idle()

    def retry(self, task: Task, backoff: float) -> None:
        task.status = _statuses()[PENDING]
        task._why = NO_REASON
        self._retried += 1
        self._to_wheel(task, _ms_ceil(backoff))

    def lookup(self, task_id: Any) -> Task | FinishedTask | None:
        """The task (or finished task's record) of an id; None when unknown or forgotten."""
        return self.tasks.get(task_id)

    def entries(self) -> list[Task | FinishedTask]:
        """Every task and finished record in the native table's order: the ids this core
        makes (prefix + number) by number, then the others in insertion order."""
        numbered: list[tuple[int, Task | FinishedTask]] = []
        others: list[Task | FinishedTask] = []
        prefix = self._prefix
        for tid, v in self.tasks.items():
            digits = tid[len(prefix) :] if type(tid) is str and tid.startswith(prefix) else ""
            if digits.isascii() and digits.isdigit() and digits[0] != "0" and len(digits) < 20:
                numbered.append((int(digits), v))
            else:
                others.append(v)
        numbered.sort(key=lambda nv: nv[0])
        return [v for _, v in numbered] + others

    def use_runners(self, loop: Any, idle: list[Any], hand_over: Callable[..., None]) -> None:
        """The native core takes async first steps in the shell's runners itself; the pure
        core leaves every first step to the shell's `start_async` (the same behaviour)."""

    def start(self) -> None:
        self.running = True
        self._arm_if_earlier(self._wheel.next_deadline())
        self.kick()

    def halt(self) -> None:
        self.running = False
        self._timer_at = math.inf

    def close(self) -> None:
        self.closed = True

    def is_idle(self) -> bool:
        return not (self._active or self._ready or self._overdue_count)

    def stats(self) -> dict[str, int]:
        return {
            "total_tasks": self._total,
            "completed_tasks": self._completed,
            "failed_tasks": self._failed,
            "cancelled_tasks": self._cancelled,
            "retried_tasks": self._retried,
            "active_tasks": self._active,
            "delayed_tasks": self._delayed,
            "pending_tasks": self._ready + self._overdue_count,
        }

    @property
    def timer_at(self) -> float:
        return self._timer_at

    def ready_order(self) -> list[Task]:
        return [t for lane in self._lanes_high_first for t in lane if t._where == READY]
