"""TaskDispatcher on Redis Cluster vs a single redis-server, in one run: the cost of the
dispatcher's per-slot routing (dispatch/shards.py) end to end.

For each side, one no-op ServiceWorker process per queue and the dispatcher in this
process; the dispatcher sends `--tasks` tasks per queue with `dispatch_batch` (batches of
200, at most `--window` outstanding) and waits for every result. Reported: tasks/s, the
CPU seconds of the dispatcher, the workers and the redis-servers (/proc), and the CPU per
task. Sides: 1 queue on a single server, 1 queue on the cluster, 3 queues on a single
server, 3 queues on 3 shards (one MULTI and one reply reader per slot). Sides alternate
`--rounds` times; medians.

    python benchmarks/bench_cluster_dispatch.py [--tasks 10000] [--rounds 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "support"))

from cluster import Cluster, running_cluster  # noqa: E402
from helpers import running_redis  # noqa: E402
from meetq import ServiceRoute, ServiceWorker, TaskDispatcher, TaskRequest  # noqa: E402
from meetq._redis.cluster import key_slot  # noqa: E402
from meetq._redis.keys import QueueKeys  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
BATCH = 200


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


async def serve(url: str, queue: str) -> None:
    """A no-op ServiceWorker until stdin closes."""
    w = ServiceWorker(url, f"svc-{queue}", queue_name=queue, workers=64)
    w.register_handler(f"noop-{queue}", lambda req: {})
    async with w:
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


async def dispatch_all(url: str, queues: list[str], n: int, window: int) -> float:
    """Seconds to dispatch `n` tasks per queue and receive every result."""
    routes = [ServiceRoute(f"svc-{q}", q, [f"noop-{q}"]) for q in queues]
    total = n * len(queues)
    got = 0
    done = asyncio.Event()
    room = asyncio.Event()
    room.set()

    def on_result(_: object) -> None:
        nonlocal got
        got += 1
        if sent - got < window:
            room.set()
        if got >= total:
            done.set()

    sent = 0
    async with TaskDispatcher(url, routes=routes) as d:
        t0 = time.perf_counter()
        while sent < total:
            await room.wait()
            reqs = [
                TaskRequest(type=f"noop-{queues[(sent + i) % len(queues)]}", timeout=60)
                for i in range(min(BATCH, total - sent))
            ]
            sent += len(reqs)
            if sent - got >= window:
                room.clear()
            await d.dispatch_batch(reqs, on_result)
        await asyncio.wait_for(done.wait(), 300)
        return time.perf_counter() - t0


def run_side(
    url: str, queues: list[str], n: int, window: int, servers: list[int]
) -> dict[str, float]:
    workers = [
        subprocess.Popen(
            [sys.executable, __file__, "--serve", url, q],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for q in queues
    ]
    try:
        for p in workers:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        pids = [p.pid for p in workers]
        w0 = [cpu_seconds(p) for p in pids]
        r0 = [cpu_seconds(s) for s in servers]
        d0 = time.process_time()
        wall = asyncio.run(dispatch_all(url, queues, n, window))
        d1 = time.process_time()
        w1 = [cpu_seconds(p) for p in pids]
        r1 = [cpu_seconds(s) for s in servers]
    finally:
        for p in workers:
            p.kill()
            p.wait()
    tasks = n * len(queues)
    return {
        "tasks": tasks,
        "rate": tasks / wall,
        "dispatcher_cpu": d1 - d0,
        "worker_cpu": sum(b - a for a, b in zip(w0, w1, strict=True)),
        "redis_cpu": sum(b - a for a, b in zip(r0, r1, strict=True)),
        "wall": wall,
    }


def spread_names(cluster: Cluster) -> list[str]:
    found: dict[int, str] = {}
    i = 0
    while len(found) < 3:
        name = f"dq{i}"
        found.setdefault(cluster.master_of(key_slot(QueueKeys(name).prefix)), name)
        i += 1
    return list(found.values())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=10000, help="tasks per queue")
    ap.add_argument("--window", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--serve", nargs=2)
    args = ap.parse_args()
    if args.serve:
        asyncio.run(serve(*args.serve))
        return
    load_before = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    sides: dict[str, list[dict[str, float]]] = {
        "single-1": [],
        "cluster-1": [],
        "single-3": [],
        "cluster-3": [],
    }
    with running_cluster(replicas=0) as cluster, running_redis() as single:
        curl = "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in cluster.ports)
        cpids = [node.proc.pid for node in cluster.nodes if node.proc is not None]
        assert single.proc is not None
        spids = [single.proc.pid]
        names = spread_names(cluster)
        qs, n, w = names, args.tasks, args.window  # the queues drain fully each side
        for _ in range(args.rounds):
            sides["single-1"].append(run_side(single.url, qs[:1], n, w, spids))
            sides["cluster-1"].append(run_side(curl, qs[:1], n, w, cpids))
            sides["single-3"].append(run_side(single.url, qs, n, w, spids))
            sides["cluster-3"].append(run_side(curl, qs, n, w, cpids))
    load_after = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    med = {k: {f: statistics.median(x[f] for x in v) for f in v[0]} for k, v in sides.items()}
    labels = {
        "single-1": "1 queue, single redis-server",
        "cluster-1": "1 queue, cluster",
        "single-3": "3 queues, single redis-server",
        "cluster-3": "3 queues on 3 shards",
    }
    lines = [
        f"# bench_cluster_dispatch.py --tasks {args.tasks} --window {args.window} "
        f"--rounds {args.rounds} (median of the rounds)",
        "",
        f"load average before: {load_before}; after: {load_after}; cores: {os.cpu_count()}",
        "",
        "| side | tasks/s | dispatcher CPU us/task | worker CPU us/task | redis CPU us/task |",
        "|---|---:|---:|---:|---:|",
    ]
    for key, label in labels.items():
        m = med[key]
        per = 1e6 / m["tasks"]
        lines.append(
            f"| {label} | {m['rate']:,.0f} | {m['dispatcher_cpu'] * per:.1f} "
            f"| {m['worker_cpu'] * per:.1f} | {m['redis_cpu'] * per:.1f} |"
        )
    lines += [
        "",
        f"cluster / single, 1 queue: {med['cluster-1']['rate'] / med['single-1']['rate']:.2f}x",
        f"3 shards / single server, 3 queues: "
        f"{med['cluster-3']['rate'] / med['single-3']['rate']:.2f}x",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
