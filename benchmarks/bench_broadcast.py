"""Issue 13 (a)-(d): Pub/Sub and Streams against library-free redis-py loops, one redis-server,
one run.

    python benchmarks/bench_broadcast.py [--n 20000] [--rounds 7] [--seconds 3] [--repeats 3]
                                         [--events 20000] [--channels 10000] [--json out.json]

(a) publish_batch: N PubSubMessages (payload ~100 bytes of JSON, encoding, sequence numbers
    and the batch write included; built just before the clock starts) against redis-py
    `pipeline(transaction=False)` of N PUBLISH of a ready-made 100-byte payload, same
    channel, no subscriber; rounds interleaved in shuffled order, ratio per round, median.
(b) publish -> handler latency at 10,000 events/s to one subscriber (this process), from a
    publisher in its own process pacing 10 messages per millisecond; each message carries
    its creation time (CLOCK_MONOTONIC, shared by processes). meetq: RedisPubSubQueue
    publish_batch -> RedisPubSubQueue handler. Floor: redis-py pipelined PUBLISH -> redis-py
    PubSub `get_message` loop + orjson.loads. The first 0.5 s are warm-up. Pairs alternate,
    `--repeats` pairs; the median p50/p99 over pairs is reported.
(c) Streams fan-out: E events preloaded into a stream, then 3 consumer groups drain it in
    this process. meetq: 3 RedisStreamEventBus (one per service, no-op handler). Floor:
    3 redis-py tasks each looping XREADGROUP COUNT 100 -> XACK. Rate = 3E / time.
(d) resubscribe: a RedisPubSubQueue with C channels; redis-server killed and started on
    the same port; reported: the `away` of the `meetq.pubsub.reconnected` event and the
    connect + subscribe + confirm time of the new connection.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "support"))

from helpers import RedisServer, running_redis
from meetq import PubSubMessage, RedisPubSubQueue, RedisStreamEventBus, StreamEvent, backend
from meetq import events as meetq_events
from meetq._redis.keys import StreamKeys

PAYLOAD = b"x" * 100
MESSAGE_PAYLOAD = {"pad": "x" * 80}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- (a) publish_batch -----------------------------------------------------------------------


async def bench_publish(url: str, n: int, rounds: int) -> dict[str, Any]:
    client = redis.asyncio.Redis.from_url(url)
    ps = RedisPubSubQueue(url)
    msgs: list[PubSubMessage] = []

    async def redis_py() -> None:
        pipe = client.pipeline(transaction=False)
        for _ in range(n):
            pipe.publish("bench:pub", PAYLOAD)
        assert len(await pipe.execute()) == n

    async def meetq() -> None:
        assert len(await ps.publish_batch("bench:pub", msgs)) == n

    contenders = {"redis_py_pipeline": redis_py, "publish_batch": meetq}
    times: dict[str, list[float]] = {k: [] for k in contenders}
    ratios: list[float] = []
    try:
        for fn in contenders.values():  # warm-up
            msgs[:] = [PubSubMessage("noop", dict(MESSAGE_PAYLOAD)) for _ in range(n)]
            await fn()
        for _ in range(rounds):
            order = list(contenders)
            random.shuffle(order)
            took: dict[str, float] = {}
            for name in order:
                msgs[:] = [PubSubMessage("noop", dict(MESSAGE_PAYLOAD)) for _ in range(n)]
                t0 = time.perf_counter()
                await contenders[name]()
                took[name] = time.perf_counter() - t0
                times[name].append(took[name])
            ratios.append(took["redis_py_pipeline"] / took["publish_batch"])
    finally:
        await ps.stop()
        await client.aclose()
    return {
        "n": n,
        "rounds": rounds,
        "redis_py_msgs_per_s": n / statistics.median(times["redis_py_pipeline"]),
        "meetq_msgs_per_s": n / statistics.median(times["publish_batch"]),
        "speedup_median": statistics.median(ratios),
        "speedup_min": min(ratios),
        "speedup_max": max(ratios),
    }


# -- (b) latency ---------------------------------------------------------------------------


async def paced_publisher(url: str, kind: str, channel: str, rate: int, seconds: float) -> None:
    """Runs in its own process: `rate` messages/s in groups of rate/1000 every millisecond."""
    per_tick = max(1, rate // 1000)
    ticks = int(seconds * 1000)
    clock = time.monotonic
    if kind == "meetq":
        ps = RedisPubSubQueue(url)
    else:
        client = redis.asyncio.Redis.from_url(url)
    start = clock()
    for tick in range(ticks):
        due = start + tick / 1000
        delay = due - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        now = clock()
        if kind == "meetq":
            await ps.publish_batch(
                channel, [PubSubMessage("t", {"t": now}) for _ in range(per_tick)]
            )
        else:
            pipe = client.pipeline(transaction=False)
            for _ in range(per_tick):
                pipe.publish(channel, orjson.dumps({"type": "t", "payload": {"t": now}}))
            await pipe.execute()
    if kind == "meetq":
        await ps.publish("bench:lat", PubSubMessage("end"))
        await ps.stop()
    else:
        await client.publish(channel, orjson.dumps({"type": "end", "payload": {}}))
        await client.aclose()


def publisher_process(url: str, kind: str, rate: int, seconds: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, __file__, "--publisher", kind, url, str(rate), str(seconds)],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )


async def latency_meetq(url: str, rate: int, seconds: float) -> list[float]:
    ps = RedisPubSubQueue(url)
    samples: list[tuple[float, float]] = []
    done = asyncio.Event()
    clock = time.monotonic

    def handler(msg: PubSubMessage) -> None:
        if msg.type == "end":
            done.set()
            return
        now = clock()
        samples.append((now, now - msg.payload["t"]))

    ps.subscribe("bench:lat", handler)
    async with ps:
        proc = publisher_process(url, "meetq", rate, seconds)
        try:
            await asyncio.wait_for(done.wait(), seconds + 60)
        finally:
            await asyncio.get_running_loop().run_in_executor(None, proc.wait)
    return _after_warmup(samples)


async def latency_floor(url: str, rate: int, seconds: float) -> list[float]:
    client = redis.asyncio.Redis.from_url(url)
    pubsub = client.pubsub()
    await pubsub.subscribe("bench:lat")
    await pubsub.get_message(timeout=1.0)  # the confirmation
    samples: list[tuple[float, float]] = []
    clock = time.monotonic
    proc = publisher_process(url, "raw", rate, seconds)
    try:
        deadline = clock() + seconds + 60
        while clock() < deadline:
            message = await pubsub.get_message(timeout=1.0)
            if message is None or message["type"] != "message":
                continue
            data = orjson.loads(message["data"])
            if data["type"] == "end":
                break
            now = clock()
            samples.append((now, now - data["payload"]["t"]))
    finally:
        await asyncio.get_running_loop().run_in_executor(None, proc.wait)
        await pubsub.aclose()
        await client.aclose()
    return _after_warmup(samples)


def _after_warmup(samples: list[tuple[float, float]]) -> list[float]:
    if not samples:
        return []
    start = samples[0][0] + 0.5
    return [lat for t, lat in samples if t >= start]


async def bench_latency(url: str, rate: int, seconds: float, repeats: int) -> dict[str, Any]:
    pairs = []
    for i in range(repeats):
        order = ["meetq", "floor"] if i % 2 == 0 else ["floor", "meetq"]
        got: dict[str, list[float]] = {}
        for kind in order:
            run = latency_meetq if kind == "meetq" else latency_floor
            got[kind] = await run(url, rate, seconds)
        pairs.append(
            {
                kind: {
                    "samples": len(v),
                    "p50_ms": pct(v, 0.5) * 1000,
                    "p99_ms": pct(v, 0.99) * 1000,
                }
                for kind, v in got.items()
            }
        )
    med = {
        kind: {
            q: statistics.median(p[kind][q] for p in pairs) for q in ("p50_ms", "p99_ms", "samples")
        }
        for kind in ("meetq", "floor")
    }
    return {
        "rate": rate,
        "seconds": seconds,
        "pairs": pairs,
        "median": med,
        "p99_ratio": med["meetq"]["p99_ms"] / med["floor"]["p99_ms"],
        "p99_ratio_per_pair": [p["meetq"]["p99_ms"] / p["floor"]["p99_ms"] for p in pairs],
    }


# -- (c) Streams fan-out ---------------------------------------------------------------------


async def preload(client: redis.asyncio.Redis, stream: str, events: int) -> None:
    await client.delete(stream)
    body = orjson.dumps(
        {"type": "t", "payload": dict(MESSAGE_PAYLOAD), "source": "", "timestamp": 0}
    )
    for start in range(0, events, 1000):
        pipe = client.pipeline(transaction=False)
        for _ in range(min(1000, events - start)):
            pipe.xadd(stream, {"d": body})
        await pipe.execute()


async def fanout_meetq(url: str, events: int) -> float:
    client = redis.asyncio.Redis.from_url(url)
    topic = "bench.fanout"
    await preload(client, StreamKeys(topic).stream, events)
    counts = [0, 0, 0]
    done = asyncio.Event()
    buses = []
    for i in range(3):

        def handler(e: StreamEvent, i: int = i) -> None:
            counts[i] += 1
            if sum(counts) == 3 * events:
                done.set()

        bus = RedisStreamEventBus(url, f"svc{i}", start_from="0", batch=100, max_in_flight=200)
        bus.subscribe(topic, handler)
        buses.append(bus)
    t0 = time.perf_counter()
    for bus in buses:
        await bus.start()
    await asyncio.wait_for(done.wait(), 300)
    took = time.perf_counter() - t0
    for bus in buses:
        await bus.stop()
    await client.aclose()
    return 3 * events / took


async def fanout_floor(url: str, events: int) -> float:
    client = redis.asyncio.Redis.from_url(url)
    stream = "bench:fanout:raw"
    await preload(client, stream, events)
    for i in range(3):
        await client.xgroup_create(stream, f"g{i}", "0")

    async def consume(group: str) -> None:
        seen = 0
        while seen < events:
            reply = await client.xreadgroup(group, "c", {stream: ">"}, count=100, block=100)
            if not reply:
                continue
            ids = []
            for _, entries in reply:
                for eid, fields in entries:
                    orjson.loads(fields[b"d"])
                    ids.append(eid)
            await client.xack(stream, group, *ids)
            seen += len(ids)

    t0 = time.perf_counter()
    await asyncio.gather(*(consume(f"g{i}") for i in range(3)))
    took = time.perf_counter() - t0
    await client.aclose()
    return 3 * events / took


async def bench_fanout(url: str, events: int, repeats: int) -> dict[str, Any]:
    rows = []
    for i in range(repeats):
        order = ["meetq", "floor"] if i % 2 == 0 else ["floor", "meetq"]
        got = {}
        for kind in order:
            got[kind] = await (fanout_meetq if kind == "meetq" else fanout_floor)(url, events)
        rows.append(got)
    ratios = [r["meetq"] / r["floor"] for r in rows]
    return {
        "events": events,
        "groups": 3,
        "runs": rows,
        "meetq_events_per_s": statistics.median(r["meetq"] for r in rows),
        "floor_events_per_s": statistics.median(r["floor"] for r in rows),
        "ratio_median": statistics.median(ratios),
        "ratios": ratios,
    }


# -- (d) resubscribe -------------------------------------------------------------------------


async def bench_resubscribe(server: RedisServer, channels: int, repeats: int) -> dict[str, Any]:
    ps = RedisPubSubQueue(server.url)
    for i in range(channels):
        ps.subscribe(f"room:{i}", lambda m: None)
    reconnected: list[dict[str, Any]] = []
    ps.on(meetq_events.PUBSUB_RECONNECTED, lambda m: reconnected.append(m.payload))
    loop = asyncio.get_running_loop()
    t0 = time.perf_counter()
    await ps.start()
    first = time.perf_counter() - t0
    rows = []
    try:
        for _ in range(repeats):
            before = len(reconnected)
            await loop.run_in_executor(None, server.kill)
            await loop.run_in_executor(None, server.start)
            deadline = time.monotonic() + 60
            while len(reconnected) == before and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
            assert len(reconnected) > before, "no reconnected event"
            rows.append(
                {
                    "away_s": reconnected[-1]["away"],
                    "resubscribe_s": ps.get_stats()["last_subscribe_seconds"],
                }
            )
    finally:
        await ps.stop()
    return {
        "channels": channels,
        "initial_subscribe_s": first,
        "runs": rows,
        "resubscribe_s_median": statistics.median(r["resubscribe_s"] for r in rows),
        "away_s_median": statistics.median(r["away_s"] for r in rows),
    }


# -- main --------------------------------------------------------------------------------------


async def main(args: argparse.Namespace) -> dict[str, Any]:
    with running_redis() as server:
        out: dict[str, Any] = {"backend": backend()}
        out["a_publish_batch"] = await bench_publish(server.url, args.n, args.rounds)
        a = out["a_publish_batch"]
        print(
            f"(a) publish_batch {a['meetq_msgs_per_s']:,.0f} msgs/s, redis-py pipeline "
            f"{a['redis_py_msgs_per_s']:,.0f} msgs/s: {a['speedup_median']:.2f}x "
            f"(min {a['speedup_min']:.2f}, max {a['speedup_max']:.2f}; target >= 3x)",
            flush=True,
        )
        out["b_latency"] = await bench_latency(server.url, args.rate, args.seconds, args.repeats)
        b = out["b_latency"]["median"]
        print(
            f"(b) latency at {args.rate:,}/s: meetq p50 {b['meetq']['p50_ms']:.2f} ms "
            f"p99 {b['meetq']['p99_ms']:.2f} ms; floor p50 {b['floor']['p50_ms']:.2f} ms "
            f"p99 {b['floor']['p99_ms']:.2f} ms; p99 ratio {out['b_latency']['p99_ratio']:.2f} "
            f"(target <= 2)",
            flush=True,
        )
        out["c_fanout"] = await bench_fanout(server.url, args.events, args.repeats)
        c = out["c_fanout"]
        print(
            f"(c) streams fan-out to 3 groups: meetq {c['meetq_events_per_s']:,.0f} events/s, "
            f"floor {c['floor_events_per_s']:,.0f} events/s: {c['ratio_median']:.2f}x "
            f"(target >= 0.5)",
            flush=True,
        )
        out["d_resubscribe"] = await bench_resubscribe(server, args.channels, args.repeats)
        d = out["d_resubscribe"]
        print(
            f"(d) resubscribe {args.channels:,} channels after a restart: "
            f"{d['resubscribe_s_median'] * 1000:.1f} ms (connect+subscribe+confirm), "
            f"away {d['away_s_median'] * 1000:.1f} ms; first subscribe "
            f"{d['initial_subscribe_s'] * 1000:.1f} ms",
            flush=True,
        )
        return out


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--publisher":
        kind, url, rate, seconds = sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
        uvloop.run(paced_publisher(url, kind, "bench:lat", rate, seconds))
        sys.exit(0)
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--rate", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--channels", type=int, default=10_000)
    parser.add_argument("--json", type=Path)
    ns = parser.parse_args()
    result = uvloop.run(main(ns))
    if ns.json:
        ns.json.write_text(json.dumps(result, indent=2))
