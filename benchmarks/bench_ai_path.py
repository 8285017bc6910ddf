"""(b) The whole AI path under paced load: WebSocket clients -> gateway -> dispatcher ->
Redis -> AIService -> StackFlow node (latency model, 5 ms simulated inference) -> back.

Processes (all on this machine, loopback and ipc only): a private redis-server, one
`meetq ai-node --model latency --latency-ms 5`, one AIService worker process, one gateway
process (dispatcher + ClientTaskManager + GatewayServer) and this load generator, which
opens `--conns` WebSocket sessions and offers each rate for `--seconds`.

Per-hop breakdown from timestamps on one clock (same machine): `in` = client send ->
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
import collections
import contextlib
import os
import statistics
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

from bench_ai import cpu_seconds, pct, private_dir  # noqa: E402
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


async def offer(url: str, rate: int, seconds: float, conns: int) -> dict[str, Any]:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    # The gateway closes a session sending over 200 frames/s (4008); a paced sender that
    # fell behind catches up in bursts, so each session carries at most 50/s on average.
    conns = max(conns, -(-rate // 50))

    from meetq.gateway import make_token

    sockets = []
    for i in range(conns):
        token = make_token(SECRET, 1000 + i, 1, ttl=600)
        ws = await connect(f"{url}?token={token}", compression=None, open_timeout=30)
        await ws.recv()  # welcome
        sockets.append(ws)
    sent_at: dict[str, float] = {}
    rows: list[tuple[float, float, dict[str, Any] | None, str]] = []
    total = int(rate * seconds)
    closed = 0  # requests not sent: their session had been closed by the gateway
    first_error: list[str] = []
    done = asyncio.Event()

    async def reader(ws: Any) -> None:
        with contextlib.suppress(ConnectionClosed):
            await read_all(ws)

    async def read_all(ws: Any) -> None:
        async for raw in ws:
            now = time.time()
            frame = orjson.loads(raw)
            rid = frame.get("request_id")
            if frame.get("status") == "accepted" or rid not in sent_at:
                continue
            data = frame.get("data") if isinstance(frame.get("data"), dict) else None
            rows.append((sent_at.pop(rid), now, data, frame.get("status", "")))
            if frame.get("status") != "success" and not first_error:
                first_error.append(str(frame)[:300])
            if len(rows) + closed >= total:
                done.set()

    readers = [asyncio.ensure_future(reader(ws)) for ws in sockets]
    start = time.perf_counter()
    for i in range(total):  # paced: request i leaves at start + i / rate
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        rid = f"r{i}"
        frame = {"request_id": rid, "type": "ai.text_to_speech", "data": {"text": "hi"}}
        sent_at[rid] = time.time()
        try:
            await sockets[i % conns].send(orjson.dumps({**frame, "timeout": 30}).decode())
        except ConnectionClosed:  # closed by the gateway: this request counts as lost
            sent_at.pop(rid, None)
            closed += 1
    send_s = time.perf_counter() - start
    if len(rows) + closed >= total:
        done.set()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), timeout=60)
    elapsed = time.perf_counter() - start
    for task in readers:
        task.cancel()
    for ws in sockets:
        await ws.close()
    ok = [r for r in rows if r[3] == "success"]
    e2e = [(r[1] - r[0]) * 1000 for r in ok]
    hops: dict[str, list[float]] = {"in": [], "pickup": [], "zmq": [], "back": []}
    for sent, recv, data, _ in ok:
        t = (data or {}).get("timing")
        if not t:
            continue
        created = t.get("created_at")
        hops["pickup"].append((t["picked_up"] - created) * 1000 if created else float("nan"))
        hops["zmq"].append(t["infer_s"] * 1000)
        hops["back"].append((recv - t["done"]) * 1000)
        if created:
            hops["in"].append((created - sent) * 1000)
    return {
        "offered": rate,
        "sent": total,
        "send_rate": total / send_s,
        "completed": len(ok),
        "errors": len(rows) - len(ok),
        "lost": total - len(rows),
        "not_sent": closed,
        "first_error": first_error[0] if first_error else "",
        "statuses": dict(collections.Counter(r[3] for r in rows if r[3] != "success")),
        "achieved": len(ok) / elapsed,
        "p50": statistics.median(e2e) if e2e else float("nan"),
        "p99": pct(e2e, 0.99) if e2e else float("nan"),
        "p999": pct(e2e, 0.999) if e2e else float("nan"),
        "hops": {k: statistics.median(v) if v else float("nan") for k, v in hops.items()},
        "hops_p99": {k: pct(v, 0.99) if v else float("nan") for k, v in hops.items()},
    }


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
        ):
            wait_ready(node)
            wait_ready(worker)
            url = f"ws://127.0.0.1:{port}/"
            for _ in range(300):  # the gateway is listening once a connect succeeds
                try:
                    uvloop.run(offer(url, 50, 0.2, 2))
                    break
                except OSError:
                    time.sleep(0.1)
            print(
                "| offered/s | achieved/s | done | errors | lost | p50 ms | p99 ms | p99.9 ms "
                "| in | pickup | zmq (5 ms model) | back |"
            )
            print("|---|---|---|---|---|---|---|---|---|---|---|---|")
            procs = {"node": node.pid, "ai worker": worker.pid, "gateway": gateway.pid}
            if redis.proc is not None:
                procs["redis"] = redis.proc.pid
            procs["load generator"] = os.getpid()
            cpu_rows = []
            notes: list[str] = []
            for rate in (int(r) for r in args.rates.split(",")):
                before = {k: cpu_seconds(pid) for k, pid in procs.items()}
                began = time.perf_counter()
                r = uvloop.run(offer(url, rate, args.seconds, args.conns))
                span = time.perf_counter() - began
                used = {k: cpu_seconds(pid) - before[k] for k, pid in procs.items()}
                cpu_rows.append((rate, r["completed"], span, used))
                notes.append(
                    f"{rate:,}/s: errors by status {r['statuses'] or 'none'}; "
                    f"not sent (session closed by the gateway) {r['not_sent']}"
                    + (f"; first error frame: {r['first_error']}" if r["first_error"] else "")
                )
                h, h99 = r["hops"], r["hops_p99"]
                cells = " | ".join(
                    f"{h[k]:.1f} / {h99[k]:.1f}" for k in ("in", "pickup", "zmq", "back")
                )
                print(
                    f"| {rate:,} | {r['achieved']:,.0f} | {r['completed']} | {r['errors']} "
                    f"| {r['lost']} | {r['p50']:.1f} | {r['p99']:.1f} | {r['p999']:.1f} "
                    f"| {cells} |",
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
