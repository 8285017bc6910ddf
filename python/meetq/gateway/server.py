"""The WebSocket gateway: authenticated client sessions over picows, on uvloop.

Why picows: measured side by side with `websockets` in benchmarks/bench_gateway.py (see
BENCHMARKS.md, "Gateway"): at the same load its round trip is about half, and an idle
connection costs about the same (both well under 30 KB). picows has no
permessage-deflate at all, so compression is off by construction.

A connection's life:
- Upgrade: `?token=...` (or `Authorization: Bearer ...`) is checked by the authenticator
  before the 101; refusals are plain HTTP answers (401 auth, 429 connect rate or sessions
  per user, 503 connection limit), so a refused client costs no WebSocket state.
  `?session_id=...` resumes a detached session of the same user.
- `welcome` frame (the session id), then any outcomes kept while it was away.
- Requests: `accepted` once the task is published (held up to 2 x `accepted_hold` for
  the final frame, to share one write), the final frame later (`frames.py`). Bad frames get an
  error frame; binary frames and oversize frames also close (1003, 1009); a connection
  over `max_frames_per_second` is closed 4008; one whose send buffer passes
  `max_send_bytes` (it stopped reading) is closed 4009 and counted.
- Keepalive: a ping every `ping_interval` (+-`ping_jitter`, so connections made together
  do not ping together), closed 4010 without a pong within `ping_timeout`. All deadlines
  are on one native timer wheel with one loop timer.
- `stop()`: stops accepting, sends `reconnect` and closes 1012 (service restart).

Here: the server (upgrade, sessions, submitting, keepalive timers) and its entry points
(`serve`, `meetq gateway`); a connection's frame checks and sending are in
`connection.py`, the knobs in `config.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import math
import os
import random
import signal
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

from picows import (
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
    ws_create_server,
)

from meetq._native import TimerWheel
from meetq.dispatch.dispatcher import TaskDispatcher
from meetq.gateway.auth import Authenticator, AuthError, HmacAuthenticator, Identity
from meetq.gateway.config import GatewayConfig
from meetq.gateway.connection import ClientConnection, TokenBucket
from meetq.gateway.frames import (
    CloseCode,
    ErrorCode,
    RequestFrame,
    error_frame,
    reconnect_frame,
    welcome_frame,
)
from meetq.gateway.sessions import (
    ClientTaskManager,
    SessionLimitError,
    UnknownTaskTypeError,
)
from meetq.queue.message import new_id

log = logging.getLogger("meetq.gateway")


def _now_ms() -> int:
    return int(time.monotonic() * 1000)


class GatewayServer:
    """Serves WebSocket clients for a ClientTaskManager; see the module docstring."""

    def __init__(
        self,
        manager: ClientTaskManager,
        authenticator: Authenticator,
        config: GatewayConfig | None = None,
    ) -> None:
        self.manager = manager
        self.authenticator = authenticator
        self.config = config or GatewayConfig()
        self._server: asyncio.Server | None = None
        self._conns: set[ClientConnection] = set()
        self._connect_bucket = TokenBucket(self.config.connects_per_second)
        self.frame_rate = self.config.max_frames_per_second
        self.frame_burst = max(1.0, self.frame_rate)
        """Every connection's frame bucket: refill per second and depth."""
        self._wheel: Any = TimerWheel(_now_ms())
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._accepting = False
        self._all_closed = asyncio.Event()
        # published requests whose `accepted` is held: flat (connection, request id)
        # pairs; `_held_due` goes out at the next tick, `_held` at the one after
        self._held: list[Any] = []
        self._held_due: list[Any] = []
        self._hold_timer: asyncio.TimerHandle | None = None
        self._next_hold_tick = 0.0
        self.stats: dict[str, int] = dict.fromkeys(
            (
                "connections_total",
                "rejected_auth",
                "rejected_connection_limit",
                "rejected_connect_rate",
                "rejected_session_limit",
                "bad_frames",
                "closed_flood",
                "closed_slow_consumer",
                "closed_idle",
                "requests",
                "accepted_with_final",
                "resumed_results",
            ),
            0,
        )

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def connections(self) -> int:
        return len(self._conns)

    def get_stats(self) -> dict[str, Any]:
        return {**self.stats, "connections": len(self._conns), **self.manager.get_stats()}

    async def start(self) -> None:
        cfg = self.config
        self._accepting = True
        self._server = await ws_create_server(
            self._upgrade,
            cfg.host,
            cfg.port,
            max_frame_size=cfg.max_frame_size * 4,
            read_buffer_init_size=cfg.read_buffer_size,
            websocket_handshake_timeout=10,
            enable_auto_pong=True,
            backlog=4096,
        )

    async def stop(self, drain: float = 0.0) -> None:
        """Stops accepting, tells every client to reconnect and closes it (1012)."""
        self._accepting = False
        if self._server is not None:
            self._server.close()
        self._release_held()
        self._release_held()
        if self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None
        frame = reconnect_frame("shutdown", self.config.reconnect_after)
        for conn in list(self._conns):
            conn.send(frame)
            conn.close(CloseCode.SERVICE_RESTART, "server restarting: reconnect")
        if self._conns:
            self._all_closed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_closed.wait(), max(drain, 5.0))
        for conn in list(self._conns):
            if conn.transport is not None:
                conn.transport.disconnect(False)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None

    async def __aenter__(self) -> GatewayServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ upgrade

    def _refuse(self, status: int, reason: str) -> WSUpgradeResponseWithListener:
        response = WSUpgradeResponse.create_error_response(status, reason.encode())
        return WSUpgradeResponseWithListener(response, None)

    def _upgrade(self, request: WSUpgradeRequest) -> Any:
        """Decides the 101 before any WebSocket state exists."""
        cfg = self.config
        if not self._accepting:
            return self._refuse(503, "shutting down")
        if len(self._conns) >= cfg.max_connections:
            self.stats["rejected_connection_limit"] += 1
            return self._refuse(503, "connection limit reached")
        if not self._connect_bucket.take():
            self.stats["rejected_connect_rate"] += 1
            return self._refuse(429, "too many connection attempts")
        query = parse_qs(request.path.partition(b"?")[2].decode("latin-1"))
        tokens = query.get("token")
        token: str | None = tokens[0] if tokens else None
        if token is None:
            header = request.headers.get("Authorization", "")
            if header.startswith("Bearer "):
                token = header[7:]
        try:
            identity = self.authenticator(token, request.headers)
        except AuthError as exc:
            self.stats["rejected_auth"] += 1
            return self._refuse(401, str(exc))
        except Exception:
            log.exception("authenticator failed")
            self.stats["rejected_auth"] += 1
            return self._refuse(401, "authentication failed")
        if not isinstance(identity, Identity):
            self.stats["rejected_auth"] += 1
            return self._refuse(401, "authenticator returned no identity")
        wanted_ids = query.get("session_id")
        wanted: str | None = wanted_ids[0] if wanted_ids else None
        resumable = False
        if wanted:
            with contextlib.suppress(Exception):
                s = self.manager.get_session(wanted)
                resumable = s.user_id == identity.user_id and s.detached
        if not resumable:
            wanted = None
            if self.manager.sessions_of(identity.user_id) >= cfg.max_sessions_per_user:
                self.stats["rejected_session_limit"] += 1
                return self._refuse(429, "too many sessions for this user")
        return ClientConnection(self, identity, wanted)

    # ------------------------------------------------------------------ connections

    def _opened(self, conn: ClientConnection) -> None:
        self._conns.add(conn)
        self.stats["connections_total"] += 1
        assert conn.transport is not None
        under = conn.transport.underlying_transport
        under.set_write_buffer_limits(high=self.config.max_send_bytes)
        ident = conn.identity
        sid = conn.wanted_session or f"s{new_id()}"
        session = self.manager.register_session(sid, ident.user_id, ident.meeting_id)
        conn.session = session
        conn.send(welcome_frame(sid, len(session.backlog) if session.backlog else 0))
        self.stats["resumed_results"] += self.manager.attach(session, conn.send_outcome)
        self._schedule_ping(conn)

    def _closed(self, conn: ClientConnection) -> None:
        self._conns.discard(conn)
        if not self._conns:
            self._all_closed.set()
        if conn.handle >= 0:
            self._wheel.cancel(conn.handle)
            conn.handle = -1
        session = conn.session
        if session is not None and session.sender == conn.send_outcome:
            self.manager.detach(session.session_id)

    def _submit(self, conn: ClientConnection, frame: RequestFrame, now: float) -> None:
        """Stages a parsed request now, synchronously (type and session checks, in-flight
        count, the task in this loop turn's MULTI), so the next frame of this connection
        already sees it counted; no Task per request: the dispatcher writes the turn's
        MULTI. `accepted` is owed from now on, and held once the MULTI is written
        (`_hold_accepted`)."""
        session = conn.session
        if session is None:
            return
        manager = self.manager
        rid = frame.request_id
        if session.in_flight >= manager.max_in_flight:
            conn.send(error_frame(ErrorCode.TOO_MANY_REQUESTS, "too many requests in flight", rid))
            return
        try:
            manager.submit_nowait(
                session,
                rid,
                frame.type,
                frame.data,
                frame.priority,
                frame.timeout or self.config.default_timeout,
                conn.dispatch_failed,
                now,
                conn.published,
            )
        except UnknownTaskTypeError as exc:
            conn.send(error_frame(ErrorCode.UNKNOWN_TYPE, str(exc), rid))
            return
        except SessionLimitError as exc:
            conn.send(error_frame(ErrorCode.TOO_MANY_REQUESTS, str(exc), rid))
            return
        except Exception as exc:
            self.stats["requests"] += 1
            self._failed(conn, rid, exc)
            return
        self.stats["requests"] += 1
        conn.owe_accepted(rid)

    def _hold_accepted(self, conn: ClientConnection, request_id: str) -> None:
        """The request is published: its `accepted` goes out within 1-2 x `accepted_hold`,
        or with its final frame if that comes first. The hold ticks on a loop timer, or,
        while publishes keep coming, here (the timer is pushed back): ticks cost no
        wake-up of their own under load."""
        hold = self.config.accepted_hold
        if hold <= 0:
            conn.send_accepted(request_id)
            return
        self._held += (conn, request_id)
        now = time.monotonic()
        if self._hold_timer is None:
            self._arm_hold(now, hold)
        elif now >= self._next_hold_tick:
            self._hold_timer.cancel()
            self._on_hold_tick()

    def _arm_hold(self, now: float, hold: float) -> None:
        self._next_hold_tick = now + hold
        self._hold_timer = asyncio.get_running_loop().call_later(hold, self._on_hold_tick)

    def _on_hold_tick(self) -> None:
        self._hold_timer = None
        self._release_held()
        if self._held_due:
            self._arm_hold(time.monotonic(), self.config.accepted_hold)

    def _release_held(self) -> None:
        """Sends the due `accepted` frames; the newer ones are due at the next tick."""
        due, self._held_due, self._held = self._held_due, self._held, []
        it = iter(due)
        for conn, rid in zip(it, it, strict=True):
            conn.send_accepted(rid)

    def _failed(self, conn: ClientConnection, request_id: str, exc: BaseException | None) -> None:
        log.warning("gateway: request %s failed to dispatch: %r", request_id, exc)
        conn.send(error_frame(ErrorCode.UNAVAILABLE, f"could not dispatch: {exc}", request_id))

    # ------------------------------------------------------------------ keepalive

    def _schedule_ping(self, conn: ClientConnection) -> None:
        cfg = self.config
        if conn.handle >= 0:
            self._wheel.cancel(conn.handle)
        jitter = 1.0 + random.uniform(-cfg.ping_jitter, cfg.ping_jitter)
        due = _now_ms() + int(cfg.ping_interval * jitter * 1000)
        conn.handle = self._wheel.insert(due, conn)
        self._arm(due)

    def _arm(self, deadline_ms: int | None) -> None:
        if deadline_ms is None or deadline_ms >= self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline_ms
        delay = max(deadline_ms / 1000.0 - time.monotonic(), 0.001)
        self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer, self._timer_at = None, math.inf
        now = _now_ms()
        for conn in self._wheel.advance(now):
            conn.handle = -1
            if conn.closed:
                continue
            if conn.awaiting_pong:
                self.stats["closed_idle"] += 1
                conn.close(CloseCode.IDLE, "no pong", abort=True)
                continue
            conn.awaiting_pong = True
            if conn.transport is not None:
                conn.transport.send_ping()
            due = now + int(self.config.ping_timeout * 1000)
            conn.handle = self._wheel.insert(due, conn)
        self._arm(self._wheel.next_deadline())


