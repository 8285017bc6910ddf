"""Every error path: the node answers with the protocol's error object, the client raises
the MeetqError subclass carrying that code and message."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import zmq

from helpers import async_wait_until
from meetq import MeetqError
from meetq.ai import (
    InferenceDataEmptyError,
    ModelLoadError,
    NoSuchActionError,
    StackFlowClient,
    StackFlowNode,
    StackFlowTimeoutError,
    TaskFullError,
    TaskRunError,
    UnitNotFoundError,
)
from meetq.ai import protocol as p


class RawPeer:
    """Test-side raw sockets: a REQ to the node's rpc and a PULL as the reply URL."""

    def __init__(self, base_dir: Path) -> None:
        self.ctx = zmq.Context()
        self.url = f"ipc://{base_dir}/raw-reply.sock"
        self.pull = self.ctx.socket(zmq.PULL)
        self.pull.setsockopt(zmq.LINGER, 0)
        self.pull.bind(self.url)
        self.req = self.ctx.socket(zmq.REQ)
        self.req.setsockopt(zmq.LINGER, 0)
        self.req.connect(f"ipc://{base_dir}/rpc.llm")

    async def _poll(self, sock: zmq.Socket[Any], timeout: float = 20.0) -> bytes:
        await async_wait_until(lambda: sock.poll(0), timeout=timeout)
        return bytes(sock.recv())

    async def rpc(self, action: bytes, payload: bytes) -> bytes:
        self.req.send_multipart([action, payload])
        return await self._poll(self.req)

    async def reply(self) -> dict[str, Any]:
        frame = await self._poll(self.pull)
        assert frame.endswith(b"\n")
        obj: dict[str, Any] = orjson.loads(frame)
        assert list(obj) == sorted(obj)
        return obj

    def close(self) -> None:
        self.ctx.destroy(linger=0)


async def _node_pair(base_dir: Path, model: Any, **node_kw: Any) -> tuple[Any, Any]:
    client = StackFlowClient(base_dir, call_timeout=20)
    node = StackFlowNode("llm", model, base_dir, **node_kw)
    await client.start()
    await node.start()
    return client, node


async def test_client_raises_the_node_error_codes(base_dir: Path) -> None:
    def model(text: str) -> str:
        if text == "boom":
            raise RuntimeError("model exploded")
        return text

    client, node = await _node_pair(base_dir, {"echo": model})
    try:
        with pytest.raises(ModelLoadError) as load:
            await client.setup("llm", "no-such-model")
        assert load.value.code == -5 and "no-such-model" in load.value.message
        work_id = await client.setup("llm", "echo")
        with pytest.raises(TaskRunError) as run:
            await client.infer(work_id, "boom")
        assert run.value.code == -11 and "model exploded" in run.value.message
        with pytest.raises(InferenceDataEmptyError) as empty:
            await client.infer(work_id, "")
        assert empty.value.code == -24
        with pytest.raises(UnitNotFoundError) as unknown:
            await client.exit("llm.99")
        assert unknown.value.code == -6 and isinstance(unknown.value, MeetqError)
        with pytest.raises(UnitNotFoundError):
            await client.taskinfo("llm.42")
        # The work_id still works after all of that.
        assert await client.infer(work_id, "fine") == "fine"
    finally:
        await client.stop()
        await node.stop()


async def test_task_full(base_dir: Path) -> None:
    gate = asyncio.Event()

    async def held(text: str) -> AsyncIterator[str]:
        await gate.wait()
        yield text

    client, node = await _node_pair(base_dir, held, max_tasks=1)
    try:
        work_id = await client.setup("llm", "held")
        first = asyncio.ensure_future(client.infer(work_id, "one"))
        await async_wait_until(lambda: node.works[work_id].running == 1, timeout=20)
        with pytest.raises(TaskFullError) as full:
            await client.infer(work_id, "two")
        assert full.value.code == -21
        gate.set()
        assert await first == "one"
    finally:
        await client.stop()
        await node.stop()


