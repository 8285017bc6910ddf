"""Hypothesis fuzz of frames against a live gateway: whatever a client sends, the gateway
answers with an error frame or takes the request, never crashes, and another client's
session is never disturbed."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from helpers import running_redis

VALUES: Any = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
FRAME = st.one_of(
    st.text(max_size=200),
    st.binary(max_size=200),
    st.fixed_dictionaries(
        {},
        optional={
            "request_id": st.one_of(st.text(max_size=140), VALUES),
            "type": st.one_of(
                st.sampled_from(["ai.nope", "weird", "", "media.", "ai.speech_recognition"]),
                VALUES,
            ),
            "data": VALUES,
            "priority": st.one_of(st.sampled_from(["low", "HIGH", "x"]), VALUES),
            "timeout": st.one_of(st.floats(-5, 1000), VALUES),
        },
    ).map(lambda d: orjson.dumps(d).decode()),
)


@pytest.fixture(scope="module")
def live_gateway() -> Iterator[tuple[asyncio.AbstractEventLoop, Callable[[int], str]]]:
    """A gateway (with its dispatcher and a private redis-server) on a loop of its own
    thread, so the synchronous hypothesis test can drive clients against it."""
    import threading

    import uvloop

    from meetq import TaskDispatcher
    from meetq.gateway import ClientTaskManager, HmacAuthenticator, make_token
    from meetq.gateway.server import GatewayConfig, GatewayServer

    secret = "fuzz-secret-0123456789abcdef"
    loop = uvloop.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    with running_redis() as server:
        stop = asyncio.Event()
        ready: concurrent.futures.Future[int] = concurrent.futures.Future()

        async def run() -> None:
            config = GatewayConfig(port=0, max_frame_size=1024, default_timeout=1.0)
            async with (
                TaskDispatcher(server.url) as d,
                ClientTaskManager(d) as m,
                GatewayServer(m, HmacAuthenticator(secret), config) as gw,
            ):
                ready.set_result(gw.port)
                await stop.wait()

        done = asyncio.run_coroutine_threadsafe(run(), loop)
        port = ready.result(30)

        def url_of(user: int) -> str:
            return f"ws://127.0.0.1:{port}/?token={make_token(secret, user, 1)}"

        try:
            yield loop, url_of
        finally:
            loop.call_soon_threadsafe(stop.set)
            done.result(30)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(FRAME, min_size=1, max_size=8))
def test_fuzzed_frames_against_a_live_gateway(
    live_gateway: tuple[asyncio.AbstractEventLoop, Callable[[int], str]], frames: list[Any]
) -> None:
    loop, url_of = live_gateway
    asyncio.run_coroutine_threadsafe(_fuzz(url_of, frames), loop).result(60)


_USERS = iter(range(1, 1_000_000, 2))


async def _fuzz(url_of: Callable[[int], str], frames: list[Any]) -> None:
    user = next(_USERS)  # a fresh user per example: sessions outlive their connections
    victim = await connect(url_of(user), compression=None)
    bystander = await connect(url_of(user + 1), compression=None)
    try:
        assert orjson.loads(await victim.recv())["type"] == "welcome"
        assert orjson.loads(await bystander.recv())["type"] == "welcome"
        for frame in frames:
            closing = isinstance(frame, bytes) or len(frame.encode()) > 1024
            try:
                await victim.send(frame)
                answer = orjson.loads(await asyncio.wait_for(victim.recv(), 10))
                assert answer.get("status") in ("error", "accepted"), answer
                if closing:
                    assert answer["code"] in ("binary_frame", "frame_too_large")
                    await asyncio.wait_for(victim.recv(), 10)
                    raise AssertionError("the connection stayed open")
            except ConnectionClosed:
                assert closing, frame
                assert victim.close_code in (1003, 1009), victim.close_code
                break
        await bystander.send('{"request_id": "b", "type": "ai.nope"}')
        answer = orjson.loads(await asyncio.wait_for(bystander.recv(), 10))
        assert answer["code"] == "unknown_type" and answer["request_id"] == "b"
    finally:
        await victim.close()
        await bystander.close()
