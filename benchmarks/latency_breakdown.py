"""Where enqueue -> start latency goes, meetq against the library-free floor.

    python benchmarks/latency_breakdown.py [--rate 500] [--seconds 6] [--repeats 2]

The paced publisher (`paced.py`) in a process of its own and this worker process, as in
`bench_queue_self.py`, with three timestamps per message besides its creation: the
publisher's last socket write before its publish returned, the worker's last socket read
before the handler ran, and the handler's start. So each latency splits into create ->
write (publisher CPU), write -> arrive (redis-server and the wake-ups of both processes)
and arrive -> handler (worker CPU). The timestamps come from wrapping `RespConnection`'s
methods in both processes: a diagnostic, not an API. Also prints CPU per message of each
process and of redis-server, and the server time per message of the commands on the path
(`INFO commandstats`), and how the pickups over 1 ms bunch up: a burst is a run of them
created less than 20 ms apart, which is what this machine's slowdown episodes look like.

The floor ("raw") is LPUSH / BRPOP of the same JSON on the same connection class.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import redis
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "support"))

from helpers import running_redis
from meetq import RedisMessageQueue, backend
from meetq import connection as conn_module
from paced import consume_raw, publisher_command

arrived = [0.0]


def _stamp_reads() -> None:
    original = conn_module.RespConnection.data_received

    def stamped(self: Any, data: bytes) -> None:
        arrived[0] = time.time()
        original(self, data)

    conn_module.RespConnection.data_received = stamped  # type: ignore[method-assign]


def _pct(xs: list[float], q: float) -> float:
    return xs[min(len(xs) - 1, int(len(xs) * q))]


async def run_once(url: str, kind: str, rate: float, seconds: float) -> dict[str, Any]:
    name = f"{kind}-{time.monotonic_ns()}"
    total = int(rate * seconds)
    seen: dict[str, tuple[float, float]] = {}  # id -> (arrived, handler start)
    done = asyncio.Event()

    def on_message(mid: str) -> None:
        seen[mid] = (arrived[0], time.time())
        if len(seen) == total:
            done.set()

    r = redis.Redis.from_url(url)
    stats0, cpu_server0 = r.info("commandstats"), r.info("cpu")
    cpu0 = time.process_time()
    if kind == "raw":
        q: Any = None
        worker = asyncio.ensure_future(
            consume_raw(url, name, lambda body: on_message(orjson.loads(body)["id"]), done.is_set)
        )
    else:
        q = RedisMessageQueue(url, name, workers=100)
        q.register_handler("lat", lambda m: on_message(m.id))
        await q.start()
    proc = await asyncio.create_subprocess_exec(
        *publisher_command(url, name, rate, seconds, kind, stamp_writes=True),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        await asyncio.wait_for(done.wait(), seconds + 30)
    finally:
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
        if q is not None:
            await q.stop()
        else:
            done.set()
            await worker
    cpu = time.process_time() - cpu0
    stats1, cpu_server1 = r.info("commandstats"), r.info("cpu")
    r.close()
    published = orjson.loads(out)
    segments: dict[str, list[float]] = {
        seg: [] for seg in ("create->write", "write->arrive", "arrive->handler", "total")
    }
    slow: list[float] = []  # creation times of the pickups over 1 ms
    for mid, created, wrote in published["rows"]:
        got, started = seen[mid]
        segments["create->write"].append(wrote - created)
        segments["write->arrive"].append(got - wrote)
        segments["arrive->handler"].append(started - got)
        segments["total"].append(started - created)
        if started - created > 1e-3:
            slow.append(created)
    slow.sort()
    windows = sum(1 for i, t in enumerate(slow) if i == 0 or t - slow[i - 1] > 0.02)
    server_cpu = sum(cpu_server1[k] - cpu_server0[k] for k in ("used_cpu_user", "used_cpu_sys"))
    usec = {
        k.removeprefix("cmdstat_"): (v["usec"] - stats0.get(k, {"usec": 0})["usec"]) / total
        for k, v in stats1.items()
        if k.removeprefix("cmdstat_") in ("evalsha", "exec", "blpop", "brpop", "lpush", "rpop")
    }
    return {
        "kind": kind,
        "ms": {
            seg: {q: _pct(sorted(xs), q) * 1e3 for q in (0.5, 0.9, 0.99)}
            for seg, xs in segments.items()
        },
        "cpu_us_per_msg": {
            "worker": cpu / total * 1e6,
            "publisher": published["cpu"] / total * 1e6,
            "redis-server": server_cpu / total * 1e6,
        },
        "server_us_per_msg": {k: round(v, 1) for k, v in usec.items() if v},
        "over_1ms": (len(slow), total, windows),
    }


async def main_async(url: str, rate: float, seconds: float, repeats: int) -> None:
    _stamp_reads()
    print(f"backend {backend()}, {rate:,.0f} jobs/s for {seconds} s; ms p50 / p90 / p99")
    for _ in range(repeats):
        for kind in ("meetq", "raw"):
            res = await run_once(url, kind, rate, seconds)
            segs = "  ".join(
                f"{seg} {v[0.5]:.2f}/{v[0.9]:.2f}/{v[0.99]:.2f}" for seg, v in res["ms"].items()
            )
            cpu = ", ".join(f"{k} {v:.0f}" for k, v in res["cpu_us_per_msg"].items())
            print(f"{kind:5}  {segs}")
            print(f"       CPU us/msg: {cpu}; server us/msg: {res['server_us_per_msg']}")
            n, total, windows = res["over_1ms"]
            print(f"       pickups over 1 ms: {n} of {total}, in {windows} bursts")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=500.0)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    with running_redis() as server:
        uvloop.run(main_async(server.url, args.rate, args.seconds, args.repeats))


if __name__ == "__main__":
    main()
