"""Eager handler steps: a handler's first step runs at once, the rest only if it suspends.

`start_eager(coro)` is how every component runs an async handler: a real asyncio Task
whose first step has already run, *inside that task* (Python 3.12+: `eager_start=True`;
3.11 has no such thing, so it is emulated: the task is made, made the current task while
its coroutine takes the first step, and its own first step then replays what that step
yielded). So `asyncio.current_task()`, `asyncio.timeout()`, a `TaskGroup` and context
variables in the first step belong to the handler's task, never to the component's task
that started it (stepping the coroutine in the caller's task bound a handler's
`timeout()` to the bus pump or the queue worker, and outside any task it failed with
"Timeout should be used inside a task"). A handler that finishes without suspending is
finished when `start_eager` returns: its result comes back at once.

`Resume(coro, yielded)` stands for the rest of a coroutine whose first step already ran
(tests and callers that step a coroutine themselves): every future the coroutine waits on
passes straight through to the running task, so cancellation and timeouts reach it where
it waits.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import sys
from collections.abc import Callable, Coroutine, Generator
from typing import Any

_HANDED_OUT = object()

# How a registered handler runs.
SYNC = 0  # a plain function, called inline
ASYNC = 1  # an `async def`, stepped eagerly, resumed with `Resume` if it suspends
THREAD = 2  # a plain function registered with `in_thread=True`, run in an executor


def handler_kind(handler: Callable[..., Any], in_thread: bool) -> int:
    if inspect.iscoroutinefunction(handler):
        return ASYNC
    return THREAD if in_thread else SYNC


class Resume(Coroutine[Any, Any, Any]):
    """The rest of a coroutine whose first step already ran and yielded `first`."""

    __slots__ = ("_coro", "_first")

    def __init__(self, coro: Coroutine[Any, Any, Any], first: Any) -> None:
        self._coro = coro
        self._first = first

    def send(self, value: Any) -> Any:
        first = self._first
        if first is not _HANDED_OUT:  # the task's first step: what the eager step yielded
            self._first = _HANDED_OUT
            return first
        return self._coro.send(value)

    def throw(self, *exc: Any) -> Any:
        self._first = _HANDED_OUT
        return self._coro.throw(*exc)

    def close(self) -> None:
        self._coro.close()

    def __next__(self) -> Any:
        return self.send(None)

    def __iter__(self) -> Resume:
        return self

    def __await__(self) -> Generator[Any, Any, Any]:
        return self


# -- a real task, started eagerly -----------------------------------------------------

_RUNNING = object()
_ENDED = object()


class _Started(Coroutine[Any, Any, Any]):
    """What an emulated eager task runs (3.11): `start_eager` took the first step; the
    task's own first step replays what it yielded, or ends the task quietly with None when
    the coroutine already finished (its result or error went to `start_eager`'s caller)."""

    __slots__ = ("_coro", "_first")

    def __init__(self, coro: Coroutine[Any, Any, Any]) -> None:
        self._coro = coro
        self._first: Any = _ENDED

    def send(self, value: Any) -> Any:
        first = self._first
        if first is _RUNNING:
            return self._coro.send(value)
        if first is _ENDED:
            raise StopIteration(None)
        self._first = _RUNNING
        return first

    def throw(self, *exc: Any) -> Any:
        if self._first is _ENDED:
            raise StopIteration(None)
        self._first = _RUNNING
        return self._coro.throw(*exc)

    def close(self) -> None:
        self._coro.close()

    def __next__(self) -> Any:
        return self.send(None)

    def __iter__(self) -> _Started:
        return self

    def __await__(self) -> Generator[Any, Any, Any]:
        return self


def _first_step(started: _Started) -> tuple[bool, Any]:
    coro = started._coro
    try:
        started._first = coro.send(None)
    except StopIteration as done:
        return True, done.value
    return False, None


if sys.version_info >= (3, 12):

    def start_eager(
        coro: Coroutine[Any, Any, Any], loop: asyncio.AbstractEventLoop | None = None
    ) -> tuple[asyncio.Task[Any] | None, Any]:
        """Runs `coro` in a task of its own, its first step now: (None, result) when it
        finished in that step, (task, None) when it suspended; raises what the first step
        raised (a CancelledError of the coroutine's own included)."""
        loop = loop or asyncio.get_running_loop()
        task: asyncio.Task[Any] = asyncio.Task(coro, loop=loop, eager_start=True)  # type: ignore[call-arg,unused-ignore]
        if task.done():
            return None, task.result()
        return task, None

else:
    # 3.12's eager start, by hand: the current-task registry the C Task steps use
    from asyncio.tasks import (  # type: ignore[attr-defined]
        _current_tasks,
        _enter_task,
        _leave_task,
    )

    def start_eager(
        coro: Coroutine[Any, Any, Any], loop: asyncio.AbstractEventLoop | None = None
    ) -> tuple[asyncio.Task[Any] | None, Any]:
        """Runs `coro` in a task of its own, its first step now: (None, result) when it
        finished in that step, (task, None) when it suspended; raises what the first step
        raised (a CancelledError of the coroutine's own included)."""
        if loop is None:
            loop = asyncio.get_running_loop()
        started = _Started(coro)
        context = contextvars.copy_context()
        task: asyncio.Task[Any] = loop.create_task(started, context=context)
        caller = _current_tasks.get(loop)
        if caller is not None:
            _leave_task(loop, caller)
        _enter_task(loop, task)
        try:
            finished, result = context.run(_first_step, started)
        finally:
            _leave_task(loop, task)
            if caller is not None:
                _enter_task(loop, caller)
        if finished:
            return None, result
        return task, None
