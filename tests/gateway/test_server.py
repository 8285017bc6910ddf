"""The gateway end to end: real WebSocket clients (websockets) -> gateway (picows) ->
dispatcher -> redis-server -> ServiceWorker process -> back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from helpers import async_wait_until
from meetq import TaskDispatcher
from meetq.gateway import ClientTaskManager, HmacAuthenticator, make_token
from meetq.gateway.server import GatewayConfig, GatewayServer

SECRET = "test-secret-0123456789abcdef"


async def open_ws(url: str, **kw: Any) -> ClientConnection:
    return await connect(url, compression=None, open_timeout=10, **kw)


async def recv_json(ws: ClientConnection, timeout: float = 15) -> dict[str, Any]:
    raw = await asyncio.wait_for(ws.recv(), timeout)
    out: dict[str, Any] = orjson.loads(raw)
    return out


async def welcome(ws: ClientConnection) -> dict[str, Any]:
    frame = await recv_json(ws)
    assert frame["type"] == "welcome"
    return frame


async def request(ws: ClientConnection, rid: str, type_: str, data: Any = None, **kw: Any) -> None:
    await ws.send(
        orjson.dumps({"request_id": rid, "type": type_, "data": data or {}, **kw}).decode()
    )


async def final_of(ws: ClientConnection, rid: str, timeout: float = 20) -> dict[str, Any]:
    """Reads until the final frame of `rid` (checks its accepted frame came first)."""
    accepted = False
    while True:
        frame = await recv_json(ws, timeout)
        if frame.get("request_id") != rid:
            continue
        if frame["status"] == "accepted":
            accepted = True
            continue
        if frame.get("code") is None:
            assert accepted, frame
        return frame


async def test_request_gets_accepted_then_success(
    stack_factory: Callable[..., Any], services: Any
) -> None:
    async with stack_factory() as stack:
        ws = await open_ws(stack.url(user_id=5, meeting_id=6))
        hello = await welcome(ws)
        assert hello["session_id"]
        await request(ws, "r1", "ai.speech_recognition", {"audio": "abc"}, priority="high")
        final = await final_of(ws, "r1")
        assert final["status"] == "success"
        assert final["data"] == {"echo": {"audio": "abc"}, "user_id": 5, "meeting_id": 6}
        assert final["processed_at"] > 0
        await request(ws, "r2", "media.transcode", {"f": 1})
        assert (await final_of(ws, "r2"))["status"] == "success"
        await request(ws, "r3", "ai.synthesis_detection")
        failed = await final_of(ws, "r3")
        assert failed["status"] == "error" and "model exploded" in failed["error"]
        await request(ws, "r4", "ai.emotion_detection", {"sleep": 5}, timeout=0.3)
        assert (await final_of(ws, "r4"))["status"] == "timeout"
        await ws.close()
        stats = stack.gateway.get_stats()
        assert stats["requests"] == 4
        assert stats["total_success"] == 2 and stats["total_failed"] == 2


@pytest.mark.parametrize(
    "token",
    [None, "garbage", "x.y", "forged"],
)
async def test_missing_malformed_forged_tokens_are_refused(
    stack_factory: Callable[..., Any], token: str | None
) -> None:
    async with stack_factory() as stack:
        if token == "forged":
            good = make_token(SECRET, 1, 2)
            token = (
                make_token("another-secret-0123456789", 1, 2).split(".")[0]
                + "."
                + good.split(".")[1]
            )
        url = stack.base if token is None else f"{stack.base}?token={token}"
        with pytest.raises(InvalidStatus) as info:
            await open_ws(url)
        assert info.value.response.status_code == 401
        assert stack.gateway.stats["rejected_auth"] == 1
        assert stack.gateway.connections == 0


async def test_expired_token_is_refused(stack_factory: Callable[..., Any]) -> None:
    async with stack_factory() as stack:
        with pytest.raises(InvalidStatus) as info:
            await open_ws(stack.url(ttl=-60))
        assert info.value.response.status_code == 401
        assert b"expired" in info.value.response.body


async def test_bearer_header_is_accepted(stack_factory: Callable[..., Any]) -> None:
    async with stack_factory() as stack:
        token = make_token(SECRET, 1, 2)
        ws = await open_ws(stack.base, additional_headers={"Authorization": f"Bearer {token}"})
        await welcome(ws)
        await ws.close()


async def test_bad_frames_one_by_one(stack_factory: Callable[..., Any]) -> None:
    """Each bad frame gets an error frame; the connection (and another one) stays usable."""
    async with stack_factory() as stack:
        ws = await open_ws(stack.url())
        other = await open_ws(stack.url(user_id=2))
        await welcome(ws)
        await welcome(other)
        cases = [
            ("{not json", "invalid_json", None),
            ("[1, 2]", "invalid_frame", None),
            ('{"type": "ai.speech_recognition"}', "invalid_frame", None),
            ('{"request_id": "a", "type": ""}', "invalid_frame", "a"),
            ('{"request_id": "b", "type": "ai.nope"}', "unknown_type", "b"),
            ('{"request_id": "c", "type": "weird"}', "unknown_type", "c"),
            (
                '{"request_id": "d", "type": "ai.speech_recognition", "data": 3}',
                "invalid_frame",
                "d",
            ),
            ('{"request_id": "e", "type": "media.x", "priority": "urgent"}', "invalid_frame", "e"),
            ('{"request_id": "f", "type": "media.x", "timeout": -1}', "invalid_frame", "f"),
            ('{"request_id": "g", "type": "media.x", "timeout": "soon"}', "invalid_frame", "g"),
        ]
        for raw, code, rid in cases:
            await ws.send(raw)
            frame = await recv_json(ws)
            assert frame["status"] == "error", raw
            assert frame["code"] == code, raw
            assert frame["request_id"] == rid, raw
        assert stack.gateway.stats["bad_frames"] == 8
        await other.ping()
        await ws.ping()
        await ws.close()
        await other.close()


async def test_binary_frame_is_refused_and_closed_1003(stack_factory: Callable[..., Any]) -> None:
    async with stack_factory() as stack:
        ws = await open_ws(stack.url())
        await welcome(ws)
        await ws.send(b"\x00\x01binary")
        frame = await recv_json(ws)
        assert frame["code"] == "binary_frame"
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
        assert ws.close_code == 1003


async def test_oversize_frame_is_closed_1009(stack_factory: Callable[..., Any]) -> None:
    async with stack_factory(max_frame_size=1024) as stack:
        ws = await open_ws(stack.url())
        await welcome(ws)
        await ws.send("x" * 2000)  # over ours: error frame, then 1009
        frame = await recv_json(ws)
        assert frame["code"] == "frame_too_large"
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
        assert ws.close_code == 1009
        ws = await open_ws(stack.url())
        await welcome(ws)
        await ws.send("x" * 100_000)  # over the library's bound: 1009 at once
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
        assert ws.close_code == 1009


async def test_in_flight_flood_gets_too_many_requests(
    stack_factory: Callable[..., Any], services: Any
) -> None:
    async with stack_factory(manager_options={"max_in_flight": 3}) as stack:
        ws = await open_ws(stack.url())
        await welcome(ws)
        for i in range(6):
            await request(ws, f"s{i}", "ai.emotion_detection", {"sleep": 1.0})
        frames = [await recv_json(ws) for _ in range(6)]
        statuses = sorted(f["status"] for f in frames)
        assert statuses == ["accepted"] * 3 + ["error"] * 3
        assert {f["code"] for f in frames if f["status"] == "error"} == {"too_many_requests"}
        done = [await recv_json(ws) for _ in range(3)]
        assert {f["status"] for f in done} == {"success"}
        await request(ws, "after", "ai.speech_recognition")
        assert (await final_of(ws, "after"))["status"] == "success"


async def test_frame_rate_flood_is_closed_4008(stack_factory: Callable[..., Any]) -> None:
    async with stack_factory(max_frames_per_second=5) as stack:
        ws = await open_ws(stack.url())
        await welcome(ws)
        with pytest.raises(ConnectionClosed):
            for _ in range(100):
                await ws.send("{bad")
            while True:
                await asyncio.wait_for(ws.recv(), 10)
        assert ws.close_code == 4008
        assert stack.gateway.stats["closed_flood"] == 1


async def test_connection_and_session_limits(stack_factory: Callable[..., Any]) -> None:
    async with stack_factory(max_connections=3, max_sessions_per_user=2) as stack:
        a = await open_ws(stack.url(user_id=1))
        b = await open_ws(stack.url(user_id=1))
        with pytest.raises(InvalidStatus) as info:
            await open_ws(stack.url(user_id=1))
        assert info.value.response.status_code == 429
        c = await open_ws(stack.url(user_id=2))
        with pytest.raises(InvalidStatus) as info:
            await open_ws(stack.url(user_id=3))
        assert info.value.response.status_code == 503
        assert stack.gateway.stats["rejected_session_limit"] == 1
        assert stack.gateway.stats["rejected_connection_limit"] == 1
        for ws in (a, b, c):
            await welcome(ws)
            await ws.close()


async def test_connect_rate_limit(stack_factory: Callable[..., Any]) -> None:
    # one connect per 5 s: however slow this machine's handshakes, the next ones are early
    async with stack_factory(connects_per_second=0.2) as stack:
        codes = []
        for i in range(4):
            try:
                ws = await open_ws(stack.url(user_id=i))
                codes.append(101)
                await ws.close()
            except InvalidStatus as exc:
                codes.append(exc.response.status_code)
        assert codes == [101, 429, 429, 429]
        assert stack.gateway.stats["rejected_connect_rate"] == codes.count(429)


async def test_pings_arrive_and_silent_clients_are_closed(
    stack_factory: Callable[..., Any],
) -> None:
    from picows import WSListener, WSMsgType, ws_connect

    pings: list[float] = []

    class NoPong(WSListener):  # type: ignore[misc]
        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            if frame.msg_type == WSMsgType.PING:
                pings.append(time.monotonic())

    # a timeout generous enough for the answering client on a loaded machine
    async with stack_factory(ping_interval=0.3, ping_jitter=0.25, ping_timeout=2.0) as stack:
        ok = await open_ws(stack.url(user_id=1))  # websockets answers pings
        transport, _ = await ws_connect(NoPong, stack.url(user_id=2), enable_auto_pong=False)
        await asyncio.wait_for(transport.wait_disconnected(), 15)
        assert pings
        assert (
            transport.close_handshake is None
            or transport.close_handshake.recv is None
            or (transport.close_handshake.recv.code.value == 4010)
        )
        await async_wait_until(lambda: stack.gateway.stats["closed_idle"] == 1)
        await welcome(ok)
        await ok.ping()
        await request(ok, "alive", "ai.nope")
        assert (await recv_json(ok))["code"] == "unknown_type"
        await ok.close()


async def test_graceful_shutdown_tells_clients_to_reconnect(
    stack_factory: Callable[..., Any],
) -> None:
    async with stack_factory() as stack:
        ws = await open_ws(stack.url())
        await welcome(ws)
        await stack.gateway.stop()
        frame = await recv_json(ws)
        assert frame == {"type": "reconnect", "reason": "shutdown", "retry_after": 1.0}
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
        assert ws.close_code == 1012


async def test_results_are_delivered_on_reconnect(
    stack_factory: Callable[..., Any], services: Any
) -> None:
    async with stack_factory() as stack:
        ws = await open_ws(stack.url(user_id=9))
        sid = (await welcome(ws))["session_id"]
        await request(ws, "late", "ai.emotion_detection", {"sleep": 0.5})
        assert (await recv_json(ws))["status"] == "accepted"
        await ws.close()
        await async_wait_until(lambda: stack.manager.get_session(sid).detached)
        await async_wait_until(lambda: stack.manager.get_session(sid).backlog, timeout=20)
        ws = await open_ws(stack.url(user_id=9, session_id=sid))
        hello = await welcome(ws)
        assert hello == {"type": "welcome", "session_id": sid, "resumed": 1}
        final = await recv_json(ws)
        assert final["request_id"] == "late" and final["status"] == "success"
        assert stack.gateway.stats["resumed_results"] == 1
        # another user cannot take the session over: it gets a session of its own
        other = await open_ws(stack.url(user_id=10, session_id=sid))
        assert (await welcome(other))["session_id"] != sid
        await ws.close()
        await other.close()


async def test_slow_reader_is_closed_4009(stack_factory: Callable[..., Any], services: Any) -> None:
    """A raw client that never reads: the gateway closes it once its send queue passes
    max_send_bytes, and the process does not grow."""
    import base64
    import os
    import socket

    async with stack_factory(
        max_send_bytes=64 * 1024, manager_options={"max_in_flight": 1000}
    ) as stack:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, ("127.0.0.1", stack.gateway.port))
        token = make_token(SECRET, 1, 2)
        key = base64.b64encode(os.urandom(16)).decode()
        await loop.sock_sendall(
            sock,
            (
                f"GET /?token={token} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode(),
        )
        head = await asyncio.wait_for(loop.sock_recv(sock, 1024), 10)
        assert head.startswith(b"HTTP/1.1 101")
        payload = "y" * 16_000
        for i in range(200):
            body = orjson.dumps(
                {"request_id": f"q{i}", "type": "ai.speech_recognition", "data": {"p": payload}}
            )
            await loop.sock_sendall(sock, _masked_text(body))
        await async_wait_until(lambda: stack.gateway.stats["closed_slow_consumer"] == 1, timeout=30)
        await async_wait_until(lambda: stack.gateway.connections == 0, timeout=30)
        sock.close()


def _masked_text(payload: bytes) -> bytes:
    import os
    import struct

    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x81, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x81, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


async def test_request_whose_dispatch_fails_gets_unavailable(redis_server: Any) -> None:
    """Redis is gone when the request's write goes out: after the retry budget the client
    gets an `unavailable` error frame, the session's in-flight slot comes back, and the
    connection stays usable once Redis is back."""
    cfg = GatewayConfig(port=0)
    async with (
        TaskDispatcher(redis_server.url, retry_budget=0.5) as dispatcher,
        ClientTaskManager(dispatcher) as manager,
        GatewayServer(manager, HmacAuthenticator(SECRET), cfg) as gateway,
    ):
        ws = await open_ws(f"ws://127.0.0.1:{gateway.port}/?token={make_token(SECRET, 1, 2)}")
        sid = (await welcome(ws))["session_id"]
        redis_server.stop()
        try:
            await request(ws, "r1", "ai.speech_recognition")
            final = await recv_json(ws)  # never published: no `accepted` before it
            assert final["request_id"] == "r1"
            assert final["status"] == "error" and final["code"] == "unavailable"
            assert "could not dispatch" in final["error"]
            assert manager.get_session(sid).in_flight == 0
            stats = gateway.get_stats()
            assert stats["total_requests"] == 1 and stats["total_failed"] == 1
            assert dispatcher.get_stats()["active_tasks"] == 0
        finally:
            redis_server.start()
        await request(ws, "r2", "ai.speech_recognition", timeout=0.5)
        assert (await final_of(ws, "r2"))["status"] == "timeout"  # no worker: but answered
        await ws.close()


async def test_fragmented_text_is_refused_and_closed_1003(
    stack_factory: Callable[..., Any],
) -> None:
    from picows import WSListener, WSMsgType, ws_connect

    got: list[Any] = []

    class Client(WSListener):  # type: ignore[misc]
        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            if frame.msg_type == WSMsgType.TEXT:
                got.append(orjson.loads(frame.get_payload_as_bytes()))

    async with stack_factory() as stack:
        transport, _ = await ws_connect(Client, stack.url())
        await async_wait_until(lambda: got)  # welcome
        transport.send(WSMsgType.TEXT, b'{"request_id": "f", ', fin=False)
        await asyncio.wait_for(transport.wait_disconnected(), 15)
        assert got[-1]["code"] == "invalid_frame" and "fragmented" in got[-1]["error"]
        handshake = transport.close_handshake
        assert handshake is not None and handshake.recv is not None
        assert handshake.recv.code.value == 1003
        assert stack.gateway.stats["bad_frames"] == 1


def test_collector_is_tuned_while_serving_and_restored() -> None:
    import gc

    from meetq.gateway.server import YOUNG_GC_THRESHOLD, collector_for_gateway

    before = gc.get_threshold()
    with collector_for_gateway():
        assert gc.get_threshold()[0] == YOUNG_GC_THRESHOLD
        assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
