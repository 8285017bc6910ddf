"""Faults with real node processes: killed and restarted mid-run, frozen (SIGSTOP), gone at
stop; stale and live socket files at start."""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from subprocess import Popen

import pytest

from helpers import async_wait_until
from meetq.ai import (
    InferencePushError,
    NodeUnavailableError,
    SocketInUseError,
    StackFlowClient,
    StackFlowNode,
    StackFlowTimeoutError,
)

NodeFactory = Callable[..., Popen[bytes]]


async def test_node_killed_and_restarted_mid_run(base_dir: Path, node_process: NodeFactory) -> None:
    node = node_process()
    async with StackFlowClient(base_dir, call_timeout=10, setup_timeout=30) as client:
        work_id = await client.setup("llm", "echo")
        assert await client.infer(work_id, "before") == "before"
        outcomes: dict[str, int] = {"ok": 0, "lost": 0, "timeout": 0}
        stop = asyncio.Event()

        async def traffic() -> None:
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    assert await client.infer(work_id, f"m{i}", timeout=2) == f"m{i}"
                    outcomes["ok"] += 1
                except NodeUnavailableError:
                    outcomes["lost"] += 1
                    await asyncio.sleep(0.01)
                except StackFlowTimeoutError:
                    outcomes["timeout"] += 1

        runner = asyncio.ensure_future(traffic())

        def seen(kind: str, n: int) -> bool:
            if runner.done():
                runner.result()  # the traffic died of an error it must never meet: that error
            return outcomes[kind] >= n

        await async_wait_until(lambda: seen("ok", 20), timeout=30)
        node.kill()
        node.wait(timeout=30)
        # The subscription closes with the process: the client notices without a timeout.
        await async_wait_until(lambda: not client.available(work_id), timeout=30)
        await async_wait_until(lambda: seen("lost", 1), timeout=30)
        ok_before_restart = outcomes["ok"]
        node_process()  # a new process; its stale socket files are detected and replaced
        await client.wait_available(work_id, timeout=60)
        await async_wait_until(lambda: seen("ok", ok_before_restart + 20), timeout=30)
        stop.set()
        await runner
        # The caller's work_id stayed valid: it now maps to the new setup on the new node.
        assert client.work_ids[work_id] not in (None, work_id)
        assert await client.infer(work_id, "after") == "after"


async def test_frozen_node_times_out_then_recovers(
    base_dir: Path, node_process: NodeFactory
) -> None:
    node = node_process()
    async with StackFlowClient(base_dir, call_timeout=10, hwm=50) as client:
        work_id = await client.setup("llm", "echo")
        assert await client.infer(work_id, "x") == "x"
        node.send_signal(signal.SIGSTOP)
        try:
            with pytest.raises(StackFlowTimeoutError):
                await client.infer(work_id, "frozen", timeout=0.3)
            # With the node frozen its queue fills: publishing is refused (-4), never blocks.
            pending = []
            with pytest.raises(InferencePushError) as full:
                for i in range(200_000):
                    pending.append(asyncio.ensure_future(client.infer(work_id, str(i), timeout=60)))
                    if i % 100 == 0:
                        await asyncio.sleep(0)
                        for fut in pending:
                            if fut.done():
                                fut.result()
            assert full.value.code == -4
        finally:
            node.send_signal(signal.SIGCONT)
        # Thawed: the queued requests are answered and new ones work again.
        results = await asyncio.gather(*pending, return_exceptions=True)
        assert sum(1 for r in results if isinstance(r, str)) > 0
        assert await client.infer(work_id, "thawed") == "thawed"


async def test_stop_is_prompt_with_a_vanished_node(
    base_dir: Path, node_process: NodeFactory
) -> None:
    node = node_process()
    client = StackFlowClient(base_dir, call_timeout=10, stop_timeout=0.5)
    await client.start()
    work_id = await client.setup("llm", "echo")
    assert await client.infer(work_id, "x") == "x"
    node.send_signal(signal.SIGSTOP)  # alive but silent: the worst case for exit on stop
    waiting = asyncio.ensure_future(client.infer(work_id, "never"))
    started = time.monotonic()
    await client.stop()
    assert time.monotonic() - started < 10  # bound of a failure; normally ~0.5 s
    with pytest.raises(Exception, match="client stopped"):
        await waiting
    assert not (base_dir / "rpc.sys").exists()
    node.send_signal(signal.SIGCONT)


def _stale_socket(path: Path) -> None:
    """Leaves a socket file nobody listens on, as a killed process does."""
    path.parent.mkdir(parents=True, exist_ok=True)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()


async def test_stale_socket_files_are_detected_at_start(
    base_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for name in ("rpc.sys", "rpc.llm", "llm/8000.sock", "llm/5011.sock.llm.inference_url"):
        _stale_socket(base_dir / name)
    async with (
        StackFlowClient(base_dir, call_timeout=20) as client,
        StackFlowNode("llm", str.upper, base_dir),
    ):
        work_id = await client.setup("llm", "m")
        assert await client.infer(work_id, "ok") == "OK"
    assert "removed stale socket file" in caplog.text


async def test_live_socket_file_is_not_stolen(base_dir: Path) -> None:
    async with StackFlowClient(base_dir):
        second = StackFlowClient(base_dir)
        with pytest.raises(SocketInUseError) as in_use:
            await second.start()
        assert "rpc.sys" in str(in_use.value)
        node = StackFlowNode("llm", str, base_dir)
        await node.start()
        try:
            with pytest.raises(SocketInUseError):
                await StackFlowNode("llm", str, base_dir).start()
        finally:
            await node.stop()
    regular = base_dir / "rpc.sys"
    regular.write_text("not a socket")
    with pytest.raises(SocketInUseError):
        await StackFlowClient(base_dir).start()


def test_node_entry_point_parses_its_options(capsys: pytest.CaptureFixture[str]) -> None:
    from meetq.ai.node import parse_args, run_node_from_args

    with pytest.raises(SystemExit) as exc:
        run_node_from_args(["--help"])
    assert exc.value.code == 0
    assert "--latency-ms" in capsys.readouterr().out
    args = parse_args(["--unit", "asr", "--model", "latency", "--latency-ms", "7", "--chunks", "3"])
    assert (args.unit, args.model, args.latency_ms, args.chunks) == ("asr", "latency", 7.0, 3)
    assert run_node_from_args(["--model", "no-such-model", "--base-dir", "/nonexistent"]) == 2
