"""The client's in-flight state: one `Call` per request_id, one `SetupRecord` per setup,
and `InFlight`, which matches every reply of the client's PULL to its call and fails the
calls whose deadline passed (one loop timer per 10 ms bucket, no task per call)."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass
from typing import Any

import orjson

from meetq.ai import protocol as p
from meetq.ai.errors import ProtocolError, StackFlowError, StackFlowTimeoutError, error_for

log = logging.getLogger(__name__)

BUCKETS_PER_S = 100  # deadline resolution: 10 ms


@dataclass(eq=False)
class SetupRecord:
    """What a caller asked to set up: enough to set it up again after a node restart."""

    handle: str  # the work_id returned to the caller
    unit: str
    request: dict[str, Any]  # the setup envelope's data
    live: str | None = None  # the work_id currently serving it
    resetup: asyncio.Task[None] | None = None


class Call:
    """One request waiting for its reply (or its stream of replies)."""

    __slots__ = ("control", "fut", "parts", "queue", "rid", "stream", "waiter", "work_id")

    def __init__(
        self, fut: asyncio.Future[Any] | None, work_id: str, *, stream: bool, control: bool
    ) -> None:
        self.fut = fut  # resolved with the final value (infer) or the Reply (control calls)
        self.work_id = work_id
        self.stream = stream  # stream(): deltas go to `queue` as they arrive
        self.control = control
        self.rid = ""
        self.parts: list[str] = []
        self.queue: deque[Any] = deque()
        self.waiter: asyncio.Future[None] | None = None

    def push(self, item: Any) -> None:
        self.queue.append(item)
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


def ack_error(ack: bytes, action: str) -> StackFlowError:
    """A node RPC answered something other than the "None" acknowledgement."""
    if ack == p.NOT_ACTION:
        return error_for(p.NO_SUCH_ACTION, f"node has no action {action!r}")
    try:
        reply = p.parse_reply(ack)
    except ProtocolError:
        return ProtocolError(f"unexpected answer to {action}: {ack[:200]!r}")
    return error_for(reply.code, reply.message)


class InFlight:
    """The calls waiting for a reply, keyed by request_id, and their deadlines."""

    def __init__(self) -> None:
        self.calls: dict[str, Call] = {}
        self._buckets: dict[int, tuple[asyncio.TimerHandle, list[str]]] = {}
        self.loop: asyncio.AbstractEventLoop | None = None  # set when the client starts

    def arm(self, rid: str, deadline: float) -> None:
        """Deadlines share one loop timer per 10 ms bucket instead of one per call."""
        key = int(deadline * BUCKETS_PER_S) + 1
        bucket = self._buckets.get(key)
        if bucket is None:
            assert self.loop is not None
            handle = self.loop.call_at(key / BUCKETS_PER_S, self._expire_bucket, key)
            bucket = self._buckets[key] = (handle, [])
        bucket[1].append(rid)

    def _expire_bucket(self, key: int) -> None:
        _, rids = self._buckets.pop(key, (None, []))
        calls = self.calls
        for rid in rids:
            call = calls.get(rid)
            if call is not None:
                self.finish(call, StackFlowTimeoutError(f"{call.work_id}: no reply in time"))

    def on_reply(self, frame: bytes) -> None:
        """One frame of the PULL: a control reply, an error, a delta or a final value."""
        try:
            msg = orjson.loads(frame)
            call = self.calls.get(msg["request_id"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.warning("malformed reply dropped: %r", frame[:200])
            return
        if call is None:
            return  # late reply of a call that timed out or was abandoned
        if call.control:  # node RPC: hand over the whole reply
            try:
                self.finish(call, p.parse_reply(frame))
            except ProtocolError as exc:
                self.finish(call, exc)
            return
        error = msg.get("error")
        if isinstance(error, dict) and error.get("code"):
            self.finish(call, error_for(int(error["code"]), str(error.get("message", ""))))
            return
        data = msg.get("data")
        if isinstance(data, dict) and "finish" in data:
            delta = data.get("delta", "")
            if delta:
                if call.stream:
                    call.push(str(delta))
                else:
                    call.parts.append(str(delta))
            if data["finish"]:
                self.finish(call, "".join(call.parts))
            return
        value = data if isinstance(data, str) else orjson.dumps(data).decode()
        if call.stream:
            call.push(value)
        self.finish(call, value)

    def finish(self, call: Call, result: Any) -> None:
        """Completes a call once: a result, an exception, or None (abandoned)."""
        if self.calls.get(call.rid) is call:
            del self.calls[call.rid]
        if call.stream:  # an exception, or None: the end of the stream
            call.push(result if isinstance(result, BaseException) else None)
        elif call.fut is not None and not call.fut.done():
            if isinstance(result, BaseException):
                call.fut.set_exception(result)
            elif result is not None:
                call.fut.set_result(result)

    def close(self, error: BaseException) -> None:
        """Fails every call still waiting with `error` and drops the deadline timers."""
        for call in list(self.calls.values()):
            self.finish(call, error)
        for handle, _ in self._buckets.values():
            handle.cancel()
        self._buckets.clear()
