"""In-process event bus on the native ring buffer.

`emit` is the ring's own native method: it builds the `LocalEvent`, pushes it and, only
on the empty -> non-empty edge, wakes the consumers, so a burst of events costs one
wake-up. Consumers drain batches and run the handlers through the native `dispatch` loop;
async handlers and `in_thread=True` handlers are deferred out of that loop and run with
`handler_timeout`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from meetq._native import LocalEvent, RingBuffer, dispatch
from meetq.errors import QueueFullError
from meetq.priority import Priority

log = logging.getLogger("meetq.local_bus")

Handler = Callable[[Any], Any]

_SYNC, _ASYNC, _THREAD = 0, 1, 2


class LocalEventBus:
    """Bounded, non-blocking event bus for one process.

    `emit()` never blocks and returns False (counting a drop) when `buffer_size` events are
    already waiting; `emit_wait()` waits for room instead.
    """

    _lanes = 1

    def __init__(
        self,
        buffer_size: int = 1000,
        workers: int = 4,
        *,
        handler_timeout: float = 10.0,
        batch_size: int = 256,
    ) -> None:
        if buffer_size <= 0 or workers <= 0:
            raise ValueError("buffer_size and workers must be positive")
        self.buffer_size = buffer_size
        self.workers = workers
        self.handler_timeout = handler_timeout
        self.batch_size = batch_size
        self._ring = RingBuffer(buffer_size, self._lanes)
        self.emit: Callable[..., bool] = self._ring.emit
        """emit(event_type, payload=None, source="") -> bool; never blocks, any thread."""
        self._handlers: dict[str, list[tuple[Handler, int]]] = {}
        self._table: dict[str, tuple[tuple[Handler, ...], tuple[tuple[Handler, int], ...]]] = {}
        self._processed = 0
        self._failed = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._slow: deque[Any] = deque()
        self._idle: asyncio.Future[None] | None = None
        self._room: asyncio.Future[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._running = False
        self._stopping = False
        self._discard = False

    # -- registration -----------------------------------------------------------------

    def on(self, event_type: str, handler: Handler, *, in_thread: bool = False) -> None:
        """Adds a handler for `event_type`; every handler of a type runs for each event."""
        if inspect.iscoroutinefunction(handler):
            kind = _ASYNC
        elif in_thread:
            kind = _THREAD
        else:
            kind = _SYNC
        self._handlers.setdefault(event_type, []).append((handler, kind))
        self._rebuild_table()

    def off(self, event_type: str, handler: Handler | None = None) -> None:
        """Removes one handler of `event_type`, or all of them."""
        if handler is None:
            self._handlers.pop(event_type, None)
        else:
            entries = self._handlers.get(event_type, [])
            self._handlers[event_type] = [e for e in entries if e[0] is not handler]
        self._rebuild_table()

    def _rebuild_table(self) -> None:
        # Rebuilt whole on change and swapped in one assignment, so a dispatch running on
        # another worker sees either the old table or the new one, never half of each.
        self._table = {
            t: (
                tuple(fn for fn, kind in entries if kind == _SYNC),
                tuple((fn, kind) for fn, kind in entries if kind != _SYNC),
            )
            for t, entries in self._handlers.items()
            if entries
        }

    # -- emitting ---------------------------------------------------------------------

    async def emit_wait(
        self,
        event_type: str,
        payload: dict[str, Any] | None = None,
        source: str = "",
        timeout: float | None = None,
        *,
        priority: Priority = Priority.NORMAL,
    ) -> bool:
        """Emits, waiting for room while the buffer is full.

        Returns True once queued; raises `QueueFullError` when `timeout` passes first.
        Waiting is not a drop. `priority` picks the lane of a `PriorityLocalEventBus`.
        """
        ring = self._ring
        event = LocalEvent(event_type, payload, source, priority=int(priority))
        deadline = None if timeout is None else time.monotonic() + timeout
        while not ring.try_push(event, int(priority)):
            if deadline is not None and time.monotonic() >= deadline:
                raise QueueFullError(
                    f"event {event_type!r}: buffer of {self.buffer_size} still full "
                    f"after {timeout}s"
                )
            if self._room is None or self._room.done():
                self._room = asyncio.get_running_loop().create_future()
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._room), remaining)
        return True

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        if self._running:
            return
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._stopping = False
        self._discard = False
        self._ring.set_waker(self._wake_from_any_thread)
        self._running = True
        self._tasks = [
            loop.create_task(self._consume(), name=f"meetq-bus-{i}") for i in range(self.workers)
        ]

    async def stop(self, *, discard: bool = False, timeout: float | None = None) -> int:
        """Stops the workers after draining what is queued.

        With `discard=True` the queued events are dropped instead; returns how many.
        Running async handlers are awaited up to `timeout` (then cancelled).
        """
        if not self._running:
            return 0
        discarded = 0
        if discard:
            while batch := self._ring.drain(self.batch_size):
                discarded += len(batch)
            discarded += len(self._slow)
            self._slow.clear()
        self._stopping = True
        self._wake()
        tasks, self._tasks = self._tasks, []
        _done, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        self._ring.set_waker(None)
        self._ring.disarm()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        self._running = False
        return discarded

    async def __aenter__(self) -> LocalEventBus:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- consuming --------------------------------------------------------------------

    def _wake_from_any_thread(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if threading.get_ident() == self._loop_thread:
            loop.call_soon(self._wake)
        else:
            loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        idle, self._idle = self._idle, None
        if idle is not None and not idle.done():
            idle.set_result(None)

    def _make_room(self) -> None:
        room, self._room = self._room, None
        if room is not None and not room.done():
            room.set_result(None)

    async def _consume(self) -> None:
        ring = self._ring
        slow = self._slow
        batch_size = self.batch_size
        on_error = self._on_error
        while True:
            if slow:
                # Events whose async / in-thread handlers are still to run come first, so at
                # most one drained batch ever waits outside the ring.
                await self._run_deferred(slow.popleft())
                continue
            batch = ring.drain(batch_size)
            if batch:
                if self._room is not None:
                    self._make_room()
                processed, failed, deferred = dispatch(batch, self._table, on_error)
                self._processed += processed
                self._failed += failed
                if deferred is not None:
                    slow.extend(deferred)
                    self._wake()  # idle workers help with the deferred handlers
                # Let producers and the other workers run between batches.
                await asyncio.sleep(0)
                continue
            if self._stopping:
                return
            if self._idle is None or self._idle.done():
                self._idle = asyncio.get_running_loop().create_future()
            idle = self._idle
            if ring.arm():
                await idle

    async def _run_deferred(self, ev: Any) -> None:
        deferred = self._table.get(ev.type, ((), ()))[1]
        if len(deferred) == 1:
            fn, kind = deferred[0]
            await self._run_one(ev, fn, kind)
        else:
            await asyncio.gather(*(self._run_one(ev, fn, kind) for fn, kind in deferred))
        self._processed += 1

    async def _run_one(self, ev: Any, fn: Handler, kind: int) -> None:
        try:
            async with asyncio.timeout(self.handler_timeout):
                if kind == _ASYNC:
                    await fn(ev)
                else:
                    await self._run_in_thread(fn, ev)
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the bus itself is being stopped
            self._failed += 1  # the handler cancelled something of its own
            self._on_error(ev, fn, exc)
        except Exception as exc:
            self._failed += 1
            self._on_error(ev, fn, exc)

    def _run_in_thread(self, fn: Handler, ev: Any) -> Awaitable[Any]:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="meetq-bus")
        return asyncio.get_running_loop().run_in_executor(self._executor, fn, ev)

    def _on_error(self, ev: Any, fn: Handler, exc: BaseException) -> None:
        name = getattr(fn, "__qualname__", repr(fn))
        if isinstance(exc, TimeoutError):
            log.warning("handler %s for %r timed out (%ss)", name, ev.type, self.handler_timeout)
        else:
            log.warning("handler %s for %r failed: %r", name, ev.type, exc)

    # -- stats ------------------------------------------------------------------------

    def get_stats(self) -> dict[str, int]:
        ring = self._ring
        return {
            "total_events": ring.accepted,
            "processed_events": self._processed,
            "failed_events": self._failed,
            "dropped_events": ring.dropped,
            "pending_events": len(ring) + len(self._slow),
            "buffer_size": self.buffer_size,
        }


class PriorityLocalEventBus(LocalEventBus):
    """`LocalEventBus` with strict priority: CRITICAL drains before HIGH, and so on."""

    _lanes = 4

    def emit_with_priority(
        self,
        priority: Priority | int,
        event_type: str,
        payload: dict[str, Any] | None = None,
        source: str = "",
    ) -> bool:
        """Like `emit`, into the lane of `priority`; never blocks, any thread."""
        ok: bool = self._ring.emit_with_priority(int(priority), event_type, payload, source)
        return ok