# ---------------------------------------------------------------------- entry points


def read_secret(env: str | None, path: str | None) -> str:
    """The token secret from a file (preferred) or an environment variable."""
    if path:
        with open(path, encoding="utf-8") as f:
            secret = f.read().strip()
    elif env:
        secret = os.environ.get(env, "")
    else:
        secret = ""
    if len(secret) < 16:
        raise SystemExit("the gateway needs a secret of at least 16 characters")
    return secret


YOUNG_GC_THRESHOLD = 20_000
"""The gateway process's first-generation collector threshold (CPython's default: 700)."""


@contextlib.contextmanager
def collector_for_gateway() -> Iterator[None]:
    """The garbage collector of a gateway process, tuned while it serves (restored after).

    With the default threshold the collector ran every ~110 requests and promoted the
    objects of the requests in flight each time, so full collections came often, and a
    full collection walks every tracked object: ~31 per connection (picows' transport and
    protocol, the session, ...), 300,000 at 10,000 connections. Measured in
    benchmarks/bench_gateway.py (2,000 connections, 1,000-2,000 req/s, a loaded box), the
    collector took 40-105 us of wall time per request of ~210-250 us. So: what start-up
    made is frozen (never garbage, never walked again), and the first generation is
    collected every YOUNG_GC_THRESHOLD allocations, which the objects of a request rarely
    outlive. Per-request objects are freed by reference counting anyway (no cycles)."""
    before = gc.get_threshold()
    frozen_before = gc.get_freeze_count() > 0  # the caller's own freeze is left alone
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_GC_THRESHOLD, before[1], before[2])
    try:
        yield
    finally:
        gc.set_threshold(*before)
        if not frozen_before:
            gc.unfreeze()


