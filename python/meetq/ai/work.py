"""One work_id on a node: its sockets, its input streams, its model runs and replies.

Requests arrive on the SUB (drained in batches). A stream input is collected per
request_id, chunk by chunk, and must arrive with indices 0..n-1 (anything else is error
-25 and drops that request's buffer); the model runs when `finish` is true. Every
problem is answered with the protocol's error object on the request's `zmq_com`:
malformed JSON (-2), a work_id that is not this one (-6), an action other than
inference (-18), too many requests running (-21), empty input (-24), the model raising
(-11). Output goes to `zmq_com` and, when `enoutput` is set, to the output_url PUB. The replies
of a batch of requests are sent together once the batch is drained (one wake-up of
libzmq's I/O thread per batch, not per frame); output of async or threaded models, made
outside a drain, is sent at once.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterable, Iterable, Mapping
from concurrent.futures import Executor
from types import AsyncGeneratorType, CoroutineType
from typing import Any

import orjson
import zmq

from meetq.ai import protocol as p
from meetq.ai import sockfiles
from meetq.ai.models.base import ModelFn
from meetq.ai.reactor import NOBLOCK, Reader, configure, send_frame

log = logging.getLogger(__name__)


class Replier:
    """PUSH sockets to reply URLs, one per URL, connected on first use; never blocks."""

    def __init__(self, ctx: zmq.Context[Any]) -> None:
        self._ctx = ctx
        self._socks: dict[str, zmq.Socket[Any]] = {}

    def send(self, url: str, frame: bytes) -> bool:
        sock = self._socks.get(url)
        if sock is None:
            if not url.startswith(("ipc://", "tcp://", "inproc://")):
                log.warning("reply URL %r is not a ZMQ endpoint; reply dropped", url[:100])
                return False
            sock = configure(self._ctx.socket(zmq.PUSH))
            try:
                sock.connect(url)
            except zmq.ZMQError as exc:
                sock.close(linger=0)
                log.warning("cannot connect reply URL %s: %s", url, exc)
                return False
            self._socks[url] = sock
        try:
            send_frame(sock, frame, NOBLOCK)
        except zmq.Again:
            log.warning("reply queue to %s full (peer gone?); reply dropped", url)
            return False
        return True

    def close(self) -> None:
        for sock in self._socks.values():
            sock.close(linger=0)
        self._socks.clear()


class Work:
    """A set-up work_id: PUB on output_url, SUB on inference_url, the model function."""

    def __init__(
        self,
        ctx: zmq.Context[Any],
        work_id: str,
        setup: Mapping[str, Any],
        fn: ModelFn,
        blocking: bool,
        *,
        reply_url: str,
        output_url: str,
        inference_url: str,
        replier: Replier,
        executor: Executor | None,
        max_tasks: int,
    ) -> None:
        self.work_id = work_id
        self.setup = {k: setup.get(k) for k in ("model", "response_format", "input", "enoutput")}
        self.fn = fn
        self.blocking = blocking
        self.reply_url = reply_url
        self.response_format = str(setup.get("response_format") or "None")
        self.stream_out = p.is_stream(self.response_format)
        self.enoutput = bool(setup.get("enoutput", True))
        self.replier = replier
        self.encoder = p.ReplyEncoder(work_id, self.response_format)
        self.executor = executor
        self.max_tasks = max_tasks
        self.running = 0
        self.streams: dict[str, list[str]] = {}
        self._tasks: set[asyncio.Future[Any]] = set()
        self._loop = asyncio.get_running_loop()
        self._out_path = sockfiles.url_path(output_url)
        sockfiles.claim(self._out_path)
        # XPUB: a PUB to its subscribers, and it tells us whether there are any, so the
        # mirror costs nothing while nobody listens.
        self.pub = configure(ctx.socket(zmq.XPUB))
        self.pub.bind(output_url)
        self.listeners = 0
        self._pub_reader = Reader(self.pub, self._on_subscription)
        sub = configure(ctx.socket(zmq.SUB))
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        try:
            sub.connect(inference_url)
        except zmq.ZMQError:
            sub.close(linger=0)
            self._pub_reader.close()
            raise
        # Replies made while a batch of requests is drained go out together at its end.
        self._draining = False
        self._first = True  # the next request is the first of its batch
        self._out: list[tuple[str, bytes]] = []
        self._reader = Reader(sub, self._on_request, on_drained=self._flush)

    def close(self) -> None:
        self._reader.close()
        for task in self._tasks:
            task.cancel()
        self._pub_reader.close()
        sockfiles.remove(self._out_path)

    def _on_subscription(self, msg: bytes) -> None:
        if msg[:1] == b"\x01":
            self.listeners += 1
        elif msg[:1] == b"\x00":
            self.listeners = max(0, self.listeners - 1)

    # --- input ------------------------------------------------------------------------

    def _error(self, url: str, rid: str, code: int, message: str = "") -> None:
        self._send(url, p.error_frame(rid, self.work_id, code, message))

    def _on_request(self, frame: bytes) -> None:
        """One request of a drained batch. The replies of the batch's first request go
        out at once (a lone request waits for nothing: not for the drain's last, empty
        recv); those of the requests after it wait for the end of the batch."""
        self._draining = True
        self._handle_request(frame)
        if self._first:
            self._first = False
            self._send_out()

    def _handle_request(self, frame: bytes) -> None:
        try:
            msg = orjson.loads(frame)
        except orjson.JSONDecodeError:
            self._error(self.reply_url, "", p.JSON_FORMAT_ERROR)
            return
        if not isinstance(msg, dict):
            self._error(self.reply_url, "", p.JSON_FORMAT_ERROR)
            return
        url = msg.get("zmq_com")
        if not isinstance(url, str) or not url:
            url = self.reply_url
        rid = str(msg.get("request_id", ""))
        if msg.get("work_id") != self.work_id:
            self._error(url, rid, p.UNIT_NOT_FOUND, f"unit does not exist: {msg.get('work_id')}")
            return
        if msg.get("action") != p.INFERENCE:
            self._error(url, rid, p.NO_SUCH_ACTION, f"unit has no such action: {msg.get('action')}")
            return
        data = msg.get("data")
        if p.is_stream(msg.get("object")):
            if not isinstance(data, dict):
                self._error(url, rid, p.INFERENCE_DATA_EMPTY if not data else p.JSON_FORMAT_ERROR)
                return
            text = self._collect(url, rid, data)
            if text is None:
                return
        elif isinstance(data, str):
            text = data
        else:
            self._error(url, rid, p.INFERENCE_DATA_EMPTY if not data else p.JSON_FORMAT_ERROR)
            return
        if not text:
            self._error(url, rid, p.INFERENCE_DATA_EMPTY)
            return
        if self.running >= self.max_tasks:
            self._error(url, rid, p.TASK_FULL, f"task full: {self.running} running")
            return
        self._run(url, rid, text)

    def _collect(self, url: str, rid: str, data: dict[str, Any]) -> str | None:
        """Adds one input chunk; the joined input once `finish`, else None."""
        delta, index, finish = data.get("delta"), data.get("index"), data.get("finish")
        if not isinstance(delta, str) or not isinstance(index, int):
            self.streams.pop(rid, None)
            self._error(url, rid, p.JSON_FORMAT_ERROR, "stream chunk needs delta and index")
            return None
        parts = self.streams.get(rid)
        expected = 0 if parts is None else len(parts)
        if index != expected:
            self.streams.pop(rid, None)
            self._error(url, rid, p.STREAM_INDEX_ERROR, f"index {index}, expected {expected}")
            return None
        if finish:
            if parts is None:
                return delta
            del self.streams[rid]
            parts.append(delta)
            return "".join(parts)
        if parts is None:
            self.streams[rid] = [delta]
        else:
            parts.append(delta)
        return None

    # --- model runs -------------------------------------------------------------------

    def _run(self, url: str, rid: str, text: str) -> None:
        if self.blocking:
            self._track(
                url, rid, self._loop.run_in_executor(self.executor, _collected, self.fn, text)
            )
            return
        try:
            out = self.fn(text)
            if isinstance(out, str):
                self._emit(url, rid, [out], final=True)
                return
            kind = type(out)
            if (
                kind is AsyncGeneratorType
                or kind is CoroutineType
                or inspect.isawaitable(out)
                or isinstance(out, AsyncIterable)
            ):
                self._track(url, rid, self._loop.create_task(_drive(self, url, rid, out)))
                return
            if isinstance(out, Iterable):
                self._emit(url, rid, [str(c) for c in out], final=True)
                return
            raise TypeError(f"model returned {type(out).__name__}, not str or chunks")
        except Exception as exc:
            self._failed(url, rid, exc)

    def _track(self, url: str, rid: str, fut: asyncio.Future[Any]) -> None:
        self.running += 1
        self._tasks.add(fut)

        def done(f: asyncio.Future[Any]) -> None:
            self.running -= 1
            self._tasks.discard(f)
            if f.cancelled():
                return
            exc = f.exception()
            if exc is not None:
                self._failed(url, rid, exc)
            elif self.blocking:
                self._emit(url, rid, f.result(), final=True)

        fut.add_done_callback(done)

    def _failed(self, url: str, rid: str, exc: BaseException) -> None:
        log.info("%s request %s failed: %r", self.work_id, rid, exc)
        self._error(
            url, rid, p.TASK_RUN_FAILED, f"task run failed: {type(exc).__name__}: {exc}"[:500]
        )

    # --- output -----------------------------------------------------------------------

    def _emit(self, url: str, rid: str, chunks: list[str], *, final: bool, start: int = 0) -> int:
        """Sends output chunks; `final` adds the closing frame. Returns the next index."""
        if not self.stream_out:  # non-stream output: one frame holding the whole value
            if final:
                self._send(url, self.encoder.ok(rid, "".join(chunks)))
            return start
        index = start
        rid_json = orjson.dumps(rid)
        encode = self.encoder.chunk_json
        for delta in chunks:
            if delta:
                self._send(url, encode(rid_json, delta, index, False))
                index += 1
        if final:
            self._send(url, encode(rid_json, "", index, True))
        return index

    def _send(self, url: str, frame: bytes) -> None:
        if self._draining:
            self._out.append((url, frame))
            return
        self._send_now(url, frame)

    def _send_now(self, url: str, frame: bytes) -> None:
        self.replier.send(url, frame)
        if self.enoutput and self.listeners:
            try:
                send_frame(self.pub, frame, NOBLOCK)
            except zmq.ZMQError as exc:
                log.debug("output mirror of %s: %s", self.work_id, exc)

    def _flush(self) -> None:
        """End of a drained batch: its replies, in order, back to back."""
        self._draining = False
        self._first = True
        self._send_out()

    def _send_out(self) -> None:
        if self._out:
            out, self._out = self._out, []
            for url, frame in out:
                self._send_now(url, frame)


async def _drive(work: Work, url: str, rid: str, out: Any) -> None:
    """Runs an async model output to the end, streaming its chunks as they come."""
    if type(out) is not AsyncGeneratorType and inspect.isawaitable(out):
        out = await out
    if isinstance(out, str):
        work._emit(url, rid, [out], final=True)
        return
    if isinstance(out, AsyncIterable):
        index = 0
        parts: list[str] = []
        async for piece in out:
            if work.stream_out:
                index = work._emit(url, rid, [str(piece)], final=False, start=index)
            else:
                parts.append(str(piece))
        work._emit(url, rid, parts, final=True, start=index)
        return
    if isinstance(out, Iterable):
        work._emit(url, rid, [str(c) for c in out], final=True)
        return
    raise TypeError(f"model returned {type(out).__name__}, not str or chunks")


def _collected(fn: ModelFn, text: str) -> list[str]:
    """Runs a blocking model in a worker thread and collects its chunks there."""
    out = fn(text)
    if isinstance(out, str):
        return [out]
    if isinstance(out, Iterable):
        return [str(c) for c in out]
    raise TypeError(f"a blocking model must return str or chunks, not {type(out).__name__}")
