"""meetq-only measurements of `RedisMessageQueue` on a private redis-server.

    python benchmarks/bench_queue_self.py [--jobs 20000] [--json out.json]

- drain: 20,000 queued no-op jobs (~100-byte payload) processed by one worker process
  (this one), jobs/s from `start()` until the last handler ran; sync and async handlers;
- Redis commands per job during the drain, from INFO commandstats before/after: round trips
  (the EVALSHA/BLPOP calls the client sends) and every command including those run inside
  the Lua scripts;
- enqueue -> start latency (p50/p99) at a steady 500 jobs/s and 10,000 jobs/s, with the
  publisher in a separate process publishing on a fixed schedule; each run alternates with
  the same measurement done without a queue library (LPUSH / BRPOP of the same JSON), the
  floor this machine and loopback allow at that moment;
- between the latency runs, how much of the time this machine's CPU ran several times
  slower than usual (`benchutil.cpu_slowdowns`): the episodes the tails land in.

Starts and stops its own redis-server on a random loopback port. Absolute numbers depend on
the machine; the peer comparison lives in the side-by-side harness.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import redis
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "support"))

from benchutil import cpu_slowdowns
from helpers import running_redis
from meetq import Message, RedisMessageQueue, backend
from paced import consume_raw, publisher_command

PAYLOAD = {"user_id": 12345, "meeting_id": 67890, "blob": "x" * 48}  # ~100 bytes encoded


def commandstats(url: str) -> dict[str, int]:
    r = redis.Redis.from_url(url)
    try:
        info = r.info("commandstats")
    finally:
        r.close()
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in info.items()}


async def drain(url: str, jobs: int, kind: str, workers: int) -> dict[str, Any]:
    name = f"drain-{kind}"
    q = RedisMessageQueue(url, name, workers=workers)
    t_pub = time.perf_counter()
    for i in range(0, jobs, 5000):
        await q.publish_batch(
            [Message(type="noop", payload=PAYLOAD) for _ in range(min(5000, jobs - i))]
        )
    enqueue_s = time.perf_counter() - t_pub
    done = asyncio.Event()
    count = 0

    def sync_noop(msg: Message) -> None:
        nonlocal count
        count += 1
        if count == jobs:
            done.set()

    async def async_noop(msg: Message) -> None:
        sync_noop(msg)

    q.register_handler("noop", sync_noop if kind == "sync" else async_noop)
    before = commandstats(url)
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    await q.start()
    await done.wait()
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    await q.stop()
    after = commandstats(url)
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    delta.pop("info", None)
    round_trips = sum(delta.get(k, 0) for k in ("evalsha", "blpop", "eval", "script"))
    return {
        "handler": kind,
        "workers": workers,
        "jobs": jobs,
        "enqueue_jobs_per_s": jobs / enqueue_s,
        "drain_jobs_per_s": jobs / elapsed,
        "worker_cpu_us_per_job": cpu / jobs * 1e6,
        "round_trips_per_job": round_trips / jobs,
        "redis_cmds_per_job_incl_lua": sum(delta.values()) / jobs,
        "commands": {k: v for k, v in sorted(delta.items()) if v},
    }


async def raw_latency(url: str, rate: float, seconds: float) -> dict[str, Any]:
    """The same paced publisher and measurement with no queue library: LPUSH / BRPOP of the
    message JSON on meetq's `RespConnection` (what loopback and this machine allow)."""
    name = f"raw-lat-{int(rate)}"
    total = int(rate * seconds)
    lat: list[float] = []
    deadline = time.monotonic() + seconds + 30
    proc = await asyncio.create_subprocess_exec(
        *publisher_command(url, name, rate, seconds, "raw"), stdout=asyncio.subprocess.PIPE
    )
    try:
        await consume_raw(
            url,
            name,
            lambda body: lat.append(time.time() - orjson.loads(body)["payload"]["t"]),
            lambda: len(lat) >= total or time.monotonic() > deadline,
        )
    finally:
        await asyncio.wait_for(proc.communicate(), 30)
    lat.sort()
    return {
        "rate": rate,
        "jobs": len(lat),
        "p50_ms": lat[len(lat) // 2] * 1e3,
        "p99_ms": lat[int(len(lat) * 0.99)] * 1e3,
        "max_ms": lat[-1] * 1e3,
    }


async def latency(url: str, rate: float, seconds: float, workers: int) -> dict[str, Any]:
    name = f"lat-{int(rate)}"
    q = RedisMessageQueue(url, name, workers=workers)
    total = int(rate * seconds)
    lat: list[float] = []
    done = asyncio.Event()

    def handler(msg: Message) -> None:
        lat.append(time.time() - msg.payload["t"])
        if len(lat) == total:
            done.set()

    q.register_handler("lat", handler)
    before = commandstats(url)
    async with q:
        proc = await asyncio.create_subprocess_exec(
            *publisher_command(url, name, rate, seconds, "meetq"), stdout=asyncio.subprocess.PIPE
        )
        try:
            await asyncio.wait_for(done.wait(), seconds + 30)
        finally:
            out, _ = await asyncio.wait_for(proc.communicate(), 30)
    after = commandstats(url)
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    report = orjson.loads(out)
    singles, batches = report["singles"], report["batches"]
    # The worker's round trips are its EVALSHAs (one paired behind a BLPOP is one write and
    # one reply round). The publisher's are not counted: a single publish is one EVALSHA, a
    # batch of new messages one MULTI/EXEC.
    publisher_calls = singles + batches
    worker_evalsha = delta.get("evalsha", 0) - singles
    round_trips = worker_evalsha
    lat.sort()
    return {
        "rate": rate,
        "jobs": total,
        "p50_ms": lat[len(lat) // 2] * 1e3,
        "p99_ms": lat[int(len(lat) * 0.99)] * 1e3,
        "max_ms": lat[-1] * 1e3,
        "round_trips_per_job": round_trips / total,
        "worker_commands_per_job": (worker_evalsha + delta.get("blpop", 0)) / total,
        "publisher_calls_per_job": publisher_calls / total,
    }


async def run(url: str, jobs: int, workers: int, repeats: int) -> dict[str, Any]:
    out: dict[str, Any] = {"backend": backend(), "drain": [], "latency": []}
    for kind in ("sync", "async"):
        out["drain"].append(await drain(url, jobs, kind, workers))
    out["raw_latency"] = []
    out["cpu_slowdowns"] = [cpu_slowdowns(2.0)]
    for rate, seconds in ((500.0, 6.0), (10_000.0, 3.0)):
        for _ in range(repeats):  # alternating, so both see the same machine
            out["latency"].append(await latency(url, rate, seconds, workers))
            out["raw_latency"].append(await raw_latency(url, rate, seconds))
            out["cpu_slowdowns"].append(cpu_slowdowns(2.0))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=20_000)
    ap.add_argument("--workers", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3, help="latency runs per rate")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    load_before = os.getloadavg()
    with running_redis() as server:
        result = uvloop.run(run(server.url, args.jobs, args.workers, args.repeats))
    result["loadavg"] = [load_before, os.getloadavg()]
    print(
        f"backend {result['backend']}, {os.cpu_count()} CPUs, load average "
        f"{load_before[0]:.2f} before / {os.getloadavg()[0]:.2f} after (other processes skew "
        "latency tails on a shared machine)"
    )
    for d in result["drain"]:
        print(
            f"drain {d['jobs']} jobs, {d['handler']} handler, workers={d['workers']}: "
            f"{d['drain_jobs_per_s']:,.0f} jobs/s, {d['worker_cpu_us_per_job']:.1f} us CPU/job, "
            f"{d['round_trips_per_job']:.3f} round trips/job, "
            f"{d['redis_cmds_per_job_incl_lua']:.2f} redis cmds/job incl. Lua "
            f"(enqueue {d['enqueue_jobs_per_s']:,.0f} jobs/s)"
        )
    for lt in result["latency"]:
        print(
            f"latency at {lt['rate']:,.0f} jobs/s ({lt['jobs']} jobs): p50 {lt['p50_ms']:.2f} ms, "
            f"p99 {lt['p99_ms']:.2f} ms, max {lt['max_ms']:.2f} ms, "
            f"worker: {lt['round_trips_per_job']:.2f} round trips/job, "
            f"{lt['worker_commands_per_job']:.2f} commands/job "
            f"(publisher {lt['publisher_calls_per_job']:.2f} calls/job)"
        )
    for lt in result["raw_latency"]:
        print(
            f"raw LPUSH/BRPOP floor at {lt['rate']:,.0f} jobs/s ({lt['jobs']} jobs): "
            f"p50 {lt['p50_ms']:.2f} ms, p99 {lt['p99_ms']:.2f} ms, max {lt['max_ms']:.2f} ms"
        )
    slow = result["cpu_slowdowns"]
    print(
        "CPU slowdown episodes between the latency runs (share of 100-us slices with under a "
        "quarter of the usual work done; episodes per second): "
        + ", ".join(
            f"{c['slow_fraction']:.1%} ({c['episodes'] / c['seconds']:.1f}/s)" for c in slow
        )
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
