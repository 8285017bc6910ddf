"""The AI worker alone: TaskDispatcher -> Redis -> AIService -> StackFlow node -> back,
without the gateway, to see what the AIService process costs per task.

Processes: a private redis-server, one `meetq ai-node --model latency --latency-ms 5`, the
AI worker (bench_ai_path's worker role: StackFlowClient + AIService on ai_tasks) and this
load generator, which submits `text_to_speech` tasks at a paced rate through a
TaskDispatcher and waits for every result. Beside each rate: CPU per completed task of
each process (from /proc, over the whole offer), the figure the machine's other load does
not inflate the way it inflates latencies.

    .venv/bin/python benchmarks/bench_ai_worker.py --rates 1000,5000 --seconds 5
    .venv/bin/python benchmarks/bench_ai_worker.py --rates 1000 --seconds 20 --workers 512
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import uvloop

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "support"))
sys.path.insert(0, str(HERE))

from bench_ai import cpu_seconds, pct, private_dir  # noqa: E402
from bench_ai_path import spawn, wait_ready  # noqa: E402
from helpers import running_redis  # noqa: E402


async def offer(url: str, rate: int, seconds: float) -> dict[str, Any]:
    from meetq.dispatch import TaskDispatcher, TaskRequest, TaskResponse, TaskType

    total = int(rate * seconds)
    lat: list[float] = []
    statuses: dict[str, int] = {}
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def failed(exc: BaseException) -> None:
        if not done.done():
            done.set_exception(exc)

    async with TaskDispatcher(url) as d:
        warm = TaskRequest(type=TaskType.TEXT_TO_SPEECH, payload={"text": "w"}, timeout=30)
        await d.dispatch_and_wait(warm)
        start = time.perf_counter()

        def on_result(sent: float) -> Any:
            def cb(resp: TaskResponse) -> None:
                lat.append(time.perf_counter() - sent)
                statuses[resp.status.value] = statuses.get(resp.status.value, 0) + 1
                if len(lat) == total and not done.done():
                    done.set_result(None)

            return cb

        for i in range(total):  # paced: task i leaves at start + i / rate
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            req = TaskRequest(type=TaskType.TEXT_TO_SPEECH, payload={"text": "hi"}, timeout=30)
            d.submit(req, on_result(time.perf_counter()), failed)
        await asyncio.wait_for(done, timeout=120)
        elapsed = time.perf_counter() - start
    ms = [x * 1000 for x in lat]
    return {
        "achieved": total / elapsed,
        "statuses": statuses,
        "p50": statistics.median(ms),
        "p99": pct(ms, 0.99),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rates", default="1000,5000")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=512)
    args = parser.parse_args()
    print(f"# bench_ai_worker  load average {os.getloadavg()}  cores {os.cpu_count()}")
    node_code = "import sys; from meetq.ai.node import run_node_from_args as r; sys.exit(r())"
    path_bench = str(HERE / "bench_ai_path.py")
    with running_redis() as redis, private_dir() as d:
        node_argv = [sys.executable, "-c", node_code, "--model", "latency", "--latency-ms", "5"]
        node_argv += ["--base-dir", str(d), "--log-level", "WARNING"]
        worker_argv = [sys.executable, path_bench, "--role", "worker", "--redis-url", redis.url]
        worker_argv += ["--base-dir", str(d), "--workers", str(args.workers)]
        with spawn(node_argv) as node, spawn(worker_argv) as worker:
            wait_ready(node)
            wait_ready(worker)
            procs = {"node": node.pid, "ai worker": worker.pid}
            if redis.proc is not None:
                procs["redis"] = redis.proc.pid
            procs["load generator"] = os.getpid()
            print(
                "| offered/s | achieved/s | statuses | p50 ms | p99 ms | "
                + " | ".join(f"{k} µs/task (core %)" for k in procs)
                + " |"
            )
            print("|---|---|---|---|---|" + "---|" * len(procs))
            for rate in (int(r) for r in args.rates.split(",")):
                before = {k: cpu_seconds(pid) for k, pid in procs.items()}
                began = time.perf_counter()
                r = uvloop.run(offer(redis.url, rate, args.seconds))
                span = time.perf_counter() - began
                used = {k: cpu_seconds(pid) - before[k] for k, pid in procs.items()}
                n = sum(r["statuses"].values())
                cells = " | ".join(
                    f"{used[k] * 1e6 / max(1, n):,.0f} ({100 * used[k] / span:.0f}%)" for k in procs
                )
                print(
                    f"| {rate:,} | {r['achieved']:,.0f} | {r['statuses']} | {r['p50']:.1f} "
                    f"| {r['p99']:.1f} | {cells} |",
                    flush=True,
                )
            print(f"workers {args.workers}; CPU cells: CPU per task (share of one core)")


if __name__ == "__main__":
    main()
