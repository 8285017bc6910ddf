"""Issue 13: Redis memory stays flat while 1,000,000 events flow through a Streams topic
consumed by three services (consumer groups).

    python benchmarks/bench_broadcast_soak.py [--events 1000000] [--batch 1000] [--window 50000]
    MEETQ_BENCH_SCALE=0.01 python benchmarks/bench_broadcast_soak.py     # smoke run

One private redis-server. Three `RedisStreamEventBus` (services media, ai, notify; no-op
handlers) consume in this process while a publisher appends events in batches, held at
most `--window` events ahead of the slowest service (so the stream measures trimming, not
a backlog). `used_memory` (INFO memory) and the stream's length are sampled as events flow.
For scale, the memory that `--reference` untrimmed entries take is measured first, and the
flat figure is compared to what the whole run would hold without trimming.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import redis.asyncio
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "support"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchutil import scale
from helpers import running_redis
from meetq import RedisStreamEventBus, StreamEvent, backend
from meetq._redis.keys import StreamKeys

TOPIC = "soak.events"
SERVICES = ("media", "ai", "notify")
PAYLOAD = {"meeting_id": 456, "user_id": 123, "pad": "x" * 40}


async def used_memory(client: redis.asyncio.Redis) -> int:
    info = await client.info("memory")
    return int(info["used_memory"])


async def reference_bytes_per_entry(url: str, count: int) -> float:
    """What one untrimmed entry of this shape costs in Redis."""
    client = redis.asyncio.Redis.from_url(url)
    bus = RedisStreamEventBus(url, "reference")
    before = await used_memory(client)
    for start in range(0, count, 1000):
        n = min(1000, count - start)
        await bus.publish_batch(
            "soak.reference", [StreamEvent("e", dict(PAYLOAD)) for _ in range(n)]
        )
    after = await used_memory(client)
    await client.delete(StreamKeys("soak.reference").stream)
    await bus.stop()
    await client.aclose()
    return (after - before) / count


async def soak(url: str, events: int, batch: int, window: int, samples: int) -> dict[str, Any]:
    client = redis.asyncio.Redis.from_url(url)
    counts = dict.fromkeys(SERVICES, 0)
    buses = []
    for service in SERVICES:

        def handler(e: StreamEvent, service: str = service) -> None:
            counts[service] += 1

        bus = RedisStreamEventBus(url, service, start_from="0", trim_interval=0.5)
        bus.subscribe(TOPIC, handler)
        buses.append(bus)
    publisher = RedisStreamEventBus(url, "publisher")
    stream = StreamKeys(TOPIC).stream
    for bus in buses:
        await bus.start()
    baseline = await used_memory(client)
    series: list[dict[str, Any]] = []
    every = max(batch, events // samples)
    published = 0
    next_sample = every
    t0 = time.perf_counter()
    try:
        while published < events:
            while published - min(counts.values()) > window:
                await asyncio.sleep(0.005)  # flow control: let the slowest service catch up
            n = min(batch, events - published)
            await publisher.publish_batch(
                TOPIC, [StreamEvent("e", dict(PAYLOAD)) for _ in range(n)]
            )
            published += n
            if published >= next_sample:
                next_sample += every
                series.append(
                    {
                        "published": published,
                        "used_memory": await used_memory(client),
                        "stream_length": int(await client.xlen(stream)),
                        "seconds": time.perf_counter() - t0,
                    }
                )
        while min(counts.values()) < events:
            await asyncio.sleep(0.01)
        took = time.perf_counter() - t0
        for bus in buses:
            await bus.trim()
        final = {
            "used_memory": await used_memory(client),
            "stream_length": int(await client.xlen(stream)),
        }
        stats = await buses[0].topic_stats(TOPIC)
    finally:
        for bus in buses:
            await bus.stop()
        await publisher.stop()
        await client.aclose()
    mem = [s["used_memory"] for s in series]
    return {
        "events": events,
        "services": len(SERVICES),
        "seconds": took,
        "deliveries_per_s": len(SERVICES) * events / took,
        "baseline_used_memory": baseline,
        "max_used_memory": max(mem),
        "min_used_memory": min(mem),
        "last_used_memory": mem[-1],
        "max_stream_length": max(s["stream_length"] for s in series),
        "final": final,
        "groups": stats["groups"],
        "series": series,
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    with running_redis() as server:
        per_entry = await reference_bytes_per_entry(server.url, args.reference)
        result = await soak(server.url, args.events, args.batch, args.window, args.samples)
    result["backend"] = backend()
    result["reference_bytes_per_entry"] = per_entry
    result["untrimmed_estimate"] = per_entry * args.events
    growth = result["max_used_memory"] - result["baseline_used_memory"]
    print(
        f"soak {args.events:,} events x {len(SERVICES)} services in {result['seconds']:.1f}s "
        f"({result['deliveries_per_s']:,.0f} deliveries/s)",
        flush=True,
    )
    print(
        f"used_memory baseline {result['baseline_used_memory'] / 1e6:.1f} MB, "
        f"min {result['min_used_memory'] / 1e6:.1f} MB, "
        f"max {result['max_used_memory'] / 1e6:.1f} MB, "
        f"last {result['last_used_memory'] / 1e6:.1f} MB (max growth {growth / 1e6:.1f} MB); "
        f"untrimmed the stream alone would hold {result['untrimmed_estimate'] / 1e6:.1f} MB "
        f"({per_entry:.0f} B/entry)",
        flush=True,
    )
    print(
        f"stream length: max {result['max_stream_length']:,} while flowing, "
        f"{result['final']['stream_length']:,} at the end; pending per group "
        f"{ {g: v['pending'] for g, v in result['groups'].items()} }",
        flush=True,
    )
    for s in result["series"]:
        print(
            f"  {s['published']:>9,} published  {s['used_memory'] / 1e6:7.1f} MB  "
            f"length {s['stream_length']:>7,}  {s['seconds']:6.1f}s"
        )
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=scale("soak", 1_000_000))
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--window", type=int, default=50_000)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--reference", type=int, default=scale("reference", 100_000))
    parser.add_argument("--json", type=Path)
    ns = parser.parse_args()
    out = uvloop.run(main(ns))
    if ns.json:
        ns.json.write_text(json.dumps(out, indent=2))
