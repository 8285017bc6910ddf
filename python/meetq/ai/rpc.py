"""The two RPC ends of StackFlow: a REP server that answers at once, and a REQ caller
that can never wedge.

REQ is lockstep: after a request whose reply never comes, the socket refuses to send
again. `RpcCaller` therefore runs one call at a time and, when a deadline passes, closes
the socket (LINGER 0, so nothing queued keeps the process alive) and connects a fresh one;
a late reply to the old request dies with the old socket instead of answering the next.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

from meetq.ai import sockfiles
from meetq.ai.errors import ClientClosedError, StackFlowTimeoutError
from meetq.ai.reactor import Reader, configure

log = logging.getLogger(__name__)


class RpcServer:
    """Binds REP at `path`; `handler(frames) -> reply bytes` runs inline for each request."""

    def __init__(
        self, ctx: zmq.Context[Any], path: Path, handler: Callable[[list[bytes]], bytes]
    ) -> None:
        self.path = path
        self.url = sockfiles.ipc_url(path)
        self._handler = handler
        sockfiles.claim(path)
        self._sock = configure(ctx.socket(zmq.REP))
        try:
            self._sock.bind(self.url)
        except zmq.ZMQError:
            self._sock.close(linger=0)
            raise
        self._reader = Reader(self._sock, self._on_request, multipart=True)

    def _on_request(self, frames: list[bytes]) -> None:
        try:
            reply = self._handler(frames)
        except Exception:
            log.exception("rpc handler failed on %s", self.url)
            reply = b"False"
        try:
            self._sock.send(reply, zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # the peer vanished; REP drops the route, moves on
            log.debug("rpc reply on %s not sent: %s", self.url, exc)
        self._reader.after_send()

    def close(self) -> None:
        self._reader.close()
        sockfiles.remove(self.path)


class RpcCaller:
    """A REQ connected to `url`; `call()` sends frames and awaits the one-frame reply."""

    def __init__(self, ctx: zmq.Context[Any], url: str) -> None:
        self.url = url
        self._ctx = ctx
        self._lock = asyncio.Lock()
        self._waiter: asyncio.Future[bytes] | None = None
        self._reader: Reader | None = None
        self._closed = False
        self._connect()

    def _connect(self) -> None:
        sock = configure(self._ctx.socket(zmq.REQ))
        sock.connect(self.url)
        self._reader = Reader(sock, self._on_reply)

    def _on_reply(self, frame: bytes) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(frame)

    def _replace(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if not self._closed:
            self._connect()

    async def call(self, frames: list[bytes], timeout: float) -> bytes:
        """One request; a missed deadline raises StackFlowTimeoutError and resets the socket."""
        deadline = asyncio.get_running_loop().time() + timeout
        try:
            async with asyncio.timeout_at(deadline):
                await self._lock.acquire()
        except TimeoutError:
            raise StackFlowTimeoutError(f"{self.url}: no turn within {timeout:g}s") from None
        try:
            if self._closed or self._reader is None:
                raise ClientClosedError(f"{self.url}: closed")
            waiter: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
            self._waiter = waiter
            reader = self._reader
            try:
                reader.sock.send_multipart(frames, zmq.NOBLOCK)
            except zmq.Again:
                # Nothing connected yet and the pipe is full: treat like a lost reply.
                self._replace()
                raise StackFlowTimeoutError(f"{self.url}: not reachable") from None
            reader.after_send()
            try:
                async with asyncio.timeout_at(deadline):
                    return await waiter
            except TimeoutError:
                self._replace()
                raise StackFlowTimeoutError(
                    f"{self.url}: no reply to {frames[0].decode(errors='replace')} "
                    f"within {timeout:g}s"
                ) from None
        finally:
            self._waiter = None
            self._lock.release()

    def close(self) -> None:
        self._closed = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(ClientClosedError(f"{self.url}: closed"))
        if self._reader is not None:
            self._reader.close()
            self._reader = None
