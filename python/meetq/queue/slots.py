"""`Slots`: where the queue runs the messages it fetched, through the one handler runner
(`meetq._core.runner`, whose rule the README states).

`deliver` decodes a dequeue reply and runs sync handlers inline, in the fetcher's turn,
for up to `INLINE_BUDGET` seconds (no task: the fastest path), so the fetcher soon reads
its next reply, whose leases the renewer cannot know before. Everything else waits in one
local FIFO per priority (highest first, so a CRITICAL message fetched behind a prefetched
backlog still starts next) for `workers` worker coroutines; an async handler's first step
runs eagerly there, and `asyncio.timeout` covers the rest. `workers` bounds concurrent
async/thread handlers. Undecodable entries and unknown types go to the DLQ at once.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Coroutine
from types import CoroutineType
from typing import Any

from meetq._core.runner import SYNC, HandlerRunner, HandlerSpec, Outcome
from meetq.errors import MalformedMessageError, MessageTooLargeError
from meetq.queue.leases import Leases
from meetq.queue.message import Codec, Message
from meetq.queue.outcomes import Outcomes

INLINE_BUDGET = 0.02
"""Seconds of handler work between two chances for the fetcher to run."""

Pending = HandlerSpec | Coroutine[Any, Any, Outcome]
"""A queued run: the handler to start, or the rest of a run that already started."""


class Slots:
    """The local handler slots of one queue."""

    def __init__(
        self,
        handlers: dict[str, HandlerSpec],
        runner: HandlerRunner,
        codec: Codec,
        leases: Leases,
        outcomes: Outcomes,
    ) -> None:
        self.handlers = handlers
        self.runner = runner
        self.codec = codec
        self.leases = leases
        self.outcomes = outcomes
        self.stopping = False
        self.buffers: tuple[deque[tuple[Message, str, Pending]], ...] = tuple(
            deque() for _ in range(4)
        )
        self._work_fut: asyncio.Future[None] | None = None

    @property
    def queued(self) -> int:
        """Messages fetched and not started yet."""
        return sum(len(b) for b in self.buffers)

    def wake(self) -> None:
        fut = self._work_fut
        if fut is not None and not fut.done():
            fut.set_result(None)

    def take_unstarted(self) -> list[tuple[str, str]]:
        """Empties the buffers (stop): the (id, token) pairs to hand back. They leave the
        lease table too."""
        out = []
        held = self.leases.held
        for b in self.buffers:
            for msg, token, pending in b:
                if not isinstance(pending, HandlerSpec):
                    pending.close()  # a run that began inline; its lease goes back
                out.append((msg.id, token))
                held.pop(msg.id, None)
            b.clear()
        self.wake()
        return out

    def deliver(self, reply: list[Any]) -> None:
        """Takes a dequeue reply; everything is only queued once stop() has begun."""
        held = self.leases.held
        handlers = self.handlers
        decode = self.codec.decode
        buffers = self.buffers
        fail = self.outcomes.fail
        ok = self.outcomes.ok
        call = self.runner.call
        inline = not self.stopping and not any(buffers)
        deadline = time.monotonic() + INLINE_BUDGET
        queued = False
        for i in range(3, len(reply), 5):
            mid = reply[i].decode()
            token = reply[i + 1].decode()
            held[mid] = token
            try:
                msg = decode(reply[i + 4])
            except (MalformedMessageError, MessageTooLargeError) as exc:
                fail(mid, token, None, f"malformed message: {exc}", dead=True)
                continue
            msg.id = mid
            msg.deliveries = reply[i + 2]
            msg.retry_count = reply[i + 3]
            spec = handlers.get(msg.type)
            if spec is None:
                fail(mid, token, msg, f"no handler for message type {msg.type!r}", dead=True)
            elif spec.kind == SYNC and inline and time.monotonic() < deadline:
                result = call(spec, msg, msg.timeout)
                kind = result.__class__
                if kind is Outcome:
                    self.settle(msg, token, result)
                elif kind is CoroutineType:
                    self.hand_over(msg, token, result)
                else:
                    ok(msg, token, result)
            else:
                buffers[3 - msg.priority].append((msg, token, spec))
                queued = True
        if queued:
            self.wake()

    def hand_over(self, msg: Message, token: str, rest: Coroutine[Any, Any, Outcome]) -> None:
        """A sync-looking handler returned a coroutine (a partial, a __call__ of an async
        function): a worker finishes the run it started."""
        self.buffers[3 - msg.priority].append((msg, token, rest))
        self.wake()

    def settle(self, msg: Message, token: str, outcome: Outcome) -> None:
        if outcome.ok:
            self.outcomes.ok(msg, token, outcome.result)
        else:
            self.outcomes.fail(msg.id, token, msg, outcome.error or outcome.status)

    async def worker(self) -> None:
        """One handler slot: runs queued async/thread handlers one after another. A handler
        that finishes without suspending costs no event-loop round."""
        loop = asyncio.get_running_loop()
        buffers = self.buffers
        start = self.runner.start
        turn_ends = time.monotonic() + INLINE_BUDGET
        while not self.stopping:
            if time.monotonic() > turn_ends:
                # handlers that never suspend would otherwise keep the loop (and the
                # fetcher) waiting for the whole backlog
                await asyncio.sleep(0)
                turn_ends = time.monotonic() + INLINE_BUDGET
            for buffer in buffers:
                if buffer:
                    msg, token, pending = buffer.popleft()
                    break
            else:
                fut = self._work_fut
                if fut is None or fut.done():
                    fut = self._work_fut = loop.create_future()
                await fut
                turn_ends = time.monotonic() + INLINE_BUDGET
                continue
            step = start(pending, msg, msg.timeout) if isinstance(pending, HandlerSpec) else pending
            # a cancellation of this task (stop() past its grace) propagates: the lease is
            # released, not failed
            outcome = step if isinstance(step, Outcome) else await step
            self.settle(msg, token, outcome)
            if outcome.straggler is not None:
                # a timed-out thread still runs: this slot stays taken until it returns
                await outcome.settled()


__all__ = ["INLINE_BUDGET", "Slots"]