async def serve(
    redis_url: str,
    secret: str,
    config: GatewayConfig | None = None,
    stop: asyncio.Event | None = None,
    ready: asyncio.Event | None = None,
    tune_gc: bool = True,
) -> dict[str, Any]:
    """Runs dispatcher, session manager and gateway until `stop` is set (or SIGTERM /
    SIGINT when no event is given); returns the gateway's final stats. `tune_gc`: the
    process's collector is set for serving while it runs (`collector_for_gateway`)."""
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    async with (
        TaskDispatcher(redis_url) as dispatcher,
        ClientTaskManager(dispatcher) as manager,
        GatewayServer(manager, HmacAuthenticator(secret), config) as gateway,
    ):
        log.info("gateway listening on %s:%d", gateway.config.host, gateway.port)
        with collector_for_gateway() if tune_gc else contextlib.nullcontext():
            if ready is not None:
                ready.set()
            await stop.wait()
        return gateway.get_stats()


def run_from_args(argv: list[str] | None = None) -> int:
    """`meetq gateway` (wired in meetq.ops.cli): parses options and runs `serve`."""
    parser = argparse.ArgumentParser(prog="meetq gateway", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument(
        "--secret-env",
        default="MEETQ_GATEWAY_SECRET",
        help="environment variable holding the token secret",
    )
    parser.add_argument("--secret-file", help="file holding the token secret (wins over env)")
    defaults = GatewayConfig()
    parser.add_argument("--max-connections", type=int, default=defaults.max_connections)
    parser.add_argument("--max-sessions-per-user", type=int, default=defaults.max_sessions_per_user)
    args = parser.parse_args(argv)
    secret = read_secret(args.secret_env, args.secret_file)
    config = GatewayConfig(
        host=args.host,
        port=args.port,
        max_connections=args.max_connections,
        max_sessions_per_user=args.max_sessions_per_user,
    )
    import uvloop

    uvloop.run(serve(args.redis_url, secret, config))
    return 0


__all__ = [
    "GatewayConfig",
    "GatewayServer",
    "collector_for_gateway",
    "read_secret",
    "run_from_args",
    "serve",
]
