"""When `accepted` goes out: once the task is published, held (`accepted_hold`) for its
final frame to share one write, never for a request whose publish failed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from test_server import open_ws, recv_json, request, welcome

from helpers import async_wait_until


async def frames_of(ws: Any, rid: str, n: int) -> list[dict[str, Any]]:
    """The next `n` frames about `rid` (others skipped)."""
    out: list[dict[str, Any]] = []
    while len(out) < n:
        frame = await recv_json(ws)
        if frame.get("request_id") == rid:
            out.append(frame)
    return out


async def test_a_final_within_the_hold_takes_accepted_along(
    stack_factory: Callable[..., Any], services: Any
) -> None:
    # a hold no run of this test outlasts: the accepted can only come with the final
    async with stack_factory(accepted_hold=60.0) as stack:
        ws = await open_ws(stack.url())
        await welcome(ws)
        await request(ws, "fast", "ai.speech_recognition", {"x": 1})
        accepted, final = await frames_of(ws, "fast", 2)
        assert accepted == {"request_id": "fast", "status": "accepted"}
        assert final["status"] == "success" and final["data"]["echo"] == {"x": 1}
        assert stack.gateway.stats["accepted_with_final"] == 1
        await ws.close()


async def test_a_slow_task_gets_accepted_before_its_final(
    stack_factory: Callable[..., Any], services: Any
) -> None:
    async with stack_factory(accepted_hold=0.01) as stack:
        ws = await open_ws(stack.url())
        await welcome(ws)
        await request(ws, "slow", "ai.emotion_detection", {"sleep": 1.0})
        accepted = await recv_json(ws)
        assert accepted == {"request_id": "slow", "status": "accepted"}
        assert stack.dispatcher.get_stats()["publishes"] == 1  # published before accepted
        final = await recv_json(ws)
        assert final["request_id"] == "slow" and final["status"] == "success"
        assert stack.gateway.stats["accepted_with_final"] == 0
        await ws.close()


async def test_stop_sends_the_held_accepted_before_reconnect(
    stack_factory: Callable[..., Any], services: Any
) -> None:
    async with stack_factory(accepted_hold=60.0) as stack:
        ws = await open_ws(stack.url())
        await welcome(ws)
        await request(ws, "held", "ai.emotion_detection", {"sleep": 5.0})
        await async_wait_until(lambda: stack.gateway._held or stack.gateway._held_due)
        await stack.gateway.stop()
        assert await recv_json(ws) == {"request_id": "held", "status": "accepted"}
        assert (await recv_json(ws))["type"] == "reconnect"
