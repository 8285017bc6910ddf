"""`SubscriberConnection`: our `RespConnection` switched into Pub/Sub's push mode.

Opening, AUTH, SELECT and TLS are `RespConnection`'s. Once `enter_push_mode` is called,
every reply hiredis parses (`message`, `pmessage`, subscribe confirmations) goes straight
from `data_received` to the owner's sink; there is no request FIFO and no reply timeout
(liveness is the owner's publish-and-echo probe). SUBSCRIBE/PSUBSCRIBE/UNSUBSCRIBE batches
are written with one `transport.write` each, encoded by the shared RESP encoder.

`confirmed()` returns once the server has confirmed every (un)subscription written so far:
Redis answers each channel of a SUBSCRIBE with one confirmation, in order, so counting them
is exact.

Sharded Pub/Sub (Redis Cluster) has one more reply: a `sunsubscribe` nobody asked for,
which Redis sends when the slot of a shard channel leaves this node (a failover demoted
it, or a resharding moved the slot). The connection then no longer receives that
channel, so it is dropped like a lost one and its owner subscribes again where the slot
lives now. An error reply (MOVED for a slot this node does not serve, CLUSTERDOWN,
NOPERM) drops it too: a subscription the server refused must not look live.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from meetq._native import encode_commands
from meetq._redis.connection import Arg, RespConnection
from meetq.errors import MeetqConnectionError

_CONFIRMATIONS = frozenset(
    (b"subscribe", b"unsubscribe", b"psubscribe", b"punsubscribe", b"ssubscribe", b"sunsubscribe")
)

Sink = Callable[[list[Any]], None]


class SubscriberConnection(RespConnection):
    """One subscription socket; see the module docstring."""

    def __init__(self, reply_timeout: float | None = None) -> None:
        super().__init__(reply_timeout)
        self._sink: Sink | None = None
        self._written = 0  # confirmations asked for
        self._confirmed = 0  # confirmations received
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._held = False
        self._drops: dict[bytes, int] = {}  # SUNSUBSCRIBEs written, not yet confirmed
        self.on_lost: Callable[[BaseException | None], None] | None = None
        self.last_data = 0.0
        """Loop time of the last bytes received: the last proof that the path is alive."""

    @classmethod
    async def open(cls, url: str, *, timeout: float = 5.0) -> SubscriberConnection:
        """`RespConnection.connect` (auth, db, TLS) for a subscription socket."""
        conn = await cls.connect(url, timeout=timeout, client_name="meetq-pubsub")
        assert isinstance(conn, SubscriberConnection)
        return conn

    def enter_push_mode(self, sink: Sink) -> None:
        if self.pending:
            raise RuntimeError("requests still pending: cannot switch to push mode")
        self._sink = sink
        self.last_data = self._loop.time()

    def write(self, commands: Sequence[Sequence[Arg]], confirmations: int) -> None:
        """Writes (UN|P)SUBSCRIBE commands that will be answered by `confirmations` replies."""
        transport = self._check_open()
        self._written += confirmations
        transport.write(encode_commands(commands))

    def expect_drops(self, channels: Sequence[bytes]) -> None:
        """Marks `sunsubscribe` replies for `channels` as answers to our SUNSUBSCRIBE."""
        for channel in channels:
            self._drops[channel] = self._drops.get(channel, 0) + 1

    def _solicited(self, channel: bytes) -> bool:
        left = self._drops.get(channel, 0)
        if not left:
            return False
        if left == 1:
            del self._drops[channel]
        else:
            self._drops[channel] = left - 1
        return True

    async def confirmed(self) -> None:
        """Returns once every (un)subscription written so far is confirmed; raises
        `MeetqConnectionError` if the connection is lost first."""
        if self._confirmed >= self._written:
            return
        if self.closed:
            raise MeetqConnectionError("subscription connection lost") from self._lost
        future: asyncio.Future[None] = self._loop.create_future()
        self._waiters.append((self._written, future))
        await future

    def data_received(self, data: bytes) -> None:
        if self._sink is None:
            super().data_received(data)
            return
        self.last_data = self._loop.time()
        self._reader.feed(data)
        if not self._held:
            self._parse()

    def _parse(self) -> None:
        """Hands every buffered reply to the sink, stopping early when `hold` is called."""
        reader = self._reader
        sink = self._sink
        assert sink is not None
        try:
            while not self._held:
                reply = reader.gets()
                if reply is False:
                    break
                if type(reply) is list and reply and reply[0] in _CONFIRMATIONS:
                    if reply[0] == b"sunsubscribe" and not self._solicited(reply[1]):
                        moved = f"the server dropped shard channel {reply[1]!r} (slot moved)"
                        self.abort(MeetqConnectionError(moved))
                        continue
                    self._confirmed += 1
                    continue
                if isinstance(reply, Exception):
                    self.abort(MeetqConnectionError(f"subscription refused: {reply}"))
                    continue
                sink(reply)
        except Exception as exc:  # a protocol error: this stream cannot be trusted any more
            self._lost = exc
            if self._transport is not None:
                self._transport.abort()
            return
        if self._waiters:
            self._wake()

    def hold(self) -> None:
        """Stops handing replies to the sink and reading the socket (back-pressure: Redis
        buffers for us, within its client-output-buffer limit)."""
        if not self._held and self._transport is not None and not self.closed:
            self._held = True
            self._transport.pause_reading()

    def release(self) -> None:
        """Undoes `hold`: the buffered replies are handed out on the next loop step."""
        if self._held:
            self._held = False
            self.last_data = self._loop.time()
            if self._transport is not None and not self.closed:
                self._transport.resume_reading()
                self._loop.call_soon(self._parse_if_open)

    def _parse_if_open(self) -> None:
        if not self.closed and not self._held:
            self._parse()

    def _wake(self) -> None:
        still = []
        for target, future in self._waiters:
            if self._confirmed >= target:
                if not future.done():
                    future.set_result(None)
            else:
                still.append((target, future))
        self._waiters = still

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        waiters, self._waiters = self._waiters, []
        for _, future in waiters:
            if not future.done():
                error = MeetqConnectionError(f"subscription connection lost: {self._lost!r}")
                error.__cause__ = self._lost
                future.set_exception(error)
        if self.on_lost is not None:
            self.on_lost(self._lost)

    def abort(self, reason: BaseException) -> None:
        """Drops the connection at once (a failed probe): `on_lost` follows."""
        if self._lost is None:
            self._lost = reason
        if self._transport is not None:
            self._transport.abort()