async def test_node_answers_malformed_input_with_error_objects(base_dir: Path) -> None:
    client, node = await _node_pair(base_dir, str)
    raw = RawPeer(base_dir)
    try:
        # Unknown rpc action -> NotAction; list_action -> the actions.
        assert await raw.rpc(b"dance", b"") == b"NotAction"
        assert orjson.loads(await raw.rpc(b"list_action", b""))["actions"][0] == "setup"
        # A payload whose length byte overruns the frame is answered, not ignored.
        bad = orjson.loads(await raw.rpc(b"setup", b"\x7fshort"))
        assert bad["error"]["code"] == -2
        # Setup over the raw sockets: the work_id's default reply URL is ours.
        req = p.setup_request(
            "s1", "llm", "m", response_format="llm.utf-8.stream", input="llm.utf-8.stream"
        )
        assert await raw.rpc(b"setup", p.lp(raw.url.encode(), p.dumps(req))) == b"None"
        ok = await raw.reply()
        assert ok["request_id"] == "s1" and ok["error"] == {"code": 0, "message": ""}
        work_id = ok["work_id"]
        slot = client._registry.slots[work_id]  # type: ignore[union-attr]
        await asyncio.wait_for(slot.subscribed.wait(), 20)

        def publish(obj: Any) -> None:
            slot.publish(obj if isinstance(obj, bytes) else p.dumps(obj))

        base = {
            "zmq_com": raw.url,
            "work_id": work_id,
            "action": "inference",
            "object": "llm.utf-8.stream",
        }
        publish(b"{not json")  # no zmq_com: answered on the setup's reply URL
        assert (await raw.reply())["error"]["code"] == -2
        publish({**base, "request_id": "a", "data": {"delta": "x", "index": 1, "finish": True}})
        err = await raw.reply()
        assert (err["request_id"], err["error"]["code"]) == ("a", -25)
        publish({**base, "request_id": "b", "data": {"delta": "x", "index": 0, "finish": False}})
        publish({**base, "request_id": "b", "data": {"delta": "y", "index": 2, "finish": True}})
        assert (await raw.reply())["error"] == {"code": -25, "message": "index 2, expected 1"}
        publish({**base, "request_id": "c", "work_id": "llm.77", "data": "x"})
        assert (await raw.reply())["error"]["code"] == -6
        publish({**base, "request_id": "d", "action": "train", "data": "x"})
        assert (await raw.reply())["error"]["code"] == -18
        publish({**base, "request_id": "e", "object": "llm.utf-8", "data": ""})
        assert (await raw.reply())["error"]["code"] == -24
        publish({**base, "request_id": "f", "data": None})
        assert (await raw.reply())["error"]["code"] == -24
        publish({**base, "request_id": "g", "data": {"delta": 5, "index": 0}})
        assert (await raw.reply())["error"]["code"] == -2
        # And a good streamed request after the bad ones: chunks 0..n-1, then the output.
        publish({**base, "request_id": "h", "data": {"delta": "he", "index": 0, "finish": False}})
        publish({**base, "request_id": "h", "data": {"delta": "llo", "index": 1, "finish": True}})
        first, last = await raw.reply(), await raw.reply()
        assert first["data"] == {"delta": "hello", "finish": False, "index": 0}
        assert last["data"] == {"delta": "", "finish": True, "index": 1}
        assert first["object"] == "llm.utf-8.stream" and last["request_id"] == "h"
        # exit of an unknown work_id is an error object, not silence.
        exit_req = p.control_request("x1", "llm.9", "exit")
        assert await raw.rpc(b"exit", p.lp(raw.url.encode(), p.dumps(exit_req))) == b"None"
        assert (await raw.reply())["error"]["code"] == -6
        bad_json = await raw.rpc(b"exit", p.lp(raw.url.encode(), b"{nope"))
        assert bad_json == b"None"
        assert (await raw.reply())["error"]["code"] == -2
    finally:
        raw.close()
        await client.stop()
        await node.stop()


async def test_unknown_node_action_is_no_such_action(base_dir: Path) -> None:
    async with (
        StackFlowClient(base_dir, call_timeout=20) as client,
        StackFlowNode("llm", str, base_dir),
    ):
        with pytest.raises(NoSuchActionError):
            await client._control(
                "llm",
                "dance",
                "r",
                {"request_id": "r", "work_id": "llm"},
                asyncio.get_running_loop().time() + 20,
            )


async def test_every_call_has_a_deadline(base_dir: Path) -> None:
    async def never(text: str) -> str:
        await asyncio.Event().wait()
        return text

    client, node = await _node_pair(base_dir, never)
    try:
        work_id = await client.setup("llm", "never")
        with pytest.raises(StackFlowTimeoutError):
            await client.infer(work_id, "x", timeout=0.2)
        with pytest.raises(StackFlowTimeoutError):
            async for _ in client.stream(work_id, "x", timeout=0.2):
                pass
        assert client._calls == {}
        # No node for this unit at all: setup times out instead of hanging.
        with pytest.raises(StackFlowTimeoutError):
            await client.setup("nobody", "m", timeout=0.3)
        # The REQ of that unit was replaced; a later call still gets its own deadline.
        with pytest.raises(StackFlowTimeoutError):
            await client.list_actions("nobody", timeout=0.2)
    finally:
        await client.stop()
        await node.stop()
