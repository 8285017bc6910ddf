"""In-process event bus on the native ring buffer.

`emit` is the ring's own native method: it builds the `LocalEvent`, pushes it and, only on
the empty -> non-empty edge, wakes the idle consumers, so a burst of events costs one
wake-up. Each of `workers` worker tasks is a consumer: it calls the ring's native
`dispatch`, which pops events one at a time and runs their sync handlers inline (not
timed). An event with one async handler has that handler's first step taken by `dispatch`
too, in the worker's task: a handler that never suspends costs no Python frame of ours;
one that suspends stops the dispatch and the worker resumes it (`HandlerRunner.
resume_here`), its rest under `handler_timeout`. Events with several async or `in_thread`
handlers are run by the worker through `meetq._core.runner`. So an async handler's whole
run is inside one worker's task that runs nothing else meanwhile (an `asyncio.timeout()` or
`current_task()` in it is the task running it), with no task made per run; an `in_thread`
handler holds its worker until the thread returns. While every worker has such
an event, nothing pops, so the ring's bound applies back-pressure. The runner's rule, with
the sync hot path native.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from meetq._core.eager import ASYNC, SYNC, THREAD, handler_kind
from meetq._core.runner import HandlerRunner, HandlerSpec, describe
from meetq._native import LocalEvent, RingBuffer
from meetq.errors import QueueFullError
from meetq.priority import Priority

log = logging.getLogger("meetq.local.bus")

Handler = Callable[[Any], Any]


class LocalEventBus:
    """Bounded, non-blocking event bus for one process.

    `emit()` never blocks and returns False (counting a drop) when `buffer_size` events are
    already waiting; `emit_wait()` waits for room instead.
    """

    _lanes = 1
    # The native structures in use; class attributes so a benchmark can pit the pure twins
    # against the native cores in one process.
    _Ring: Any = RingBuffer

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
        self._ring = self._Ring(buffer_size, self._lanes)
        self.emit: Callable[..., bool] = self._ring.emit
        """emit(event_type, payload=None, source="") -> bool; never blocks, any thread."""
        self._handlers: dict[str, list[tuple[Handler, int]]] = {}
        self._table: dict[str, tuple[tuple[Any, ...], ...]] = {}
        self._processed = 0
        self._failed = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._worker_tasks: list[asyncio.Task[None]] = []
        self._idle: asyncio.Future[None] | None = None
        self._room: asyncio.Future[None] | None = None
        self._runner = HandlerRunner(workers, thread_name="meetq-bus")
        self._stopping = False

    # -- registration -----------------------------------------------------------------

    def on(self, event_type: str, handler: Handler, *, in_thread: bool = False) -> None:
        """Adds a handler for `event_type`; every handler of a type runs for each event."""
        kind = handler_kind(handler, in_thread)
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
        # Rebuilt whole and swapped in one assignment: a dispatch in progress keeps the
        # table it started with.
        # (sync fns, async fns, thread fns) per type, as `dispatch` takes them
        self._table = {
            t: (
                tuple(fn for fn, k in entries if k == SYNC),
                tuple(fn for fn, k in entries if k == ASYNC),
                tuple(fn for fn, k in entries if k == THREAD),
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
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise QueueFullError(
                    f"event {event_type!r}: buffer of {self.buffer_size} still full "
                    f"after {timeout}s"
                )
            if self._room is None or self._room.done():
                self._room = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(remaining):
                    await asyncio.shield(self._room)
            except TimeoutError:
                pass
        return True

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        if self._worker_tasks:
            return
        self._loop = loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._stopping = False
        self._ring.set_waker(self._wake_from_any_thread)
        self._worker_tasks = [
            loop.create_task(self._work(), name=f"meetq-bus-worker-{i}")
            for i in range(self.workers)
        ]

    async def stop(self, *, discard: bool = False, timeout: float | None = None) -> int:
        """Stops after draining what is queued and finishing handlers in progress.

        With `discard=True` the queued events are dropped instead; returns how many.
        Handlers still running after `timeout` seconds are cancelled (counted failed).
        """
        workers = self._worker_tasks
        if not workers:
            return 0
        discarded = 0
        if discard:
            while batch := self._ring.drain(self.batch_size):
                discarded += len(batch)
        self._stopping = True
        self._wake()
        _done, pending = await asyncio.wait(workers, timeout=timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        self._worker_tasks = []
        self._ring.set_waker(None)
        self._ring.disarm()
        self._runner.close()
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

    async def _work(self) -> None:
        """One of `workers` tasks, each its own consumer of the ring: the ring's native
        emit -> handler loop runs sync handlers until it meets an event with async or
        thread handlers (a budget of one), whose runs this task then awaits itself."""
        ring = self._ring
        batch_size = self.batch_size
        on_error = self._on_error
        start_async = self._start_async
        since_yield = 0
        while True:
            processed, failed, pending, popped = ring.dispatch(
                batch_size, self._table, on_error, 1, start_async
            )
            if popped:
                self._processed += processed
                self._failed += failed
                if self._room is not None:
                    room, self._room = self._room, None
                    if not room.done():
                        room.set_result(None)
                if pending is not None:
                    for ev, runs in pending:  # one event, by the budget
                        if len(runs) == 1 and runs[0][1].__class__ is tuple:
                            # the common case: one async handler, suspended in its first
                            # step, which dispatch took in this task
                            await self._resume(ev, runs[0][0], *runs[0][1])
                        else:
                            await self._finish(ev, runs)
                        self._processed += 1
                # Let producers and handlers in progress run between batches (a handler
                # that never suspends does not yield: count what ran since the last time).
                since_yield += popped
                if since_yield >= batch_size:
                    since_yield = 0
                    await asyncio.sleep(0)
                continue
            since_yield = 0
            if self._stopping:
                return
            if self._idle is None or self._idle.done():
                self._idle = asyncio.get_running_loop().create_future()
            idle = self._idle
            # Until the next push, if the ring is still empty once armed.
            if ring.arm():
                await idle

    @staticmethod
    def _start_async(_ev: Any, fn: Handler) -> Any:
        """Called by `dispatch` for each async handler of an event with several handlers:
        nothing runs now (the worker that popped it awaits the runs, each in a task of its
        own); the spec marks the run as async."""
        return HandlerSpec(fn, ASYNC)

    async def _resume(self, ev: Any, fn: Handler, coro: Any, first: Any) -> None:
        try:
            outcome = await self._runner.resume_here(coro, first, self.handler_timeout)
        except asyncio.CancelledError:
            self._failed += 1
            raise  # stop() gave up waiting
        if not outcome.ok:
            self._failed += 1
            self._on_error(ev, fn, outcome.error)

    async def _finish(self, ev: Any, runs: list[tuple[Any, Any]]) -> None:
        if len(runs) == 1:
            await self._finish_run(ev, *runs[0])
        else:
            await asyncio.gather(*(self._finish_run(ev, *run) for run in runs))

    async def _finish_run(self, ev: Any, handler: Any, rest: Any) -> None:
        # A thread handler (rest None): the runner runs it; its worker is held until the
        # thread returns, even after a timeout. Else an async handler (a HandlerSpec), its
        # whole run in this worker's task.
        fn = handler
        try:
            if rest is None:
                outcome = await self._runner.run(HandlerSpec(fn, THREAD), ev, self.handler_timeout)
            else:
                outcome = await self._runner.run_here(rest, ev, self.handler_timeout)
        except asyncio.CancelledError:
            self._failed += 1
            raise  # stop() gave up waiting
        if not outcome.ok:
            self._failed += 1
            self._on_error(ev, fn, outcome.error)
        await outcome.settled()

    def _on_error(self, ev: Any, fn: Handler, error: BaseException | str | None) -> None:
        name = getattr(fn, "__qualname__", repr(fn))
        text = describe(error) if isinstance(error, BaseException) else error
        log.warning("handler %s for %r failed: %s", name, ev.type, text)

    # -- stats ------------------------------------------------------------------------

    def get_stats(self) -> dict[str, int]:
        ring = self._ring
        return {
            "total_events": ring.accepted,
            "processed_events": self._processed,
            "failed_events": self._failed,
            "dropped_events": ring.dropped,
            "pending_events": len(ring),
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
