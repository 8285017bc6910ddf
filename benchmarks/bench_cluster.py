"""Redis Cluster scaling: 3 busy queues on one shard vs spread over 3 shards, and the cost
of cluster routing for one queue against a single redis-server, in one run.

Each side pre-fills its queues, then drains them with one worker process per queue
(no-op handler) and reports messages/s over all queues and the CPU seconds the workers
and the redis-servers used (from /proc). Sides alternate `--rounds` times; the table gives
the median.

Beside it, in the same run, the floor of the machine: the same 1-shard vs 3-shard split
driven by `redis-benchmark` (a C client that costs almost nothing per command), one
process per queue, each running a three-write script on its queue's slot. And the
ceiling the CPU allows: with W worker and R redis CPU seconds per message and C cores,
3 shards can go at most min(3/R, C/(W+R)) messages/s, 1 shard at most min(1/R, C/(W+R)):
with the same W and R on both sides the ratio is at most max(1, C*R/(W+R)) < C, so on 2
cores 2x needs workers that cost nothing. "cores busy" says how much of the machine a
side got: far below C, the processes waited for a CPU (a loaded box), and the ratio then
measures the scheduler's share more than Redis.

    python benchmarks/bench_cluster.py [--messages 20000] [--rounds 3] [--out FILE]

`--broadcast` measures the two buses instead, cluster vs single redis-server in one
process, sides alternating: Pub/Sub (SPUBLISH on the cluster, PUBLISH on one server)
publishes `--messages` messages in batches of 500 over 3 channels (one per shard) to two
subscriber instances and times until both received all (fan-out 2); Streams publishes as
many events over 2 topics (two shards) and times until one consumer handled all.

    python benchmarks/bench_cluster.py --broadcast [--messages 20000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "support"))

from cluster import Cluster, running_cluster  # noqa: E402
from helpers import running_redis  # noqa: E402
from meetq import (  # noqa: E402
    Message,
    PubSubMessage,
    RedisMessageQueue,
    RedisPubSubQueue,
    RedisStreamEventBus,
    StreamEvent,
)
from meetq._redis.cluster import key_slot  # noqa: E402
from meetq._redis.keys import QueueKeys  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


async def fill(url: str, queue: str, n: int) -> None:
    q = RedisMessageQueue(url, queue)
    try:
        for start in range(0, n, 5000):
            batch = [
                Message(type="t", payload={"i": i}) for i in range(start, min(n, start + 5000))
            ]
            await q.publish_batch(batch)
    finally:
        await q.stop()


async def drain(url: str, queue: str, n: int) -> None:
    done = asyncio.Event()
    count = 0

    def handle(_: Message) -> None:
        nonlocal count
        count += 1
        if count >= n:
            done.set()

    q = RedisMessageQueue(url, queue, workers=4)
    q.register_handler("t", handle)
    async with q:
        print("ready", flush=True)
        sys.stdin.readline()
        t0 = time.perf_counter()
        await done.wait()
        print(f"{time.perf_counter() - t0:.6f}", flush=True)


def run_side(url: str, queues: list[str], n: int, servers: list[int]) -> dict[str, float]:
    for q in queues:
        asyncio.run(fill(url, q, n))
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--drain", url, q, str(n)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for q in queues
    ]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        cpu0 = [cpu_seconds(p.pid) for p in procs] + [cpu_seconds(s) for s in servers]
        t0 = time.perf_counter()
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        for p in procs:
            assert p.stdout is not None
            float(p.stdout.readline())
        wall = time.perf_counter() - t0
        cpu1 = [cpu_seconds(p.pid) for p in procs] + [cpu_seconds(s) for s in servers]
    finally:
        for p in procs:
            p.kill()
            p.wait()
    k = len(procs)
    return {
        "messages": len(queues) * n,
        "rate": len(queues) * n / wall,
        "worker_cpu": sum(b - a for a, b in zip(cpu0[:k], cpu1[:k], strict=True)),
        "redis_cpu": sum(b - a for a, b in zip(cpu0[k:], cpu1[k:], strict=True)),
        "wall": wall,
    }


FLOOR_SCRIPT = (
    "redis.call('RPUSH', KEYS[1], ARGV[1]); redis.call('LPOP', KEYS[1]); "
    "return redis.call('HINCRBY', KEYS[2], 'n', 1)"
)
"""A message's worth of writes on one queue's slot, for the redis-benchmark floor."""


def floor_side(cluster: Cluster, queues: list[str], n: int, servers: list[int]) -> dict[str, float]:
    """One redis-benchmark process per queue against the master of its slot, all at once."""
    bench = shutil.which("redis-benchmark") or "/usr/bin/redis-benchmark"
    cmds = []
    for q in queues:
        keys = QueueKeys(q)
        port = cluster.master_of(key_slot(keys.prefix))
        cmds.append(
            [bench, "-h", "127.0.0.1", "-p", str(port), "-c", "4", "-P", "16", "-n", str(n),
             "-q", "EVAL", FLOOR_SCRIPT, "2", keys.named("floor"), keys.named("floorn"), "x"]
        )  # fmt: skip
    cpu0 = [cpu_seconds(s) for s in servers]
    t0 = time.perf_counter()
    procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL) for c in cmds]
    children = 0.0
    for p in procs:
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        children += usage.ru_utime + usage.ru_stime
        assert p.returncode == 0, p.args
    wall = time.perf_counter() - t0
    cpu1 = [cpu_seconds(s) for s in servers]
    return {
        "messages": len(queues) * n,
        "rate": len(queues) * n / wall,
        "worker_cpu": children,
        "redis_cpu": sum(b - a for a, b in zip(cpu0, cpu1, strict=True)),
        "wall": wall,
    }


def ceiling(one: dict[str, float], spread: dict[str, float], messages: int, cores: int) -> float:
    """The highest scaling ratio the CPU of this machine allows, from each side's CPU per
    message: 3 shards go at most min(3/R, C/(W+R)) messages/s, 1 shard min(1/R, C/(W+R))."""
    w1, r1 = one["worker_cpu"] / messages, one["redis_cpu"] / messages
    w3, r3 = spread["worker_cpu"] / messages, spread["redis_cpu"] / messages
    if not (r1 and r3):
        return float("nan")
    return min(3 / r3, cores / (w3 + r3)) / min(1 / r1, cores / (w1 + r1))


def cpu_per(side: dict[str, float]) -> float:
    """CPU seconds (workers + redis-servers) per message of one side."""
    return (side["worker_cpu"] + side["redis_cpu"]) / side["messages"]


def times(a: float, b: float) -> str:
    """a / b as "1.23x"; a smoke run can be too short for /proc's 10 ms CPU ticks."""
    return f"{a / b:.2f}x" if b else "n/a (below the CPU clock's resolution)"


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def queue_names(cluster: Cluster) -> tuple[list[str], list[str]]:
    """Three names on one shard, and three on three different shards."""
    by_master: dict[int, list[str]] = {}
    i = 0
    while len(by_master) < 3 or max(len(v) for v in by_master.values()) < 3:
        name = f"bq{i}"
        by_master.setdefault(cluster.master_of(key_slot(QueueKeys(name).prefix)), []).append(name)
        i += 1
    one = next(v for v in by_master.values() if len(v) >= 3)[:3]
    spread = [v[0] for v in by_master.values()][:3]
    return one, spread


