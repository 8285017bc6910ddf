"""(b) The whole AI path under paced load: WebSocket clients -> gateway -> dispatcher ->
Redis -> AIService -> StackFlow node (latency model, 5 ms simulated inference) -> back.

Processes (all on this machine, loopback and ipc only): a private redis-server, one
`meetq ai-node --model latency --latency-ms 5`, one AIService worker process, one gateway
process (dispatcher + ClientTaskManager + GatewayServer) and the load generator in a
process of its own (`gateway_load.py`, the gateway benchmark's picows clients), which
opens the WebSocket sessions once (`--conns`, at least one per 50/s of the highest rate)
and offers each rate for `--seconds`, each request timed from its scheduled send.

Per-hop breakdown from timestamps on one clock (same machine): `in` = scheduled send ->
`created_at` (WebSocket in, gateway, dispatch until the task is stamped), `pickup` =
`created_at` -> handler start in the AI worker (publish, Redis, fetch), `zmq` = the
StackFlow round trip including the 5 ms model, `back` = handler end -> final frame at the
client (ack + reply script, dispatcher BLPOP, gateway push, WebSocket out).

Beside each rate, the CPU each process spent per completed task (from /proc, over the
whole offer): a figure the machine's other load does not inflate the way it inflates
latencies, and the share of a core each process got (on a loaded machine the path is
bound by that share, not by its own CPU).

    .venv/bin/python benchmarks/bench_ai_path.py --rates 1000,5000,10000 --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import uvloop

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "support"))
sys.path.insert(0, str(HERE))

from bench_ai import cpu_seconds, private_dir  # noqa: E402
from helpers import free_port, running_redis  # noqa: E402

SECRET = "bench-secret-0123456789abcdef"


def worker_main(redis_url: str, base_dir: str, workers: int) -> None:
    """The AI worker process: StackFlowClient + AIService on ai_tasks."""
    from meetq.ai import AIService, StackFlowClient
    from meetq.dispatch import TaskType

    async def run() -> None:
        client = StackFlowClient(base_dir, call_timeout=30, setup_timeout=60)
        models = {TaskType.TEXT_TO_SPEECH: ("llm", "latency")}
        async with client, AIService(redis_url, client, models, workers=workers, timing=True):
            work = await client.setup("llm", "latency")  # warm: the node is up
            await client.infer(work, "warm")
            print("ready", flush=True)
            await asyncio.Event().wait()

    uvloop.run(run())


@contextlib.contextmanager
def spawn(argv: list[str], env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, env={**os.environ, **(env or {})})
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=30)


def wait_ready(proc: subprocess.Popen[bytes], word: bytes = b"ready") -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith(word), line


class LoadGenerator:
    """gateway_load.py in its own process (picows clients, the gateway benchmark's), so
    what it costs is its own column and not this process's; it opens `conns`
    sessions once and offers each rate over the first of them."""

    def __init__(self, url: str, conns: int) -> None:
        argv = [sys.executable, str(HERE / "gateway_load.py"), url, str(conns), SECRET]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        words = self.proc.stdout.readline().split()
        if not words or words[0] != b"connected":
            self.close()
            raise RuntimeError(f"load generator failed: {words!r}")

    def offer(self, rate: int, seconds: float, conns: int) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        data = orjson.dumps({"text": "hi"}).decode()
        line = f"rate {rate} {seconds} ai.text_to_speech {conns} {data}\n"
        self.proc.stdin.write(line.encode())
        self.proc.stdin.flush()
        result: dict[str, Any] = orjson.loads(self.proc.stdout.readline())
        return result

    def close(self) -> None:
        with contextlib.suppress(Exception):
            assert self.proc.stdin is not None
            self.proc.stdin.write(b"quit\n")
            self.proc.stdin.flush()
            self.proc.wait(30)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def sessions_for(rate: int, conns: int) -> int:
    """The gateway closes a session sending over 200 frames/s (4008); a paced sender that
    falls behind catches up in bursts, so each session carries at most 50/s on average."""
    return max(conns, -(-rate // 50))


def wait_listening(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)  # the gateway is still starting


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--role", default="bench")
    parser.add_argument("--redis-url")
    parser.add_argument("--base-dir")
    parser.add_argument("--workers", type=int, default=512)
    parser.add_argument("--rates", default="1000,5000,10000")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--conns", type=int, default=100)
    args = parser.parse_args()
    if args.role == "worker":
        worker_main(args.redis_url, args.base_dir, args.workers)
        return
    print(f"# bench_ai_path  load average {os.getloadavg()}  cores {os.cpu_count()}")
    node_code = "import sys; from meetq.ai.node import run_node_from_args as r; sys.exit(r())"
    gw_code = "import sys; from meetq.gateway.server import run_from_args as r; sys.exit(r())"
    port = free_port()
    with running_redis() as redis, private_dir() as d:
        node_argv = [sys.executable, "-c", node_code, "--model", "latency", "--latency-ms", "5"]
        node_argv += ["--base-dir", str(d), "--log-level", "WARNING"]
        worker_argv = [sys.executable, __file__, "--role", "worker", "--redis-url", redis.url]
        worker_argv += ["--base-dir", str(d), "--workers", str(args.workers)]
        gw_argv = [sys.executable, "-c", gw_code, "--redis-url", redis.url]
        gw_argv += ["--port", str(port), "--max-sessions-per-user", "8"]
        with (
            spawn(node_argv) as node,
            spawn(worker_argv) as worker,
            spawn(gw_argv, {"MEETQ_GATEWAY_SECRET": SECRET}) as gateway,
            contextlib.ExitStack() as stack,
        ):
            wait_ready(node)
            wait_ready(worker)
            wait_listening(port)
            rates = [int(r) for r in args.rates.split(",")]
            load = LoadGenerator(
                f"ws://127.0.0.1:{port}/", max(sessions_for(r, args.conns) for r in rates)
            )
            stack.callback(load.close)
            load.offer(50, 0.2, 2)  # warm: the whole path answers
            print(
                "| offered/s | achieved/s | done | errors | lost | p50 ms | p99 ms | p99.9 ms "
                "| in | pickup | zmq (5 ms model) | back |"
            )
            print("|---|---|---|---|---|---|---|---|---|---|---|---|")
            procs = {"node": node.pid, "ai worker": worker.pid, "gateway": gateway.pid}
            if redis.proc is not None:
                procs["redis"] = redis.proc.pid
            procs["load generator"] = load.proc.pid
            cpu_rows = []
            notes: list[str] = []
            for rate in rates:
                before = {k: cpu_seconds(pid) for k, pid in procs.items()}
                began = time.perf_counter()
                r = load.offer(rate, args.seconds, sessions_for(rate, args.conns))
                span = time.perf_counter() - began
                used = {k: cpu_seconds(pid) - before[k] for k, pid in procs.items()}
                cpu_rows.append((rate, r["done"], span, used))
                notes.append(
                    f"{rate:,}/s: errors by status {r['statuses'] or 'none'}; "
                    f"not sent (session closed by the gateway) {r['not_sent']}; "
                    f"load generator lag p99: send {r['load_send_lag_p99_ms']} ms, "
                    f"loop {r['load_loop_lag_p99_ms']} ms"
                    + (f"; first error frame: {r['first_error']}" if r["first_error"] else "")
                )
                hops = r["hops_ms"]
                cells = " | ".join(
                    f"{hops[k][0]:.1f} / {hops[k][1]:.1f}" if k in hops else "-"
                    for k in ("in", "pickup", "zmq", "back")
                )
                print(
                    f"| {rate:,} | {r['achieved']:,.0f} | {r['done']} | {r['errors']} "
                    f"| {r['lost'] + r['not_sent']} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} "
                    f"| {r['p999_ms']:.1f} | {cells} |",
                    flush=True,
                )
            print("hop cells: p50 / p99 ms")
            for note in notes:
                print(note)
            print()
            print("| offered/s | " + " | ".join(f"{k} µs/task (core %)" for k in procs) + " |")
            print("|---|" + "---|" * len(procs))
            for rate, completed, span, used in cpu_rows:
                cells = " | ".join(
                    f"{used[k] * 1e6 / max(1, completed):,.0f} ({100 * used[k] / span:.0f}%)"
                    for k in procs
                )
                print(f"| {rate:,} | {cells} |")
            print("CPU cells: CPU per completed task (share of one core over the offer)")


if __name__ == "__main__":
    main()
