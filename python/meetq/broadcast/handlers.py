"""Running every handler of one broadcast message (Pub/Sub) or event (Streams) through the
shared handler runner (`meetq._core.runner`: sync untimed, async under a timeout, threads
that hold their slot until they return, a handler's own CancelledError is a failure).

Sync and async handlers start inline: the runner runs an async handler in a task of its
own, started eagerly, so an `asyncio.timeout()` it enters in its first step is its own
(redis-py enters `timeout(0)` when it takes a pooled connection), never the Streams
reader's, and in Pub/Sub's `data_received`, where there is no task, it still has one. A
run that suspends (and every thread run) finishes in a task tracked here.

`run_all` calls `on_done(error)` once every handler of the message has finished (`error`
is the first failure's text, or None), synchronously when all of them were sync.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from meetq._core.runner import THREAD, HandlerRunner, HandlerSpec, Outcome

log = logging.getLogger("meetq.broadcast")

Done = Callable[[str | None], None]

__all__ = ["Done", "FanOut", "HandlerSpec", "spec_of"]


def spec_of(fn: Callable[[Any], Any], in_thread: bool) -> HandlerSpec:
    if not callable(fn):
        raise TypeError(f"handler must be callable, got {type(fn).__name__}")
    return HandlerSpec.of(fn, in_thread)


class _Join:
    """The handler runs of one message still going in tasks."""

    __slots__ = ("error", "on_done", "remaining")

    def __init__(self) -> None:
        self.remaining = 0
        self.error: str | None = None
        self.on_done: Done | None = None

    def finish(self, error: str | None) -> None:
        if error is not None and self.error is None:
            self.error = error
        self.remaining -= 1
        if self.remaining == 0 and self.on_done is not None:
            self.on_done(self.error)


class FanOut:
    """Runs all handlers of a message; counts failed runs and the runs still in flight."""

    def __init__(self, timeout: float, name: str, threads: int = 4) -> None:
        if timeout <= 0:
            raise ValueError("handler timeout must be positive")
        self.timeout = timeout
        self.name = name
        self.failed = 0
        self.runner = HandlerRunner(threads, thread_name=f"meetq-{name}")
        self.tasks: set[asyncio.Task[Any]] = set()
        self.on_release: Callable[[], None] | None = None
        """Called whenever a run in a task finishes (the owner may resume reading)."""

    @property
    def in_flight(self) -> int:
        return len(self.tasks)

    def _outcome(self, spec: HandlerSpec, outcome: Outcome) -> str | None:
        if outcome.ok:
            return None
        self.failed += 1
        name = getattr(spec.fn, "__name__", spec.fn)
        log.warning("%s handler %s failed: %s", self.name, name, outcome.error)
        return outcome.error or "failed"

    def run_all(self, handlers: list[HandlerSpec], arg: Any, on_done: Done) -> None:
        error: str | None = None
        join: _Join | None = None
        for spec in handlers:
            if spec.kind != THREAD:
                step = self.runner.start(spec, arg, self.timeout)
                if isinstance(step, Outcome):
                    err = self._outcome(spec, step)
                    error = error or err
                    continue
                # it suspended: the rest in a task
                job = self._finish(spec, step)
            else:
                job = self._finish(spec, self.runner.run(spec, arg, self.timeout))
            if join is None:
                join = _Join()
            join.remaining += 1
            task = _start(job)
            self.tasks.add(task)
            task.add_done_callback(self._released)
            task.add_done_callback(_join_callback(join))
        if join is None:
            on_done(error)
        else:
            join.error = error
            join.on_done = on_done

    async def _finish(self, spec: HandlerSpec, run: Coroutine[Any, Any, Outcome]) -> str | None:
        outcome = await run
        await outcome.settled()  # a timed-out thread holds its slot until it returns
        return self._outcome(spec, outcome)

    def _released(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if self.on_release is not None:
            self.on_release()

    async def drain(self, timeout: float) -> int:
        """Waits up to `timeout` for the runs in flight, then cancels the rest; returns how
        many were cancelled."""
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=timeout)
        left = [t for t in self.tasks if not t.done()]
        for task in left:
            task.cancel()
        if left:
            await asyncio.wait(left)
        return len(left)

    def close(self) -> None:
        self.runner.close()


def _start(job: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
    return asyncio.get_running_loop().create_task(job)


def _join_callback(join: _Join) -> Callable[[asyncio.Task[Any]], None]:
    def done(task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            join.finish("CancelledError: component stopped")
            return
        exc = task.exception()
        join.finish(f"{type(exc).__name__}: {exc}" if exc is not None else task.result())

    return done
