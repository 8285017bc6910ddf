"""Where a latency stall sits: the worker's event loop or redis-server.

    python benchmarks/stall_probe.py [--rate 10000] [--seconds 3] [--repeats 2]

The paced publisher (`paced.py`) in a process of its own and this worker process, as in
`bench_queue_self.py`, meetq and then the LPUSH / BRPOP floor. Alongside, two probes in the
worker process: a 1 ms loop timer that records how late it fires (the worker's event loop is
blocked or starved) and a thread that PINGs redis-server on a connection of its own every
millisecond (redis-server is busy with a backlog: a PING waits behind it). Prints the pickup
p50 / p99 and every 10 ms window (by creation time) whose slowest pickup took over
`--stall` ms, with the worst loop lateness and PING time in that window and the one before.
A stall with a slow PING and a punctual loop is redis-server's; one where both are late is
the whole machine's.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import redis
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "support"))

from helpers import running_redis
from meetq import RedisMessageQueue, backend
from paced import consume_raw, publisher_command

BIN = 0.01


def _worst(samples: list[tuple[float, float]], t0: float) -> dict[int, float]:
    worst: dict[int, float] = {}
    for at, value in samples:
        b = int((at - t0) / BIN)
        worst[b] = max(worst.get(b, 0.0), value)
    return worst


async def run_once(url: str, kind: str, rate: float, seconds: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    name = f"{kind}-{time.monotonic_ns()}"
    total = int(rate * seconds)
    seen: list[tuple[float, float]] = []  # (created, handler start)
    done = asyncio.Event()
    lateness: list[tuple[float, float]] = []
    pings: list[tuple[float, float]] = []
    quit_pinging = threading.Event()

    def tick(due: float) -> None:
        now = time.time()
        lateness.append((due, (now - due) * 1e3))
        if not done.is_set():
            loop.call_later(0.001, tick, now + 0.001)

    def pinger() -> None:
        r = redis.Redis.from_url(url)
        try:
            while not quit_pinging.is_set():
                t = time.time()
                r.ping()
                pings.append((t, (time.time() - t) * 1e3))
                time.sleep(0.001)
        finally:
            r.close()

    def on_message(created: float) -> None:
        seen.append((created, time.time()))
        if len(seen) == total:
            done.set()

    if kind == "raw":
        q: Any = None

        def on_body(body: bytes) -> None:
            on_message(orjson.loads(body)["payload"]["t"])

        worker = asyncio.ensure_future(consume_raw(url, name, on_body, done.is_set))
    else:
        q = RedisMessageQueue(url, name, workers=100)
        q.register_handler("lat", lambda m: on_message(m.payload["t"]))
        await q.start()
    probe = threading.Thread(target=pinger, daemon=True)
    probe.start()
    loop.call_later(0.001, tick, time.time() + 0.001)
    proc = await asyncio.create_subprocess_exec(
        *publisher_command(url, name, rate, seconds, kind), stdout=asyncio.subprocess.PIPE
    )
    try:
        await asyncio.wait_for(done.wait(), seconds + 30)
    finally:
        await asyncio.wait_for(proc.communicate(), 30)
        done.set()
        quit_pinging.set()
        probe.join(5)
        if q is not None:
            await q.stop()
        else:
            await worker
    seen.sort()
    t0 = seen[0][0]
    lat = sorted((s - c) * 1e3 for c, s in seen)
    return {
        "p50": lat[len(lat) // 2],
        "p99": lat[int(len(lat) * 0.99)],
        "pickup": _worst([(c, (s - c) * 1e3) for c, s in seen], t0),
        "loop": _worst(lateness, t0),
        "ping": _worst(pings, t0),
    }


async def main_async(url: str, rate: float, seconds: float, repeats: int, stall: float) -> None:
    print(f"backend {backend()}, {rate:,.0f} jobs/s for {seconds} s; windows of 10 ms, ms")
    for _ in range(repeats):
        for kind in ("meetq", "raw"):
            res = await run_once(url, kind, rate, seconds)
            loop, ping = res["loop"], res["ping"]
            stalled = [b for b, worst in sorted(res["pickup"].items()) if worst > stall]
            redis_busy = sum(1 for b in stalled if max(ping.get(b, 0), ping.get(b - 1, 0)) > 2)
            loop_late = sum(1 for b in stalled if max(loop.get(b, 0), loop.get(b - 1, 0)) > 2)
            print(
                f"{kind:5}  pickup p50 {res['p50']:.2f} p99 {res['p99']:.2f}; {len(stalled)}"
                f" windows over {stall:g} ms, in {redis_busy} a PING took over 2 ms, in"
                f" {loop_late} the worker's loop was over 2 ms late"
            )
            for b in stalled:
                print(
                    f"       at {b * 10:5d} ms: slowest pickup {res['pickup'][b]:5.1f}  loop late"
                    f" {loop.get(b, 0):5.1f} / {loop.get(b - 1, 0):5.1f} before  PING"
                    f" {ping.get(b, 0):5.1f} / {ping.get(b - 1, 0):5.1f} before"
                )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=10_000.0)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--stall", type=float, default=5.0, help="ms; windows above it are listed")
    args = ap.parse_args()
    with running_redis() as server:
        uvloop.run(main_async(server.url, args.rate, args.seconds, args.repeats, args.stall))


if __name__ == "__main__":
    main()