def shard_names(cluster: Cluster | None, stem: str, slot_of: object, k: int) -> list[str]:
    """`k` names on `k` different shards (any `k` names on a single server)."""
    if cluster is None:
        return [f"{stem}{i}" for i in range(k)]
    by_master: dict[int, str] = {}
    i = 0
    while len(by_master) < k:
        name = f"{stem}{i}"
        by_master.setdefault(cluster.master_of(slot_of(name)), name)  # type: ignore[operator]
        i += 1
    return list(by_master.values())


async def pubsub_side(url: str, channels: list[str], n: int) -> float:
    """Seconds from the first publish until both subscribers received all `n`."""
    got = [0, 0]
    done = asyncio.Event()

    def counter(j: int) -> object:
        def on(_: PubSubMessage) -> None:
            got[j] += 1
            if min(got) >= n:
                done.set()

        return on

    subs = [RedisPubSubQueue(url, max_in_flight=100_000) for _ in range(2)]
    for j, sub in enumerate(subs):
        for channel in channels:
            sub.subscribe(channel, counter(j))  # type: ignore[arg-type]
        await sub.start()
    pub = RedisPubSubQueue(url)
    try:
        t0 = time.perf_counter()
        for start in range(0, n, 500):
            channel = channels[(start // 500) % len(channels)]
            count = min(500, n - start)
            await pub.publish_batch(channel, [PubSubMessage("t", {"i": i}) for i in range(count)])
        await asyncio.wait_for(done.wait(), 300)
        return time.perf_counter() - t0
    finally:
        await pub.stop()
        for sub in subs:
            await sub.stop()


async def streams_side(url: str, topics: list[str], n: int, rnd: int) -> float:
    """Seconds from the first publish until one consumer handled all `n` events."""
    seen = 0
    done = asyncio.Event()

    def on(_: StreamEvent) -> None:
        nonlocal seen
        seen += 1
        if seen >= n:
            done.set()

    names = topics  # fresh streams each round (the caller's names)
    bus = RedisStreamEventBus(url, "bench", batch=500, max_in_flight=2000, block=0.2)
    for topic in names:
        bus.subscribe(topic, on)
    await bus.start()
    pub = RedisStreamEventBus(url, "bench-publisher")
    try:
        t0 = time.perf_counter()
        for start in range(0, n, 500):
            topic = names[(start // 500) % len(names)]
            count = min(500, n - start)
            await pub.publish_batch(topic, [StreamEvent("t", {"i": i}) for i in range(count)])
        await asyncio.wait_for(done.wait(), 300)
        return time.perf_counter() - t0
    finally:
        await pub.stop()
        await bus.stop()


def broadcast_main(n: int, rounds: int, out: Path | None) -> None:
    from meetq._redis.keys import StreamKeys

    def topic_slot(t: str) -> int:
        return key_slot(StreamKeys(t).stream)

    rates: dict[str, list[float]] = {k: [] for k in ("ps-c", "ps-1", "st-c", "st-1")}
    with running_cluster(replicas=0) as cluster, running_redis() as single:
        curl = "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in cluster.ports)
        channels = shard_names(cluster, "bch", key_slot, 3)
        topics = shard_names(cluster, "bt", topic_slot, 2)
        for rnd in range(rounds):
            rates["ps-c"].append(n / asyncio.run(pubsub_side(curl, channels, n)))
            rates["ps-1"].append(n / asyncio.run(pubsub_side(single.url, channels, n)))
            # a topic name with a round suffix may land elsewhere: re-pick per round
            tops = shard_names(cluster, f"bt{rnd}x", topic_slot, 2)
            rates["st-c"].append(n / asyncio.run(streams_side(curl, tops, n, rnd)))
            fresh = [f"{t}r{rnd}" for t in topics]
            rates["st-1"].append(n / asyncio.run(streams_side(single.url, fresh, n, rnd)))
    med = {k: statistics.median(v) for k, v in rates.items()}
    lines = [
        f"# bench_cluster.py --broadcast --messages {n} --rounds {rounds} (median of the rounds)",
        "",
        "| bus | single redis-server /s | cluster /s | cluster / single |",
        "|---|---:|---:|---:|",
        f"| Pub/Sub publish + fan-out to 2 subscribers, 3 channels | {med['ps-1']:,.0f} "
        f"| {med['ps-c']:,.0f} | {med['ps-c'] / med['ps-1']:.2f}x |",
        f"| Streams publish + consume, 2 topics | {med['st-1']:,.0f} | {med['st-c']:,.0f} "
        f"| {med['st-c'] / med['st-1']:.2f}x |",
        "",
        f"rounds (msgs/s): {', '.join(f'{k}=' + '/'.join(f'{x:,.0f}' for x in v) for k, v in rates.items())}",  # noqa: E501
        f"cores on this machine: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f}",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if out:
        out.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--drain", nargs=3)
    ap.add_argument("--broadcast", action="store_true")
    args = ap.parse_args()
    if args.broadcast:
        broadcast_main(args.messages, args.rounds, args.out)
        return
    if args.drain:
        url, queue, n = args.drain
        asyncio.run(drain(url, queue, int(n)))
        return
    n = args.messages
    floor_n = n * 10
    results: dict[str, list[dict[str, float]]] = {
        "one": [],
        "spread": [],
        "single": [],
        "routed": [],
        "floor_one": [],
        "floor_spread": [],
    }
    load_before = loadavg()
    with running_cluster(replicas=0) as cluster, running_redis() as single:
        curl = "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in cluster.ports)
        pids = [node.proc.pid for node in cluster.nodes if node.proc is not None]
        assert single.proc is not None
        one, spread = queue_names(cluster)
        for _ in range(args.rounds):
            results["one"].append(run_side(curl, one, n, pids))
            results["spread"].append(run_side(curl, spread, n, pids))
            results["single"].append(run_side(single.url, ["solo"], n, [single.proc.pid]))
            results["routed"].append(run_side(curl, [spread[0]], n, pids))
            results["floor_one"].append(floor_side(cluster, one, floor_n, pids))
            results["floor_spread"].append(floor_side(cluster, spread, floor_n, pids))
    load_after = loadavg()
    cores = os.cpu_count() or 1
    med = {k: {f: statistics.median(x[f] for x in v) for f in v[0]} for k, v in results.items()}
    lines = [
        f"# bench_cluster.py --messages {n} --rounds {args.rounds} (median of the rounds)",
        "",
        f"load average before: {load_before}; after: {load_after}; cores: {cores}",
        "",
        "| side | messages/s | worker CPU s | redis CPU s | wall s | cores busy "
        "| CPU us/msg (worker + redis) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    names = {
        "one": "3 queues on 1 shard",
        "spread": "3 queues on 3 shards",
        "single": "1 queue, single redis-server",
        "routed": "1 queue, cluster (routed)",
        "floor_one": f"floor: redis-benchmark, 3 queues on 1 shard ({floor_n:,} each)",
        "floor_spread": f"floor: redis-benchmark, 3 queues on 3 shards ({floor_n:,} each)",
    }
    for key, label in names.items():
        m = med[key]
        busy = (m["worker_cpu"] + m["redis_cpu"]) / m["wall"]
        per = 1e6 / m["messages"]
        lines.append(
            f"| {label} | {m['rate']:,.0f} | {m['worker_cpu']:.2f} | {m['redis_cpu']:.2f} "
            f"| {m['wall']:.2f} | {busy:.2f} "
            f"| {m['worker_cpu'] * per:.1f} + {m['redis_cpu'] * per:.1f} |"
        )
    lines += [
        "",
        f"scaling 3 shards / 1 shard: {med['spread']['rate'] / med['one']['rate']:.2f}x "
        f"(CPU ceiling from each side's CPU per message on {cores} cores: "
        f"{ceiling(med['one'], med['spread'], 3 * n, cores):.2f}x)",
        f"floor scaling (redis-benchmark) 3 shards / 1 shard: "
        f"{med['floor_spread']['rate'] / med['floor_one']['rate']:.2f}x "
        f"(CPU ceiling {ceiling(med['floor_one'], med['floor_spread'], 3 * floor_n, cores):.2f}x)",
        f"routing cost, cluster / single node, one queue: "
        f"{med['routed']['rate'] / med['single']['rate']:.2f}x in rate, "
        f"{times(cpu_per(med['routed']), cpu_per(med['single']))} in CPU per message",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
