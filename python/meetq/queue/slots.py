"""`Slots`: where the queue runs the messages it fetched, through the one handler runner
(`meetq._core.runner`, whose rule the README states).

`deliver` decodes a dequeue reply and runs sync handlers inline, in the fetcher's turn,
for up to `INLINE_BUDGET` seconds (no task: the fastest path), so the fetcher soon reads
its next reply. Every message of a reply is in the lease table before the first handler
runs, so those behind a long sync handler are renewed or handed back (see `leases`).
Everything else waits in one local FIFO per priority (highest first, so a CRITICAL message
fetched behind a prefetched backlog still starts next) for `workers` worker coroutines; an
async handler's first step runs eagerly there, and `asyncio.timeout` covers the rest.
`workers` bounds concurrent async/thread handlers. A message is started only while its
lease surely holds (`Leases.claim`).

No input stops a worker: undecodable entries, ids that are not UTF-8, unknown types and a
`reply_to` that is not a reply key of this queue go to the DLQ at once with the reason,
and whatever a handler raises (even a BaseException other than KeyboardInterrupt and
SystemExit) fails that run.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Coroutine
from types import CoroutineType
from typing import Any

import orjson

from meetq._core.runner import FAILED, SYNC, TIMEOUT, HandlerRunner, HandlerSpec, Outcome, describe
from meetq._redis.keys import QueueKeys
from meetq.errors import MalformedMessageError, MessageTooLargeError
from meetq.queue.config import QueueConfig
from meetq.queue.leases import BUFFERED, Leases
from meetq.queue.message import Codec, Message
from meetq.queue.outcomes import Outcomes

log = logging.getLogger("meetq.queue.slots")

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
        config: QueueConfig,
        keys: QueueKeys,
    ) -> None:
        self.handlers = handlers
        self.config = config
        self._is_reply = keys.is_reply
        self._replies_ok: set[str] = set()
        """reply_to values already validated (a process sees a few: one per dispatcher)."""
        self.runner = runner
        self.codec = codec
        self.leases = leases
        self.outcomes = outcomes
        self.stopping = False
        self.clock_offset = 0.0
        """Redis server time - local time.time(), seconds (the queue measures it at start):
        `Message.expires_at` is server time."""
        self.buffers: tuple[deque[tuple[Message, str, Pending]], ...] = tuple(
            deque() for _ in range(4)
        )
        self._idle: deque[asyncio.Future[None]] = deque()
        """One future per idle worker: a delivery wakes as many as it queued, not all."""

    @property
    def queued(self) -> int:
        """Messages fetched and not started yet."""
        b0, b1, b2, b3 = self.buffers  # no generator: read once per delivery
        return len(b0) + len(b1) + len(b2) + len(b3)

    def wake(self) -> None:
        """Wakes one idle worker per queued message (every one once stopping): waking all
        of them per delivery cost each idle worker a loop round per message."""
        idle = self._idle
        n = len(idle) if self.stopping else self.queued
        while idle and n > 0:
            fut = idle.pop()  # the most recently idle: its frames are still warm
            if not fut.done():  # a worker cancelled while idle left its future behind
                fut.set_result(None)
                n -= 1

    def take_unstarted(self) -> list[tuple[str, str]]:
        """Empties the buffers (stop): the (id, token) pairs to hand back. They leave the
        lease table too."""
        out = []
        forget = self.leases.forget
        for b in self.buffers:
            for msg, token, pending in b:
                if not isinstance(pending, HandlerSpec):
                    pending.close()  # a run that began inline; its lease goes back
                out.append((msg.id, token))
                forget(msg.id, token)
            b.clear()
        self.wake()
        return out

    def deliver(self, reply: list[Any], granted: float) -> None:
        """Takes a dequeue reply (`granted`: when its dequeue was sent, the earliest its
        leases can have begun); everything is only queued once stop() has begun."""
        leased = self.leases.leased
        got = []
        for i in range(3, len(reply), 5):
            raw_id = reply[i]
            token = reply[i + 1].decode()
            try:
                mid: Any = raw_id.decode()
            except UnicodeDecodeError:
                mid = raw_id  # its raw bytes name it in Redis
            leased(mid, token, granted)
            got.append((mid, token, i))
        inline = not self.stopping and not any(self.buffers)
        deadline = time.monotonic() + INLINE_BUDGET
        queued = False
        for mid, token, i in got:
            try:
                now_inline = inline and time.monotonic() < deadline
                queued |= self._dispatch(mid, token, reply, i, now_inline)
            except Exception as exc:  # a bug of ours must not take the fetcher down either
                log.error("cannot handle %r", mid, exc_info=True)
                self.outcomes.fail(mid, token, None, f"internal error: {describe(exc)}", dead=True)
        if queued:
            self.wake()

    def _dispatch(self, mid: Any, token: str, reply: list[Any], i: int, inline: bool) -> bool:
        """Runs one delivery inline, or queues it (True), or fails it at once."""
        fail = self.outcomes.fail
        if isinstance(mid, bytes):
            fail(mid, token, None, f"id is not valid UTF-8: {mid!r}", dead=True)
            return False
        try:
            msg = self.codec.decode(reply[i + 4][1:])  # the stored body: digit, message
        except (MalformedMessageError, MessageTooLargeError) as exc:
            fail(mid, token, None, f"malformed message: {exc}", dead=True)
            return False
        msg.id = mid
        msg.deliveries = reply[i + 2]
        msg.retry_count = reply[i + 3]
        if msg.reply_to and msg.reply_to not in self._replies_ok and not self._valid_reply(msg):
            # only a reply key of this queue: nothing is written elsewhere
            msg.reply_to = ""
            fail(mid, token, msg, "invalid reply_to", dead=True)
            return False
        if msg.expires_at and time.time() + self.clock_offset >= msg.expires_at:
            # its deadline passed while it waited: dropped unstarted, never run
            self.leases.finished(mid)
            self.outcomes.drop(msg, token, "timeout", "deadline passed before it started")
            return False
        spec = self.handlers.get(msg.type)
        if spec is None:
            fail(mid, token, msg, f"no handler for message type {msg.type!r}", dead=True)
            return False
        if spec.kind == SYNC and inline:
            if self._claim(msg, token):
                self.run_inline(spec, msg, token)
            return False
        self.buffers[3 - msg.priority].append((msg, token, spec))
        return True

    def _valid_reply(self, msg: Message) -> bool:
        if not self._is_reply(msg.reply_to):
            return False
        if len(self._replies_ok) >= 1024:
            self._replies_ok.clear()  # bounded: a stream of distinct names costs a recheck
        self._replies_ok.add(msg.reply_to)
        return True

    def _claim(self, msg: Message, token: str) -> bool:
        """Whether to start `msg` now (its lease surely holds). One whose lease may have run
        out while it waited is handed back: the release acts only while the lease is still
        ours, so no message is started here and elsewhere from one lease."""
        leases = self.leases
        buffered = leases.state.get(msg.id) == BUFFERED
        if leases.claim(msg.id, token, self.config.allowed(msg.timeout)):
            return True
        if buffered:
            self.outcomes.hand_back([(msg.id, token)])
        return False

    def start(self, spec: HandlerSpec, msg: Message) -> Outcome | Coroutine[Any, Any, Outcome]:
        """Starts a run. A message without a timeout of its own runs at most
        `max_handler_time`; its result is encoded here when it has a reply, so a result
        that cannot be encoded fails the run for the waiter and the stats alike."""
        timeout = msg.timeout if msg.timeout > 0 else self.config.max_handler_time
        encode = orjson.dumps if msg.reply_to else None
        try:
            return self.runner.start(spec, msg, timeout, encode)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # whatever a handler raises fails its run
            return Outcome(FAILED, None, describe(exc))

    def run_inline(self, spec: HandlerSpec, msg: Message, token: str) -> None:
        if msg.reply_to:
            step = self.start(spec, msg)
        else:
            # the hottest path (`HandlerRunner.call`): a completed run is its plain result
            try:
                step = self.runner.call(spec, msg, msg.timeout)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:  # whatever a handler raises fails its run
                step = Outcome(FAILED, None, describe(exc))
            kind = step.__class__
            if kind is not Outcome and kind is not CoroutineType:
                self.leases.finished(msg.id)
                self.outcomes.ok(msg, token, None)
                return
        if isinstance(step, Outcome):
            self.settle(msg, token, step)
            return
        # a callable that is async without looking so (partial, __call__): a worker
        # finishes the run it started
        self.buffers[3 - msg.priority].append((msg, token, step))
        self.wake()

    def settle(self, msg: Message, token: str, outcome: Outcome) -> None:
        self.leases.finished(msg.id)
        if outcome.ok:
            self.outcomes.ok(msg, token, outcome.encoded)
        else:
            status = TIMEOUT if outcome.status == TIMEOUT else FAILED
            self.outcomes.fail(msg.id, token, msg, outcome.error or outcome.status, status=status)

    async def worker(self) -> None:
        """One handler slot: runs queued async/thread handlers one after another. A handler
        that finishes without suspending costs no event-loop round."""
        loop = asyncio.get_running_loop()
        buffers = self.buffers
        leases = self.leases
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
                fut = loop.create_future()
                self._idle.append(fut)
                await fut
                turn_ends = time.monotonic() + INLINE_BUDGET
                continue
            if isinstance(pending, HandlerSpec):
                if not self._claim(msg, token):
                    continue  # handed back, or its lease may have run out while it waited
                step = self.start(pending, msg)
            else:
                step = pending
            try:
                # a cancellation of this task (stop() past its grace) propagates: the lease
                # is released, not failed
                outcome = step if isinstance(step, Outcome) else await step
            except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:
                outcome = Outcome(FAILED, None, describe(exc))
            straggler = outcome.straggler
            if straggler is None:
                self.settle(msg, token, outcome)
                continue
            # A timed-out thread still runs: this slot, and the lease (renewed within what
            # the message allows) when a retry follows, stay taken until it returns; the
            # failure that retries is recorded only then, so the retry never overlaps it.
            left = max(0.0, leases.deadline(msg.id) - time.monotonic())
            if msg.retry_count < msg.max_retries:
                await asyncio.wait({straggler}, timeout=left)
                self.settle(msg, token, outcome)
            else:
                self.settle(msg, token, outcome)
                await asyncio.wait({straggler}, timeout=left)


__all__ = ["INLINE_BUDGET", "Slots"]
