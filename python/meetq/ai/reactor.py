"""pyzmq on the asyncio loop without a future per message.

`zmq.asyncio` gives every `recv` its own future and poller round trip. Here each socket's
file descriptor is registered once with `loop.add_reader`; when it becomes readable the
callback drains every message that is ready (`recv(NOBLOCK)` until `zmq.Again`) and hands
each to a plain callback. A burst of N replies thus costs one wake-up and N recv calls.

libzmq's FD is edge-triggered: it signals a change of the socket's event state, and any
call that processes the socket's commands (a send, `getsockopt(EVENTS)`) may consume that
edge. So after sending on a socket that also receives, `after_send()` checks `EVENTS` and
schedules a drain if input is already waiting; and each drain runs until `EVENTS` shows
no input or `recv` raises `zmq.Again`, either of which re-arms the edge. A drain stops
after `batch` messages and reschedules itself, so one busy socket cannot starve the loop.
`on_drained` runs after each drain: the node sends the replies of a whole batch there,
back to back, so libzmq's I/O thread is woken once per batch instead of once per frame.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import zmq

log = logging.getLogger(__name__)

BATCH = 256
PEEKS = 3
"""Messages of a drain after which an `EVENTS` read, not a failing `recv`, says "no more"."""

send_frame = zmq.backend.Socket.send
"""`send_frame(sock, frame, zmq.NOBLOCK)`: libzmq's send without pyzmq's Python-level
`Socket.send` wrapper (routing_id/group/track handling) in front of it, for the per-message
paths."""

_get_option: Callable[[zmq.Socket[Any], int], int] = zmq.backend.Socket.get  # type: ignore[assignment]
# Plain ints: `int & IntFlag` runs enum.Flag's Python-level __rand__, a sugar getsockopt
# wraps EVENTS in an enum; both cost more than the libzmq call itself on this path.
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
NOBLOCK = int(zmq.NOBLOCK)
"""`zmq.NOBLOCK` as a plain int (an IntFlag argument costs a conversion per call)."""


class Reader:
    """Feeds every message of `sock` to `on_message` (bytes, or a list of frames)."""

    __slots__ = (
        "_batch",
        "_closed",
        "_fd",
        "_loop",
        "_multipart",
        "_on_drained",
        "_on_message",
        "_scheduled",
        "sock",
    )

    def __init__(
        self,
        sock: zmq.Socket[Any],
        on_message: Callable[[Any], None],
        *,
        multipart: bool = False,
        loop: asyncio.AbstractEventLoop | None = None,
        batch: int = BATCH,
        on_drained: Callable[[], None] | None = None,
    ) -> None:
        self.sock = sock
        self._on_message = on_message
        self._on_drained = on_drained
        self._multipart = multipart
        self._loop = loop or asyncio.get_running_loop()
        self._batch = batch
        self._closed = False
        self._scheduled = False
        self._fd = int(sock.getsockopt(zmq.FD))
        self._loop.add_reader(self._fd, self._drain)
        # Messages may already be queued (the edge came before we registered).
        self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled and not self._closed:
            self._scheduled = True
            self._loop.call_soon(self._drain)

    def after_send(self) -> None:
        """Call after a send on this socket: a send can consume the readable edge."""
        if not self._closed and _get_option(self.sock, _EVENTS) & _POLLIN:
            self._schedule()

    def _drain(self) -> None:
        self._scheduled = False
        if self._closed:
            return
        try:
            if self._drain_batch():
                self._schedule()  # more may be waiting: continue on the next loop turn
        finally:
            if self._on_drained is not None:
                try:
                    self._on_drained()
                except Exception:
                    log.exception("drain callback failed on %s", self.sock)

    def _drain_batch(self) -> bool:
        """Receives up to `batch` messages; True if the batch was full (more may wait).

        After each of the first `PEEKS` messages, one `EVENTS` read says whether another
        is waiting: a lone message (a sequential round trip) or a short run (a streamed
        answer's delta and `finish`) then ends its drain without the failed `recv`, whose
        `zmq.Again` costs twice that read; a burst goes on with `recv` until `Again`.
        Either way the FD's edge is re-armed."""
        sock = self.sock
        recv = sock.recv_multipart if self._multipart else sock.recv
        get = _get_option
        on_message = self._on_message
        for i in range(self._batch):
            try:
                if 0 < i <= PEEKS and not get(sock, _EVENTS) & _POLLIN:
                    return False
                msg = recv(NOBLOCK)
            except zmq.Again:
                return False
            except zmq.ZMQError as exc:
                # EFSM: a REQ with no request out has nothing to receive yet.
                if self._closed or exc.errno in (zmq.EFSM, zmq.ENOTSOCK, zmq.ETERM):
                    return False
                log.error("recv on %s failed: %s", sock, exc)
                return False
            try:
                on_message(msg)
            except Exception:
                log.exception("message handler failed on %s", sock)
            if self._closed:
                return False  # the handler closed this reader (its node went away)
        return True

    def close(self) -> None:
        """Unregisters from the loop and closes the socket at once (LINGER 0)."""
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self._fd)
        self.sock.close(linger=0)


def configure(sock: zmq.Socket[Any], *, hwm: int = 100_000) -> zmq.Socket[Any]:
    """The options every socket of the AI path gets: LINGER 0 and roomy queues."""
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.RCVHWM, hwm)
    return sock
