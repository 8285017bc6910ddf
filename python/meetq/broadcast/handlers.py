"""Running the handlers of one broadcast message (Pub/Sub) or event (Streams).

The rule is the one every meetq component follows (CONTRACTS.md, section 1):
- a plain `def` runs inline and is not timed: if it returns, it succeeded;
- an `async def` runs in a task of its own under `timeout` (started eagerly on Python
  3.12+); a run past it is cancelled and counts as failed. Not stepped inside the reader
  as `meetq._core.eager` does: a first step runs in the *caller's* task, so an
  `asyncio.timeout()` the handler enters there is bound to the reader's task. redis-py
  does exactly that (`can_read_destructive` enters `timeout(0)` when it takes a pooled
  connection), and it cancelled our Streams reader; in Pub/Sub's `data_received` there
  is no task at all and such a handler fails;
- `in_thread=True` runs in the default executor; a run past `timeout` counts as failed,
  but its slot is held until the thread really returns, so nothing overlaps it;
- a `CancelledError` raised by a handler itself is a failure of that run; only the
  component's own `cancel_all` is a cancellation;
- every failure carries a printable error string.

`run_all` calls `on_done(error)` once every handler of the message has finished (`error` is
the first failure's text, or None), synchronously when none of them suspended.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from meetq._core.eager import ASYNC, SYNC, handler_kind

log = logging.getLogger("meetq.broadcast")

Done = Callable[[str | None], None]


def describe(exc: BaseException) -> str:
    """`Type: text` of an exception, even one whose `__str__` raises."""
    try:
        return f"{type(exc).__name__}: {exc}"
    except Exception:
        return f"<{type(exc).__name__}: unprintable>"


@dataclass(frozen=True, slots=True)
class Registered:
    """A handler and how it runs (`meetq._core.eager` kinds)."""

    fn: Callable[[Any], Any]
    kind: int

    @classmethod
    def of(cls, fn: Callable[[Any], Any], in_thread: bool) -> Registered:
        if not callable(fn):
            raise TypeError(f"handler must be callable, got {type(fn).__name__}")
        return cls(fn, handler_kind(fn, in_thread))


class _Join:
    """The handlers of one message that are still running in tasks."""

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


class HandlerRunner:
    """Runs handlers by the rule above; counts failed runs and the runs still in flight."""

    def __init__(self, timeout: float, name: str) -> None:
        if timeout <= 0:
            raise ValueError("handler timeout must be positive")
        self.timeout = timeout
        self.name = name
        self.failed = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.on_release: Callable[[], None] | None = None
        """Called whenever a suspended run finishes (the owner may resume reading)."""

    @property
    def in_flight(self) -> int:
        return len(self.tasks)

    def _failed(self, fn: Callable[[Any], Any], error: str) -> str:
        self.failed += 1
        log.warning("%s handler %s failed: %s", self.name, getattr(fn, "__name__", fn), error)
        return error

    def run_all(self, handlers: list[Registered], arg: Any, on_done: Done) -> None:
        error: str | None = None
        join: _Join | None = None
        for h in handlers:
            kind = h.kind
            if kind == SYNC:
                try:
                    h.fn(arg)
                except Exception as exc:
                    err = self._failed(h.fn, describe(exc))
                    error = error or err
                continue
            if kind == ASYNC:
                try:
                    coro = h.fn(arg)
                except Exception as exc:
                    err = self._failed(h.fn, describe(exc))
                    error = error or err
                    continue
                job: Any = self._finish_async(h.fn, coro)
            else:
                job = self._finish_thread(h.fn, arg)
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

    def _released(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if self.on_release is not None:
            self.on_release()

    async def _finish_async(
        self, fn: Callable[[Any], Any], coro: Coroutine[Any, Any, Any]
    ) -> str | None:
        try:
            async with asyncio.timeout(self.timeout):
                await coro
        except TimeoutError:
            return self._failed(fn, f"TimeoutError: handler ran past {self.timeout}s")
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # our own cancel_all, not the handler's
            return self._failed(fn, describe(exc))
        except Exception as exc:
            return self._failed(fn, describe(exc))
        return None

    async def _finish_thread(self, fn: Callable[[Any], Any], arg: Any) -> str | None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        future = loop.run_in_executor(None, fn, arg)
        try:
            # the slot is held until the thread returns, even past the timeout
            await asyncio.shield(future)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return self._failed(fn, describe(exc))
        if loop.time() - started > self.timeout:
            return self._failed(fn, f"TimeoutError: handler ran past {self.timeout}s")
        return None

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


def _start(job: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
    """A task for `job`, run up to its first suspension at once where Python can (3.12+)."""
    if sys.version_info >= (3, 12):
        return asyncio.Task(job, loop=asyncio.get_running_loop(), eager_start=True)  # type: ignore[call-arg]
    return asyncio.ensure_future(job)


def _join_callback(join: _Join) -> Callable[[asyncio.Task[Any]], None]:
    def done(task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            join.finish("CancelledError: component stopped")
            return
        exc = task.exception()
        join.finish(describe(exc) if exc is not None else task.result())

    return done
