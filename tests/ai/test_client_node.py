"""StackFlowClient <-> StackFlowNode over ipc in a private directory: the happy paths."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import zmq

from meetq.ai import StackFlowClient, StackFlowNode, UnitNotFoundError
from meetq.ai import protocol as p
from meetq.ai.models import builtin


async def test_setup_infer_stream_exit(base_dir: Path) -> None:
    async with (
        StackFlowClient(base_dir, call_timeout=20) as client,
        StackFlowNode("llm", lambda s: s.upper(), base_dir) as node,
    ):
        work_id = await client.setup("llm", "upper")
        assert work_id == "llm.0"
        assert list(node.works) == ["llm.0"]
        assert await client.infer(work_id, "hello") == "HELLO"
        assert [d async for d in client.stream(work_id, ["a", "b", "c"])] == ["ABC"]
        assert await client.taskinfo("llm") == ["llm.0"]
        assert await client.taskinfo(work_id) == {
            "model": "upper",
            "response_format": "llm.utf-8.stream",
            "input": "llm.utf-8.stream",
            "enoutput": True,
        }
        assert "setup" in await client.list_actions("llm")
        await client.exit(work_id)
        assert node.works == {}
        assert await client.taskinfo("llm") == []
        with pytest.raises(UnitNotFoundError):
            await client.infer(work_id, "gone")
        # The next setup gets a fresh instance number; the old work_id is never reused.
        assert await client.setup("llm", "upper") == "llm.1"


async def test_streamed_output_chunks_in_order(base_dir: Path) -> None:
    async def words(text: str) -> AsyncIterator[str]:
        for word in text.split():
            await asyncio.sleep(0)
            yield word + " "

    async with (
        StackFlowClient(base_dir, call_timeout=20) as client,
        StackFlowNode("llm", words, base_dir),
    ):
        work_id = await client.setup("llm", "words")
        deltas = [d async for d in client.stream(work_id, "one two three four")]
        assert deltas == ["one ", "two ", "three ", "four "]
        assert await client.infer(work_id, "a b") == "a b "


async def test_non_stream_formats_carry_plain_strings(base_dir: Path) -> None:
    async with (
        StackFlowClient(base_dir, call_timeout=20) as client,
        StackFlowNode("llm", lambda s: s[::-1], base_dir),
    ):
        work_id = await client.setup("llm", "rev", response_format="llm.utf-8", input="llm.utf-8")
        assert await client.infer(work_id, "abc") == "cba"
        assert [d async for d in client.stream(work_id, "xyz")] == ["zyx"]


async def test_output_url_mirrors_every_reply(base_dir: Path) -> None:
    async with (
        StackFlowClient(base_dir, call_timeout=20) as client,
        StackFlowNode("llm", lambda s: s, base_dir) as node,
    ):
        work_id = await client.setup("llm", "echo")
        ctx = zmq.Context.instance()
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        out_url = client._registry.slots[work_id].output_url  # type: ignore[union-attr]
        sub.connect(out_url)
        try:
            frames: list[bytes] = []
            for _ in range(200):  # a SUB joins asynchronously: repeat until mirrored
                await client.infer(work_id, "mirror")
                if sub.poll(50):
                    frames.append(sub.recv())
                    break
            assert frames, "nothing mirrored on output_url"
            assert frames[0].endswith(b"\n") and b'"work_id":"llm.0"' in frames[0]
        finally:
            sub.close()
        assert node.works[work_id].enoutput


async def test_200_concurrent_inferences_are_correlated(base_dir: Path) -> None:
    async def slow_echo(text: str) -> AsyncIterator[str]:
        # Finish out of order, in several chunks, so correlation is really exercised.
        for part in (text[:2], text[2:]):
            await asyncio.sleep(random.random() / 200)
            yield part

    async with (
        StackFlowClient(base_dir, call_timeout=30) as client,
        StackFlowNode("llm", slow_echo, base_dir),
    ):
        work_id = await client.setup("llm", "slow")
        inputs = [f"req-{i}-{'x' * (i % 7)}" for i in range(200)]
        outputs = await asyncio.gather(*(client.infer(work_id, s) for s in inputs))
        assert outputs == inputs
        assert client._calls == {}


async def test_requests_of_one_loop_turn_are_batched_in_order(base_dir: Path) -> None:
    # A synchronous model answers inside the node's drain, so its replies are batched
    # there; the client batches every request after the first of a turn. Streamed input
    # chunks of many calls interleave in one batch and must still arrive in index order.
    async with (
        StackFlowClient(base_dir, call_timeout=30) as client,
        StackFlowNode("llm", lambda s: s.upper(), base_dir),
    ):
        work_id = await client.setup("llm", "upper")
        inputs = [[f"{i}-a", f"{i}-b", f"{i}-c"] for i in range(300)]
        futures = [client.infer(work_id, chunks) for chunks in inputs]
        assert client._sender is not None
        assert len(client._sender.outbox) == 3 * 299  # all but the first call wait for the flush
        outputs = await asyncio.gather(*futures)
        assert outputs == ["".join(c).upper() for c in inputs]
        assert client._calls == {} and client._sender.outbox == []


async def test_published_requests_are_the_documented_bytes(base_dir: Path) -> None:
    # A second subscriber on the work_id's inference XPUB sees exactly what the node gets:
    # the frames built by concatenation must equal `inference_frame` byte for byte.
    async with (
        StackFlowClient(base_dir, call_timeout=30) as client,
        StackFlowNode("llm", lambda s: s, base_dir),
    ):
        work_id = await client.setup("llm", "echo")
        slot = client._registry.slots[work_id]  # type: ignore[union-attr]
        sub = zmq.Context.instance().socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(slot.inference_url)
        try:
            while True:  # a SUB joins asynchronously: repeat until it sees a request
                await client.infer(work_id, "warm")
                if sub.poll(10):
                    break
            while sub.poll(100):
                sub.recv()
            stream, plain = "llm.utf-8.stream", "llm.utf-8"
            cases: list[tuple[str | list[str], str | None, str, list[Any]]] = [
                ('grüß "x"\n', None, stream, [p.chunk('grüß "x"\n', 0, True)]),
                ("plain", plain, plain, ["plain"]),
                (["a", "b"], None, stream, [p.chunk("a", 0, False), p.chunk("b", 1, True)]),
                (["a", "b"], plain, plain, ["ab"]),
            ]
            for data, obj, fmt, bodies in cases:
                await client.infer(work_id, data, object=obj)
                frames = []
                for _ in bodies:
                    assert sub.poll(10_000), data
                    frames.append(sub.recv())
                rid = orjson.loads(frames[0])["request_id"]
                want = [p.inference_frame(client.reply_url, rid, work_id, fmt, b) for b in bodies]
                assert frames == want, data
        finally:
            sub.close()


async def test_two_work_ids_and_two_units(base_dir: Path) -> None:
    async with (
        StackFlowClient(base_dir, call_timeout=20) as client,
        StackFlowNode("llm", lambda s: "llm:" + s, base_dir),
        StackFlowNode("asr", builtin("echo"), base_dir),
    ):
        a = await client.setup("llm", "m1")
        b = await client.setup("llm", "m2")
        c = await client.setup("asr", "echo")
        assert (a, b, c) == ("llm.0", "llm.1", "asr.0")
        got = await asyncio.gather(client.infer(a, "1"), client.infer(b, "2"), client.infer(c, "3"))
        assert got == ["llm:1", "llm:2", "3"]
        assert sorted(await client.taskinfo("llm")) == ["llm.0", "llm.1"]


async def test_sql_store_and_sys_actions(base_dir: Path) -> None:
    async with StackFlowClient(base_dir) as client, StackFlowNode("llm", str, base_dir):
        work_id = await client.setup("llm", "m")
        ctx = zmq.Context.instance()
        req = ctx.socket(zmq.REQ)
        req.setsockopt(zmq.LINGER, 0)
        req.connect(f"ipc://{base_dir}/rpc.sys")

        async def call(action: bytes, payload: bytes) -> bytes:
            req.send_multipart([action, payload])
            # the client answers on this loop: wait for the reply off it, with a deadline
            if not await asyncio.get_running_loop().run_in_executor(None, req.poll, 10_000):
                raise AssertionError("rpc.sys did not answer")
            return bytes(req.recv())

        try:
            assert (await call(b"sql_select", f"{work_id}.out_port".encode())).startswith(b"ipc://")
            assert await call(b"sql_set", b'{"key":"k1","val":"v1"}') == b"Success"
            assert await call(b"sql_select", b"k1") == b"v1"
            assert await call(b"sql_unset", b"k1") == b"Success"
            assert await call(b"sql_select", b"k1") == b""
            assert await call(b"sql_set", b"not json") == b"False"
            assert b"register_unit" in await call(b"list_action", b"")
            assert await call(b"bogus", b"") == b"NotAction"
            assert await call(b"release_unit", b"llm.99") == b"False"
        finally:
            req.close()


async def test_stop_removes_own_socket_files(base_dir: Path) -> None:
    client = StackFlowClient(base_dir)
    node = StackFlowNode("llm", str, base_dir)
    await client.start()
    await node.start()
    work_id = await client.setup("llm", "m")
    assert await client.infer(work_id, "x") == "x"
    socks = set(_socket_names(base_dir))
    assert {"rpc.sys", "rpc.llm", "8000.sock"} <= socks
    assert any(name.endswith("inference_url") for name in socks)
    assert any(name.endswith("output_url") for name in socks)
    await client.stop()  # exits its work_ids on the node first
    assert node.works == {}
    await node.stop()
    assert _socket_names(base_dir) == []


def _socket_names(base_dir: Path) -> list[str]:
    return [p.name for p in base_dir.rglob("*") if p.is_socket()]
