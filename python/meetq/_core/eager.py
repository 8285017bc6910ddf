"""Eager handler steps: run the first step of a coroutine inline, await the rest only if
it suspends.

Most handlers in a busy process finish without ever waiting; starting each as an asyncio
Task (or under a timeout, which arms a timer) would cost more than the handler itself.
The components call `coro.send(None)` once; on `StopIteration` the handler is done. When
it yielded instead, `Resume(coro, yielded)` stands for the rest of it: await it, or hand it
to `create_task` (it is a coroutine). Every future the handler waits on passes straight
through to the running task, exactly as if the task had run the handler from the start,
so cancellation and timeouts reach the handler where it waits, even a cancellation that
arrives before the task's first step.
"""

from __future__ import annotations

import inspect
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
