"""`TaskDispatcher`: routes tasks to service queues, tracks them, and brings results back.

- `dispatch` publishes the task to its route's queue in ONE MULTI (the queue's
  plain-command publish transition; the stored body is the task's status until an
  outcome is recorded, `status.py`); `dispatch_batch`
  sends any number of tasks in that one MULTI, one round trip (on Redis Cluster: one
  MULTI per queue slot, sent at once).
- Results come back over one reply list per queue for this process, read by one blocking
  connection (`replies.ReplyReader`; on a Cluster one per queue slot) and matched to the
  outstanding task by its id.
- Every outstanding task has a deadline on the native timer wheel, with one loop timer
  armed for the earliest; at expiry `task_timeout.lua` ends it TIMEOUT only if no other
  outcome came first, and the local future/callback resolves with what Redis decided.
- Each task resolves exactly once: the entry leaves `_pending` on its first outcome; a
  reply that arrives while its timeout script is in flight waits for the script's answer,
  and a reply for a task already resolved is counted (`late_replies`) and dropped.

Its parts: `outbox` (a loop turn's tasks encoded and published in one MULTI),
`outstanding` (a pending task, and the replies and timeout answers that end it),
`replies` (the reply reader), `deadlines` (the timer wheel and the timeout script),
`queries` (status reads and cancels by task id), `status` (where a task's status lives
and how it is read), `shards` (the links and readers per Cluster slot).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import redis.asyncio

from meetq._redis.keys import QueueKeys
from meetq._redis.links import Endpoint, Link
from meetq._redis.retry import retrying
from meetq.dispatch.deadlines import Deadlines, now_ms, time_out
from meetq.dispatch.outbox import Outbox, PublishKeys, encode_task, publish
from meetq.dispatch.outstanding import (
    Callback,
    PendingTask,
    call_back,
    decode_replies,
    response_of_reply,
    response_of_timeout,
)
from meetq.dispatch.queries import cancel_in_redis, read_task_status
from meetq.dispatch.routes import RouteTable
from meetq.dispatch.shards import ShardLinks, ShardReaders, Slot
from meetq.dispatch.types import (
    ServiceRoute,
    TaskRequest,
    TaskResponse,
    TaskStatus,
    make_task_id,
)
from meetq.errors import DispatcherStoppedError
from meetq.priority import Priority
from meetq.queue.message import DEFAULT_MAX_SIZE, Codec, new_id

log = logging.getLogger("meetq.dispatch")

_QueueKnown = tuple[QueueKeys, str, PublishKeys, Slot]
"""A queue's keys, this process's reply list there, its publish keys, its slot group."""


class TaskDispatcher:
    """Dispatches `TaskRequest`s to service queues; see the module docstring.

    Knobs: `routes` (default: the seed's), `name` (this process's reply-list name, random
    by default), `result_ttl` (reply lists and recorded outcomes), `block_timeout`,
    `retry_budget` (seconds a dispatch retries a lost connection), `stop_grace` (stop()
    waits that long for outstanding tasks before failing their waiters).
    """

    def __init__(
        self,
        redis_or_url: str | redis.asyncio.Redis,
        *,
        routes: list[ServiceRoute] | None = None,
        name: str | None = None,
        result_ttl: float = 3600.0,
        block_timeout: float = 2.0,
        retry_budget: float = 10.0,
        stop_grace: float = 5.0,
        max_message_size: int = DEFAULT_MAX_SIZE,
    ) -> None:
        self.endpoint = Endpoint(redis_or_url)
        self._client = self.endpoint.client
        self.name = name or f"d{new_id()}"
        QueueKeys("x").reply(self.name)  # validates the name
        self.routes = RouteTable(routes)
        self.result_ttl = result_ttl
        self.block_timeout = block_timeout
        self.retry_budget = retry_budget
        self.stop_grace = stop_grace
        self.codec = Codec("json", max_message_size)
        # one command link and one reply reader per slot group (one of each on a single
        # server, one per queue slot on a Cluster: see dispatch/shards.py)
        self._links = ShardLinks(self.endpoint, 5.0)
        self._reader = ShardReaders(self._links, self._on_replies, block_timeout)
        self._pending: dict[str, PendingTask] = {}
        self._keys_of: dict[str, _QueueKnown] = {}
        self._outboxes: dict[Slot, Outbox] = {}
        self.publishes = 0
        """MULTIs sent (a benchmark reads it)."""
        self._deadlines = Deadlines(self._on_expired)
        self._tasks: set[asyncio.Future[Any]] = set()
        self._idle: asyncio.Event | None = None
        self._clock_offset = 0.0  # Redis server time - local time.time(), seconds
        self._started = False
        self.total_dispatched = 0
        self.total_completed = 0
        self.total_failed = 0
        self.total_timeout = 0
        self.total_cancelled = 0
        self.late_replies = 0

    # ------------------------------------------------------------------ routes

    def register_route(self, route: ServiceRoute) -> None:
        self.routes.register(route)

    def remove_route(self, service_name: str) -> bool:
        return self.routes.remove(service_name)

    def get_routes(self) -> list[ServiceRoute]:
        return self.routes.routes()

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        if self._started:
            return
        loop = asyncio.get_running_loop()
        self._idle = asyncio.Event()
        self._idle.set()
        await self._sync_clock()
        self._started = True
        self._reader.start()
        self._deadlines.start(loop)

    async def stop(self) -> None:
        """Waits up to `stop_grace` for outstanding tasks; their remaining waiters get
        `DispatcherStoppedError` (the tasks themselves go on in Redis and end there)."""
        if not self._started:
            await self._close_links()
            return
        if self._pending and self._idle is not None:
            try:
                async with asyncio.timeout(self.stop_grace):
                    await self._idle.wait()
            except TimeoutError:
                pass
        self._started = False
        self._deadlines.stop()
        for tid, entry in list(self._pending.items()):
            del self._pending[tid]
            self._deadlines.cancel(entry.handle)
            if entry.future is not None and not entry.future.done():
                entry.future.set_exception(
                    DispatcherStoppedError(f"dispatcher stopped before task {tid} ended")
                )
        await self._reader.stop()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=self.stop_grace)
        await self._close_links()

    async def _close_links(self) -> None:
        await self._links.close()
        await self._reader.close()
        await self.endpoint.close()

    async def __aenter__(self) -> TaskDispatcher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _sync_clock(self) -> None:
        """Deadlines travel in Redis server time: measure its offset from ours once."""
        t0 = time.time()
        sec, usec = await self._retrying(lambda: self._links.keyless.execute("TIME"))
        t1 = time.time()
        self._clock_offset = int(sec) + int(usec) / 1e6 - (t0 + t1) / 2

    # ------------------------------------------------------------------ dispatching

    async def dispatch(self, request: TaskRequest) -> TaskResponse:
        """Publishes the task; returns TaskResponse(status=PENDING). Raises NoRouteError."""
        return (await self._dispatch([request], None, None))[0]

    async def dispatch_async(self, request: TaskRequest, callback: Callback) -> TaskResponse:
        """Like dispatch; `callback(response)` (sync or async) runs once, on the outcome."""
        return (await self._dispatch([request], None, callback))[0]

    async def dispatch_and_wait(self, request: TaskRequest) -> TaskResponse:
        """Dispatches and waits for the final TaskResponse (result, error or TIMEOUT)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[TaskResponse] = loop.create_future()
        await self._dispatch([request], fut, None)
        return await fut

    def submit(
        self,
        request: TaskRequest,
        callback: Callback,
        on_failed: Callable[[BaseException], None],
        on_published: Callable[[], None] | None = None,
    ) -> str:
        """Stages the task without waiting for its write and returns its id: for callers
        that start many tasks per loop turn from protocol callbacks (the gateway), where
        a Task per call would cost more than the dispatch. `callback(response)` runs once
        on the outcome; if the write fails, `on_failed(exc)` runs instead, and
        `on_published()` once the task's MULTI is written (the gateway's `accepted`).
        Raises what dispatch raises (NoRouteError, ...) at once, staging nothing."""
        self._stage([request], None, callback, on_failed, on_published)
        return request.id

    async def dispatch_batch(
        self, requests: Sequence[TaskRequest], callback: Callback | None = None
    ) -> list[TaskResponse]:
        """Dispatches all of `requests` in one MULTI (one round trip); every route is
        checked before anything is sent, so a NoRouteError publishes nothing."""
        return await self._dispatch(list(requests), None, callback)

    async def _dispatch(
        self,
        requests: list[TaskRequest],
        future: asyncio.Future[TaskResponse] | None,
        callback: Callback | None,
    ) -> list[TaskResponse]:
        """Stages the tasks into the outbox and waits for its MULTI (one per Cluster slot
        group the call touches, all sent at once)."""
        boxes = self._stage(requests, future, callback, None)
        if len(boxes) == 1:
            await boxes[0].done  # shared by the turn's calls; it refuses cancellation
        else:
            await asyncio.gather(*(b.done for b in boxes))
        return [TaskResponse(r.id, TaskStatus.PENDING) for r in requests]

    def _stage(
        self,
        requests: list[TaskRequest],
        future: asyncio.Future[TaskResponse] | None,
        callback: Callback | None,
        on_failed: Callable[[BaseException], None] | None,
        on_published: Callable[[], None] | None = None,
    ) -> list[Outbox]:
        """Stages the tasks into this loop turn's outbox. Every check (route, timeout,
        encoding) happens before anything is staged, so a refused call stages nothing;
        calls made in one loop turn share one MULTI (one round trip)."""
        if not self._started:
            raise DispatcherStoppedError("dispatcher is not started")
        now = time.time()
        server_now = now + self._clock_offset
        if len(requests) == 1:  # one call, one task (the gateway's): no lists of them
            req = requests[0]
            staged = self._encode(req, self._queue_of(req), now, server_now)
            box = self._box(staged[0])
            self._register(box, req, staged, now, future, callback, on_failed, on_published)
            self._deadlines.arm()
            return [box]
        queues = [self._queue_of(r) for r in requests]
        encoded = [
            self._encode(req, queue, now, server_now)
            for req, queue in zip(requests, queues, strict=True)
        ]
        boxes: list[Outbox] = []
        for req, staged in zip(requests, encoded, strict=True):
            box = self._box(staged[0])
            if box not in boxes:
                boxes.append(box)
            self._register(box, req, staged, now, future, callback, on_failed, on_published)
        self._deadlines.arm()
        return boxes

    def _queue_of(self, req: TaskRequest) -> _QueueKnown:
        """The request's route checked (NoRouteError) and its queue's keys."""
        return self._queue_keys(self.routes.route_for(req.type).queue_name)

    def _encode(
        self, req: TaskRequest, queue: _QueueKnown, now: float, server_now: float
    ) -> tuple[_QueueKnown, bytes]:
        """Names and stamps the request and encodes it; raises on a bad one (nothing
        staged yet)."""
        if req.timeout <= 0:
            raise ValueError("TaskRequest.timeout must be positive")
        deadline_ms = int((server_now + req.timeout) * 1000)
        req.id = make_task_id(new_id(), deadline_ms, queue[0].queue)
        req.created_at = now
        if type(req.priority) is not Priority:
            req.priority = Priority.parse(req.priority)
        return queue, encode_task(req, queue[1], self.name, self.codec, deadline_ms)

    def _box(self, queue: _QueueKnown) -> Outbox:
        """This loop turn's outbox of the queue's slot group (one MULTI per group: a
        single one on a single server); the first of a turn schedules the flush."""
        box = self._outboxes.get(queue[3])
        if box is None:
            loop = asyncio.get_running_loop()
            if not self._outboxes:
                loop.call_soon(self._flush)
            box = self._outboxes[queue[3]] = Outbox(loop)
        return box

    def _register(
        self,
        box: Outbox,
        req: TaskRequest,
        staged: tuple[_QueueKnown, bytes],
        now: float,
        future: asyncio.Future[TaskResponse] | None,
        callback: Callback | None,
        on_failed: Callable[[BaseException], None] | None,
        on_published: Callable[[], None] | None,
    ) -> None:
        queue, body = staged
        box.add(req.id, queue[2], int(req.priority), body)
        if on_published is not None:
            box.published.append(on_published)
        # registered before the write: a reply may be read before the EXEC reply is
        entry = PendingTask(now)
        entry.future = future
        entry.callback = callback
        entry.on_failed = on_failed
        entry.handle = self._deadlines.insert(now_ms() + int(req.timeout * 1000), req.id)
        self._pending[req.id] = entry
        if self._idle is not None:
            self._idle.clear()

    def _queue_keys(self, queue: str) -> _QueueKnown:
        """The keys of `queue`, this process's reply list there, the keys its publish
        writes and their slot group (made once per queue, when the reply reader starts
        reading that list)."""
        known = self._keys_of.get(queue)
        if known is None:
            keys = QueueKeys(queue)
            reply = keys.reply(self.name)
            known = (keys, reply, PublishKeys(keys), self._links.slot_of(queue))
            self._reader.add_key(reply, known[3])  # read from now on (once per queue)
            self._keys_of[queue] = known
        return known

    def _flush(self) -> None:
        boxes, self._outboxes = self._outboxes, {}
        for slot, box in boxes.items():
            task = asyncio.ensure_future(self._send(box, self._links.for_slot(slot)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, box: Outbox, cmd: Link) -> None:
        try:
            await publish(cmd, box, self.retry_budget)
        except BaseException as exc:
            failed = []
            for tid in box.ids:
                dropped = self._pending.pop(tid, None)
                if dropped is not None:
                    self._deadlines.cancel(dropped.handle)
                    if dropped.on_failed is not None:
                        failed.append(dropped.on_failed)
            self._check_idle()
            for on_failed in failed:
                try:
                    on_failed(exc)
                except Exception:
                    log.exception("dispatcher %s: on_failed callback failed", self.name)
            if not box.done.done():
                box.done.set_exception(exc)
            box.done.exception()  # retrieved: no "never retrieved" warning without waiters
            return
        self.total_dispatched += len(box.ids)
        self.publishes += 1
        if not box.done.done():
            box.done.set_result(None)
        for on_published in box.published:
            try:
                on_published()
            except Exception:
                log.exception("dispatcher %s: on_published callback failed", self.name)

    async def _retrying(self, call: Callable[[], Awaitable[Any]]) -> Any:
        return await retrying(call, self.retry_budget, f"dispatcher {self.name}")

    # ------------------------------------------------------------------ outcomes

    def _on_replies(self, raws: list[bytes]) -> None:
        pending = self._pending
        for raw in raws:
            replies = decode_replies(raw)
            if replies is None:
                log.warning("dispatcher %s: undecodable reply %r", self.name, raw[:200])
                continue
            for tid, reply in replies:
                entry = pending.get(tid)
                if entry is None:
                    self.late_replies += 1
                    continue
                if entry.timing_out:
                    continue  # its timeout script is in flight: its answer decides
                self._resolve(tid, response_of_reply(tid, reply))

    def _resolve(self, tid: str, response: TaskResponse) -> None:
        entry = self._pending.pop(tid, None)
        if entry is None:
            return
        if not entry.timing_out:
            self._deadlines.cancel(entry.handle)
        response.duration = max(0.0, time.time() - entry.dispatched_at)
        status = response.status
        if status is TaskStatus.COMPLETED:
            self.total_completed += 1
        elif status is TaskStatus.TIMEOUT:
            self.total_timeout += 1
        elif status is TaskStatus.CANCELLED:
            self.total_cancelled += 1
        else:
            self.total_failed += 1
        fut = entry.future
        if fut is not None and not fut.done():
            fut.set_result(response)
        if entry.callback is not None:
            call_back(entry.callback, response, self._tasks, self.name)
        self._check_idle()

    def _check_idle(self) -> None:
        if not self._pending and self._idle is not None:
            self._idle.set()

    # ------------------------------------------------------------------ deadlines

    def _on_expired(self, tids: list[str]) -> None:
        expired = []
        for tid in tids:
            entry = self._pending.get(tid)
            if entry is not None and not entry.timing_out:
                entry.timing_out = True
                expired.append(tid)
        by_slot: dict[Slot, list[str]] = {}
        for tid in expired:
            by_slot.setdefault(self._links.slot_of_task(tid), []).append(tid)
        for slot, group in by_slot.items():
            task = asyncio.ensure_future(self._time_out(self._links.for_slot(slot), group))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _time_out(self, cmd: Link, tids: list[str]) -> None:
        """The expired tasks (of one slot group) resolve as task_timeout.lua decided; if
        Redis cannot be reached they still end TIMEOUT here, so no waiter hangs."""
        replies = await time_out(cmd, tids, int(self.result_ttl * 1000))
        for tid, reply in zip(tids, replies, strict=True):
            if tid in self._pending:
                self._resolve(tid, response_of_timeout(tid, reply))

    # ------------------------------------------------------------------ queries

    async def get_task_status(self, task_id: str) -> tuple[TaskRequest, TaskStatus]:
        """The request and status of any task dispatched by any process, from Redis.
        A task past its deadline that nothing ended is ended TIMEOUT now (atomically)."""
        return await read_task_status(
            self._client,
            self._links.for_task(task_id),
            self._retrying,
            task_id,
            lambda: (time.time() + self._clock_offset) * 1000,
            self.result_ttl,
        )

    async def cancel_task(self, task_id: str) -> bool:
        """Cancels a task that has not ended: a pending one never runs, a running one is
        cancelled in its worker. True when this call cancelled it; False when it had
        already ended or is unknown."""
        if not await cancel_in_redis(
            self._client, self._links.for_task(task_id), self._retrying, task_id, self.result_ttl
        ):
            return False
        self._resolve(
            task_id, TaskResponse(task_id, TaskStatus.CANCELLED, None, "cancelled", time.time())
        )
        return True

    def get_stats(self) -> dict[str, Any]:
        return {
            "total_dispatched": self.total_dispatched,
            "total_completed": self.total_completed,
            "total_failed": self.total_failed,
            "total_timeout": self.total_timeout,
            "total_cancelled": self.total_cancelled,
            "active_tasks": len(self._pending),
            "late_replies": self.late_replies,
            "reply_rounds": self._reader.rounds,
            "publishes": self.publishes,
        }


__all__ = ["TaskDispatcher"]
