"""Eager handler steps: run the first step of a coroutine inline, await the rest only if
it suspends.

Most handlers in a busy process finish without ever waiting; starting each as an asyncio
Task (or under a timeout, which arms a timer) would cost more than the handler itself.
The components call `coro.send(None)` once; on `StopIteration` the handler is done. When
it yielded instead, `Resume(coro, yielded)` is awaited under the caller's timeout: it hands
every future the coroutine waits on straight through to the running task, exactly as if
the task had run the coroutine from the start, so cancellation and timeouts reach it.
"""

from __future__ import annotations

from collections.abc import Coroutine, Generator
from typing import Any


class Resume:
    """Awaits the rest of a coroutine whose first step already ran and yielded `first`."""

    __slots__ = ("_coro", "_first")

    def __init__(self, coro: Coroutine[Any, Any, Any], first: Any) -> None:
        self._coro = coro
        self._first = first

    def __await__(self) -> Generator[Any, Any, Any]:
        coro = self._coro
        fut = self._first
        while True:
            try:
                value = yield fut
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:
                try:
                    fut = coro.throw(exc)
                except StopIteration as finished:
                    return finished.value
            else:
                try:
                    fut = coro.send(value)
                except StopIteration as finished:
                    return finished.value
