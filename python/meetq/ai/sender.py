"""The client's request sender: inference frames built from cached parts, batched sends.

A request frame is a work_id's constant head and middle around the request_id and the
data, cached per (work_id, object), so a request costs a few byte concatenations and one
`orjson.dumps` of its data. The first request of a loop turn is published at once (no
latency added); the ones that follow in the same turn wait in the outbox and go out
together at its end, which wakes libzmq's I/O thread once per batch instead of per frame.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping

import orjson
import zmq

from meetq.ai import protocol as p
from meetq.ai.calls import Call, InFlight, SetupRecord
from meetq.ai.errors import InferencePushError, NodeUnavailableError
from meetq.ai.registry import Slot

DEFAULT_FORMAT = "llm.utf-8.stream"
_LONE_CHUNK_END = b',"index":0,"finish":true}}'  # ends a one-chunk stream request


class RequestSender:
    """Publishes inference requests on their work_id's XPUB, registered in `inflight`."""

    __slots__ = (
        "_by_live",
        "_first",
        "_flush_pending",
        "_inflight",
        "_loop",
        "_new_id",
        "_reply_url",
        "frame_parts",
        "outbox",
    )

    def __init__(
        self,
        inflight: InFlight,
        reply_url: str,
        by_live: Mapping[str, SetupRecord],
        new_id: Callable[[], str],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._inflight = inflight
        self._reply_url = reply_url
        self._by_live = by_live  # live work_id -> its setup (the client's dict, shared)
        self._new_id = new_id
        self._loop = loop
        self.frame_parts: dict[tuple[str, str | None], tuple[bytes, bytes, bool]] = {}
        self.outbox: list[tuple[Slot, bytes, Call]] = []  # requests batched this turn
        self._flush_pending = False
        self._first: Slot | None = None  # the slot the turn's first request went to

    def clear(self) -> None:
        self.outbox.clear()
        self.frame_parts.clear()
        self._first = None

    def publish(
        self, call: Call, slot: Slot, data: str | Iterable[str], obj: str | None, deadline: float
    ) -> None:
        """Registers the call under a new request_id, arms its deadline, publishes it."""
        live = slot.work_id
        parts = self.frame_parts.get((live, obj))  # obj None: the setup's input format
        if parts is None:
            parts = self._parts(live, obj)
        head, mid, stream = parts
        rid = self._new_id()
        call.work_id = live
        call.rid = rid
        inflight = self._inflight
        inflight.calls[rid] = call
        inflight.arm(rid, deadline)
        start = head + rid.encode() + mid
        if isinstance(data, str):
            # One frame; a lone stream chunk is `{"delta":...,"index":0,"finish":true}`.
            body = orjson.dumps(data)
            frames = [start + (b'{"delta":' + body + _LONE_CHUNK_END if stream else body + b"}")]
        elif stream:
            chunks = list(data) or [""]
            last = len(chunks) - 1
            frames = [
                start + orjson.dumps(p.chunk(delta, i, i == last)) + b"}"
                for i, delta in enumerate(chunks)
            ]
        else:
            frames = [start + orjson.dumps("".join(data)) + b"}"]
        if self._flush_pending:
            # More requests in this loop turn: they go out together at its end.
            for frame in frames:
                self.outbox.append((slot, frame, call))
            return
        # The first request of a turn goes out at once (no latency added); the ones
        # that follow in the same turn are batched (one wake-up of libzmq's I/O thread).
        self._flush_pending = True
        self._first = slot
        self._loop.call_soon(self._flush)
        try:
            for frame in frames:
                slot.publish(frame)
        except zmq.Again:
            inflight.finish(call, None)
            raise InferencePushError(f"{live}: request queue towards the node is full") from None
        except zmq.ZMQError as exc:
            inflight.finish(call, None)
            raise NodeUnavailableError(f"{live}: {exc}") from exc

    def _parts(self, live: str, obj: str | None) -> tuple[bytes, bytes, bool]:
        """A work_id's request frame around its request_id and data (`obj` None: the
        input format its setup asked for), and whether that format is streamed. Cached
        per (work_id, obj), except a default not backed by a known setup."""
        fmt = obj
        if fmt is None:
            record = self._by_live.get(live)
            fmt = record.request.get("input", DEFAULT_FORMAT) if record else DEFAULT_FORMAT
        head, mid = p.inference_parts(self._reply_url, live, fmt)
        parts = (head, mid, p.is_stream(fmt))
        if obj is not None or live in self._by_live:
            self.frame_parts[(live, obj)] = parts
        return parts

    def _flush(self) -> None:
        """Sends the requests batched in the last loop turn; a refused one fails its call.
        Then each XPUB sent on is checked for input: a send may take its readable edge,
        and its subscription notices (the node's loss) would wait for the next one."""
        self._flush_pending = False
        first, self._first = self._first, None
        touched = self._send_outbox() if self.outbox else set()
        if first is not None:
            touched.add(first)
        for slot in touched:
            slot.reader.after_send()

    def _send_outbox(self) -> set[Slot]:
        out, self.outbox = self.outbox, []
        calls = self._inflight.calls
        finish = self._inflight.finish
        touched: set[Slot] = set()
        for slot, frame, call in out:
            if calls.get(call.rid) is not call:
                continue  # already failed, timed out or abandoned
            touched.add(slot)
            try:
                slot.publish(frame)
            except zmq.Again:
                finish(call, InferencePushError(f"{slot.work_id}: request queue is full"))
            except zmq.ZMQError as exc:
                finish(call, NodeUnavailableError(f"{slot.work_id}: {exc}"))
        return touched
