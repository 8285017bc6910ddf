"""Issue 4 (a): `publish_batch` against redis-py pipelined RPUSH, rounds interleaved.

    python benchmarks/bench_publish.py [--rounds 21] [--n 10000] [--json out.json]

Each round publishes N messages three ways against one private redis-server, in a shuffled
order: redis-py 5 `pipeline(transaction=False)` of N RPUSH of a 100-byte payload (the
baseline), meetq's `RespConnection.execute_many` of the same N RPUSH (the transport alone),
and `RedisMessageQueue.publish_batch` of N `Message`s whose payload encodes to ~100 bytes
(ids, JSON, dedupe, priority list, stats and doorbell included; each round's messages are
built just before the clock starts, as a caller would build them to publish them). The
speed-up of a round is the baseline's time over the contender's in that round, so a machine
that slows down for a while slows both sides of the ratio; the median over rounds is
reported.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import redis.asyncio
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "support"))

from helpers import running_redis
from meetq import Message, RedisMessageQueue, backend
from meetq._redis.connection import RespConnection

PAYLOAD = b"x" * 100
MESSAGE_PAYLOAD = {"pad": "x" * 80}  # {"pad": "xx..."} is ~100 bytes of JSON


async def run(url: str, n: int, rounds: int) -> dict[str, Any]:
    client = redis.asyncio.Redis.from_url(url)
    conn = await RespConnection.connect(url)
    queue = RedisMessageQueue(url, "bench-publish")
    msgs: list[Message] = []

    async def redis_py() -> None:
        pipe = client.pipeline(transaction=False)
        for _ in range(n):
            pipe.rpush("bench:rpy", PAYLOAD)
        replies = await pipe.execute()
        assert len(replies) == n

    async def transport() -> None:
        replies = await conn.execute_many([("RPUSH", "bench:resp", PAYLOAD)] * n)
        assert len(replies) == n

    async def publish_batch() -> None:
        ids = await queue.publish_batch(msgs)
        assert len(ids) == n

    async def reset() -> None:
        await conn.execute("FLUSHDB")
        msgs[:] = [Message(type="noop", payload=dict(MESSAGE_PAYLOAD)) for _ in range(n)]

    contenders: dict[str, Callable[[], Awaitable[None]]] = {
        "redis_py_pipeline": redis_py,
        "resp_connection": transport,
        "publish_batch": publish_batch,
    }
    times: dict[str, list[float]] = {name: [] for name in contenders}
    try:
        for fn in contenders.values():  # warm-up, not recorded
            await reset()
            await fn()
        for _ in range(rounds):
            order = list(contenders)
            random.shuffle(order)
            for name in order:
                await reset()
                t0 = time.perf_counter()
                await contenders[name]()
                times[name].append(time.perf_counter() - t0)
    finally:
        await queue.stop()
        await conn.close()
        await client.aclose()
    base = times["redis_py_pipeline"]
    out: dict[str, Any] = {"backend": backend(), "n": n, "rounds": rounds, "contenders": {}}
    for name, ts in times.items():
        ratios = sorted(b / t for b, t in zip(base, ts, strict=True))
        q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
        out["contenders"][name] = {
            "median_s": statistics.median(ts),
            "msgs_per_s": n / statistics.median(ts),
            "speedup_median": statistics.median(ratios),
            "speedup_q1": q[0],
            "speedup_q3": q[2],
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    load = os.getloadavg()[0]
    with running_redis() as server:
        result = uvloop.run(run(server.url, args.n, args.rounds))
    print(
        f"backend {result['backend']}, {args.n:,} messages, {args.rounds} interleaved rounds, "
        f"load average {load:.2f}"
    )
    print("| contender | median time | msgs/s | speed-up vs redis-py (median of rounds, IQR) |")
    print("|---|---|---|---|")
    for name, c in result["contenders"].items():
        print(
            f"| {name} | {c['median_s'] * 1e3:.1f} ms | {c['msgs_per_s']:,.0f} | "
            f"{c['speedup_median']:.2f}x ({c['speedup_q1']:.2f}-{c['speedup_q3']:.2f}) |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
