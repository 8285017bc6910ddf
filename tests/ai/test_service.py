"""AIService: tasks through a real redis-server and dispatcher to StackFlow nodes, and
the whole path from a WebSocket client with spoken audio to the ASR node and back."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from helpers import async_wait_until
from meetq import TaskDispatcher, events
from meetq.ai import AIService, StackFlowClient, StackFlowNode
from meetq.ai.models import builtin
from meetq.dispatch import TaskRequest, TaskStatus, TaskType


@contextlib.contextmanager
def socket_dirs(n: int) -> Iterator[list[Path]]:
    dirs = [Path(tempfile.mkdtemp(prefix="mqai-", dir="/tmp")) for _ in range(n)]
    try:
        yield dirs
    finally:
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)


def upper_then_fail(text: str) -> str:
    if text == "explode":
        raise RuntimeError("model exploded")
    return text.upper()


@contextlib.asynccontextmanager
async def ai_stack(
    redis_url: str, dirs: list[Path], models: dict[str, Any], **service: Any
) -> AsyncIterator[tuple[TaskDispatcher, AIService, list[StackFlowNode], list[Any]]]:
    seen: list[Any] = []
    clients = [StackFlowClient(d, call_timeout=30) for d in dirs]
    nodes = [StackFlowNode("llm", models, d) for d in dirs]
    async with contextlib.AsyncExitStack() as stack:
        for node in nodes:
            await stack.enter_async_context(node)
        for client in clients:
            await stack.enter_async_context(client)
        ai = AIService(
            redis_url,
            clients,
            {
                TaskType.EMOTION_DETECTION: ("llm", "sentiment"),
                "text_upper": ("llm", "upper"),
            },
            on_event=lambda name, payload: seen.append((name, payload)),
            **service,
        )
        await stack.enter_async_context(ai)
        dispatcher = await stack.enter_async_context(TaskDispatcher(redis_url))
        from meetq.dispatch import ServiceRoute

        dispatcher.register_route(
            ServiceRoute(service_name="ai-extra", queue_name="ai_tasks", task_types=["text_upper"])
        )
        yield dispatcher, ai, nodes, seen


async def test_tasks_run_on_nodes_and_publish_events(redis_url: str) -> None:
    models = {"sentiment": builtin("sentiment"), "upper": upper_then_fail}
    with socket_dirs(1) as dirs:
        async with ai_stack(redis_url, dirs, models) as (dispatcher, ai, nodes, seen):
            done = await dispatcher.dispatch_and_wait(
                TaskRequest(type="text_upper", payload={"text": "hello"}, timeout=30)
            )
            assert done.status == TaskStatus.COMPLETED, done
            assert done.result == {"text": "HELLO"}
            mood = await dispatcher.dispatch_and_wait(
                TaskRequest(
                    type=TaskType.EMOTION_DETECTION,
                    payload={"text": "I love this meeting, great work!"},
                    timeout=30,
                )
            )
            assert mood.status == TaskStatus.COMPLETED, mood
            assert mood.result is not None and mood.result["label"] == "positive"
            failed = await dispatcher.dispatch_and_wait(
                TaskRequest(type="text_upper", payload={"text": "explode"}, timeout=30)
            )
            assert failed.status == TaskStatus.FAILED
            assert failed.error is not None and "model exploded" in failed.error
            bad = await dispatcher.dispatch_and_wait(
                TaskRequest(type="text_upper", payload={"nothing": 1}, timeout=30)
            )
            assert bad.status == TaskStatus.FAILED and "payload needs" in str(bad.error)
            await async_wait_until(lambda: len(seen) == 4, timeout=20)
            names = [name for name, _ in seen]
            assert names.count(events.AI_TASK_COMPLETED) == 2
            assert names.count(events.AI_TASK_FAILED) == 2
            assert {p["task_id"] for _, p in seen} == {
                done.task_id,
                mood.task_id,
                failed.task_id,
                bad.task_id,
            }
            # One work_id per (unit, model), reused by every task.
            assert sorted(nodes[0].works) == ["llm.0", "llm.1"]
            stats = ai.get_stats()
            assert stats["completed"] == 2
            # the two successful types have a latency; the failed runs are not counted
            p50, p99 = stats["latency_p50_seconds"], stats["latency_p99_seconds"]
            assert set(p50) == set(p99) == {"text_upper", str(TaskType.EMOTION_DETECTION)}, p50
            assert all(0 < p50[t] <= p99[t] < 30 for t in p50), (p50, p99)


async def test_load_spreads_over_nodes_and_survives_one_going_away(redis_url: str) -> None:
    calls: list[int] = [0, 0]

    def counting(i: int) -> Any:
        async def run(text: str) -> AsyncIterator[str]:
            calls[i] += 1
            await asyncio.sleep(0.01)
            yield text

        return run

    with socket_dirs(2) as dirs:
        clients = [StackFlowClient(d, call_timeout=30) for d in dirs]
        nodes = [StackFlowNode("llm", counting(i), d) for i, d in enumerate(dirs)]
        async with contextlib.AsyncExitStack() as stack:
            for obj in (*nodes, *clients):
                await stack.enter_async_context(obj)
            ai = AIService(redis_url, clients, {"text_upper": ("llm", "echo")}, workers=32)
            await stack.enter_async_context(ai)
            dispatcher = await stack.enter_async_context(TaskDispatcher(redis_url))
            from meetq.dispatch import ServiceRoute

            dispatcher.register_route(
                ServiceRoute(
                    service_name="ai-extra", queue_name="ai_tasks", task_types=["text_upper"]
                )
            )

            async def run(n: int, tag: str) -> list[Any]:
                return await asyncio.gather(
                    *(
                        dispatcher.dispatch_and_wait(
                            TaskRequest(
                                type="text_upper",
                                payload={"text": f"{tag}{i}"},
                                timeout=30,
                                max_retries=3,
                            )
                        )
                        for i in range(n)
                    )
                )

            await run(1, "warm")  # sets the model up on both hosts; wait until both are
            await async_wait_until(  # ready, or the first burst all lands on the first one
                lambda: (
                    [w for ws in ai.get_stats()["work_ids"].values() for w in ws].count(None) == 0
                ),
                timeout=30,
            )
            calls[0] = calls[1] = 0
            first = await run(100, "a")
            assert [r.result for r in first] == [{"text": f"a{i}"} for i in range(100)]
            assert calls[0] > 10 and calls[1] > 10, calls  # both nodes took work
            health = ai.get_stats()["nodes"]
            assert sorted(health.values()) == ["up, 0 in flight"] * 2, health
            await nodes[1].stop()  # one host's node goes away; its tasks retry elsewhere
            await async_wait_until(
                lambda: (
                    sorted(v.split(",")[0] for v in ai.get_stats()["nodes"].values())
                    == ["down", "up"]
                ),
                timeout=30,
            )
            second = await run(50, "b")
            assert all(r.status == TaskStatus.COMPLETED for r in second), [
                r.error for r in second if r.status != TaskStatus.COMPLETED
            ]
            assert [r.result for r in second] == [{"text": f"b{i}"} for i in range(50)]


async def test_spoken_command_through_the_whole_path(redis_url: str) -> None:
    """espeak-ng audio -> WebSocket -> gateway -> dispatcher -> Redis -> AIService ->
    ASR node (PocketSphinx) -> text back to the WebSocket client."""
    pytest.importorskip("pocketsphinx")
    pytest.importorskip("picows")
    websockets_client = pytest.importorskip("websockets.asyncio.client")
    from meetq.ai.speech import ESPEAK, b64_chunks, speak

    if ESPEAK is None:
        pytest.skip("espeak-ng not installed")
    from meetq.gateway import ClientTaskManager, HmacAuthenticator, make_token
    from meetq.gateway.server import GatewayConfig, GatewayServer

    secret = "test-secret-0123456789abcdef"
    with socket_dirs(1) as dirs:
        async with (
            StackFlowNode("asr", builtin("asr"), dirs[0]),
            StackFlowClient(dirs[0], call_timeout=60, setup_timeout=60) as client,
            AIService(redis_url, client, {TaskType.SPEECH_RECOGNITION: ("asr", "pocketsphinx")}),
            TaskDispatcher(redis_url) as dispatcher,
            ClientTaskManager(dispatcher) as manager,
            GatewayServer(
                manager,
                HmacAuthenticator(secret),
                GatewayConfig(port=0, max_frame_size=512 * 1024),
            ) as gateway,
        ):
            url = f"ws://127.0.0.1:{gateway.port}/?token={make_token(secret, 7, 8, ttl=600)}"
            async with websockets_client.connect(
                url, compression=None, open_timeout=10, max_size=2**22
            ) as ws:
                hello = orjson.loads(await asyncio.wait_for(ws.recv(), 20))
                assert hello["type"] == "welcome"
                for i, phrase in enumerate(("start recording", "mute microphone")):
                    audio = b64_chunks(speak(phrase))
                    frame = {
                        "request_id": f"v{i}",
                        "type": "ai.speech_recognition",
                        "data": {"audio": audio},
                        "timeout": 60,
                    }
                    await ws.send(orjson.dumps(frame).decode())
                    while True:
                        reply = orjson.loads(await asyncio.wait_for(ws.recv(), 60))
                        if reply.get("request_id") == f"v{i}" and reply["status"] != "accepted":
                            break
                    assert reply["status"] == "success", reply
                    assert reply["data"]["text"] == phrase
