"""`ClientConnection`: one client's WebSocket connection, the listener picows calls on the
loop: it checks every frame (flood limit, binary, fragmented, oversize, parse) before
handing a request to its `GatewayServer`, and sends and closes (a close waits, bounded,
for the client's close frame). `TokenBucket`: the rate limit of connects (a connection's
own frame bucket is two fields of the connection: one object less per connection).

A whole text frame on an open connection, the request path, takes the first branch of
`on_ws_frame` and one clock read, shared by the frame bucket and the session's last
activity; everything else (control frames, binary, fragments) goes to `_other_frame`.

A request's `accepted` is owed from its staging until it is sent: once its MULTI is
written, the server holds it briefly (`GatewayConfig.accepted_hold`) and sends it then,
unless the final frame comes first; then both go out in one write (one syscall per
request instead of two).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport

from meetq.gateway.auth import Identity
from meetq.gateway.frames import (
    CloseCode,
    ErrorCode,
    FrameError,
    accepted_frame,
    error_frame,
    final_frame,
    parse_request,
    text_frames,
)
from meetq.gateway.sessions import ClientTaskResponse, Session

if TYPE_CHECKING:
    from collections.abc import Callable

    from meetq.gateway.server import GatewayServer

_TEXT = WSMsgType.TEXT
_monotonic = time.monotonic


class TokenBucket:
    """Token bucket: `rate` per second, bursts up to `rate` (at least one)."""

    __slots__ = ("burst", "last", "rate", "tokens")

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.burst = max(1.0, rate)
        self.tokens = self.burst
        self.last = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class ClientConnection(WSListener):
    """One client connection (picows calls these methods on the loop)."""

    __slots__ = (
        "awaiting_pong",
        "closed",
        "dispatch_failed",
        "gw",
        "handle",
        "identity",
        "owed",
        "published",
        "session",
        "tokens",
        "tokens_at",
        "transport",
        "wanted_session",
    )

    def __init__(self, gw: GatewayServer, identity: Identity, wanted_session: str | None) -> None:
        self.gw = gw
        self.identity = identity
        self.wanted_session = wanted_session
        self.session: Session | None = None
        self.transport: WSTransport | None = None
        self.tokens = gw.frame_burst
        self.tokens_at = _monotonic()
        self.handle = -1
        self.awaiting_pong = False
        self.closed = False
        self.owed: dict[str, int] | None = None
        """Request ids (with their count) whose `accepted` is not sent yet."""
        # made once: what the dispatcher calls when this connection's request fails, and
        # when it is published
        self.dispatch_failed: Callable[[str, BaseException], None] = self._dispatch_failed
        self.published: Callable[[str], None] = self._published

    # -- picows callbacks

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        self.gw._opened(self)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.closed = True
        self.gw._closed(self)

    def pause_writing(self) -> None:
        # the send buffer passed max_send_bytes: the client stopped reading
        self.gw.stats["closed_slow_consumer"] += 1
        self.close(CloseCode.SLOW_CONSUMER, "send queue full", abort=True)

    def resume_writing(self) -> None:
        pass

    def _take_token(self, now: float) -> bool:
        """The frame bucket: `max_frames_per_second`, bursts up to that (at least one)."""
        gw = self.gw
        tokens = self.tokens + (now - self.tokens_at) * gw.frame_rate
        if tokens > gw.frame_burst:
            tokens = gw.frame_burst
        self.tokens_at = now
        if tokens < 1.0:
            self.tokens = tokens
            return False
        self.tokens = tokens - 1.0
        return True

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type != _TEXT or not frame.fin or self.closed:
            self._other_frame(transport, frame)
            return
        gw = self.gw
        now = _monotonic()
        if not self._take_token(now):
            gw.stats["closed_flood"] += 1
            self.close(CloseCode.FLOOD, "too many frames per second")
            return
        limit = gw.config.max_frame_size
        if frame.payload_size > limit:
            self._too_large()
            return
        try:
            req = parse_request(frame.get_payload_as_bytes(), limit, gw.config.max_timeout)
        except FrameError as exc:
            gw.stats["bad_frames"] += 1
            self.send(error_frame(exc.code, exc.message, exc.request_id))
            return
        gw._submit(self, req, now)

    def _other_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        """Everything but a whole text frame on an open connection."""
        kind = frame.msg_type
        if kind == WSMsgType.CLOSE:
            if not self.closed:
                self.closed = True
                transport.send_close(frame.get_close_code())
            transport.disconnect()  # the closing handshake is complete
            return
        if self.closed:
            return
        if kind == WSMsgType.PONG:
            self.awaiting_pong = False
            self.gw._schedule_ping(self)
            return
        if kind == WSMsgType.PING:
            return  # picows answers
        gw = self.gw
        if not self._take_token(_monotonic()):
            gw.stats["closed_flood"] += 1
            self.close(CloseCode.FLOOD, "too many frames per second")
            return
        if kind == WSMsgType.BINARY:
            gw.stats["bad_frames"] += 1
            self.send(error_frame(ErrorCode.BINARY_FRAME, "binary frames are not accepted"))
            self.close(CloseCode.UNSUPPORTED_DATA, "binary frames are not accepted")
            return
        gw.stats["bad_frames"] += 1
        self.send(error_frame(ErrorCode.INVALID_FRAME, "fragmented messages are not accepted"))
        self.close(CloseCode.UNSUPPORTED_DATA, "fragmented messages are not accepted")

    def _too_large(self) -> None:
        self.gw.stats["bad_frames"] += 1
        self.send(error_frame(ErrorCode.FRAME_TOO_LARGE, "frame too large"))
        self.close(CloseCode.MESSAGE_TOO_BIG, "frame too large")

    # -- sending

    def send(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or self.closed:
            return
        transport.send(_TEXT, data)

    def send_outcome(self, out: ClientTaskResponse) -> None:
        transport = self.transport
        if transport is None or self.closed:
            return
        rid = out.request_id
        final = final_frame(rid, out.status, out.data, out.error, out.processed_at)
        if self.owed and self._take_owed(rid):
            if not transport.is_close_frame_sent:  # both frames, one write
                transport.underlying_transport.write(text_frames(accepted_frame(rid), final))
            self.gw.stats["accepted_with_final"] += 1
            return
        transport.send(_TEXT, final)

    def owe_accepted(self, request_id: str) -> None:
        owed = self.owed
        if owed is None:
            self.owed = {request_id: 1}
        else:
            owed[request_id] = owed.get(request_id, 0) + 1

    def _take_owed(self, request_id: str) -> bool:
        owed = self.owed
        if not owed:
            return False
        n = owed.get(request_id)
        if n is None:
            return False
        if n == 1:
            del owed[request_id]
        else:
            owed[request_id] = n - 1
        return True

    def send_accepted(self, request_id: str) -> None:
        """The held `accepted`, unless the final frame took it along meanwhile."""
        if self.owed and self._take_owed(request_id):
            self.send(accepted_frame(request_id))

    def _published(self, request_id: str) -> None:
        self.gw._hold_accepted(self, request_id)

    def _dispatch_failed(self, request_id: str, exc: BaseException) -> None:
        self._take_owed(request_id)  # never published: no `accepted`
        self.gw._failed(self, request_id, exc)

    def close(self, code: int, reason: str, abort: bool = False) -> None:
        """Sends the close frame and waits (bounded) for the client's: closing the socket
        at once would reset a client still sending, which then never reads the code."""
        transport = self.transport
        if transport is None or self.closed:
            return
        self.closed = True
        transport.send_close(WSCloseCode(code), reason.encode())
        # a client that stopped reading never answers: abort, a graceful close would wait
        linger = 1.0 if abort else 2.0
        asyncio.get_running_loop().call_later(linger, transport.disconnect, not abort)


__all__ = ["ClientConnection", "TokenBucket"]
