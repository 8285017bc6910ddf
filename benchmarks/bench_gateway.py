"""The gateway under many connections, beside bare echo servers of both WebSocket libraries.

    python benchmarks/bench_gateway.py [--connections 10000] [--rates 1000,5000]
                                       [--seconds 5] [--json out.json]

In one run, each server in its own process and the load generator (gateway_load.py,
picows client) in another:
- echo/picows and echo/websockets (gateway_echo.py): the library floors, compression off,
  same small buffers;
- gateway: `meetq.gateway.server.serve` (picows) with its dispatcher, on a private
  redis-server, and a no-op ServiceWorker process for ai_tasks.
For each: `--connections` connections (authenticated with HMAC tokens for the gateway),
the server's RSS growth per connection once all are idle, then paced request -> final
frame round trips at each rate, spread round-robin over the connections, measured from
each request's scheduled send time. Beside each run: CPU per request (user + system
time from /proc) of the server, the load generator and, for the gateway, the no-op worker
and redis-server, and `uptime`'s load average. Raises RLIMIT_NOFILE for itself and its
children.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "support"))

from helpers import free_port, running_redis

HERE = Path(__file__).resolve().parent

SECRET = "bench-secret-0123456789abcdef"


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process: the cost per request, however loaded the box."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def spawn(args: list[str], **kw: Any) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, **kw)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != b"ready":
        proc.kill()
        raise RuntimeError(f"{args[1]} did not start: {line!r}")
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def measure(
    server: subprocess.Popen[bytes],
    url: str,
    connections: int,
    rates: list[float],
    seconds: float,
    ttype: str,
    secret: str | None,
    others: dict[str, int] | None = None,
    gc_probe: bool = False,
) -> dict[str, Any]:
    time.sleep(1.0)  # the server's own start-up allocations settle
    before = rss_kb(server.pid)
    args = [sys.executable, str(HERE / "gateway_load.py"), url, str(connections)]
    if secret:
        args.append(secret)
    load = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert load.stdin is not None and load.stdout is not None
    try:
        words = load.stdout.readline().split()
        if not words or words[0] != b"connected":
            raise RuntimeError(f"load generator failed: {words!r}")
        time.sleep(2.0)  # idle: handshakes done, buffers settled
        after = rss_kb(server.pid)
        out: dict[str, Any] = {
            "connections": int(words[1]),
            "connect_seconds": float(words[2]),
            "rss_before_kb": before,
            "rss_idle_kb": after,
            "kb_per_connection": round((after - before) / max(1, int(words[1])), 2),
            "runs": [],
        }
        pids = {"server": server.pid, "load": load.pid, **(others or {})}
        for rate in rates:
            gc0 = gc_stats(server) if gc_probe else None
            cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
            load.stdin.write(f"rate {rate} {seconds} {ttype}\n".encode())
            load.stdin.flush()
            run = json.loads(load.stdout.readline())
            cpu1 = {k: cpu_seconds(p) for k, p in pids.items()}
            n = max(1, int(run["done"]))
            run["cpu_us_per_request"] = {k: round((cpu1[k] - cpu0[k]) / n * 1e6, 1) for k in pids}
            if gc0 is not None:
                gc1 = gc_stats(server)
                run["server_gc_us_per_request"] = round(
                    (gc1["seconds"] - gc0["seconds"]) / n * 1e6, 1
                )
                run["server_gc_collections"] = [
                    b - a for a, b in zip(gc0["collections"], gc1["collections"], strict=True)
                ]
                run["server_gc_ms_by_generation"] = [
                    round((b - a) * 1000, 1)
                    for a, b in zip(gc0["by_generation"], gc1["by_generation"], strict=True)
                ]
                run["server_tracked_objects"] = gc1["tracked_objects"]
                run["server_gc_collected"] = gc1["collected"] - gc0["collected"]
            run["loadavg"] = os.getloadavg()[0]
            run["uptime_load_1_5_15"] = [round(x, 2) for x in os.getloadavg()]
            out["runs"].append(run)
        out["rss_after_load_kb"] = rss_kb(server.pid)
        load.stdin.write(b"quit\n")
        load.stdin.flush()
        load.wait(60)
        return out
    finally:
        if load.poll() is None:
            load.kill()
            load.wait()


def gc_stats(server: subprocess.Popen[bytes]) -> dict[str, Any]:
    """The gateway child's garbage-collector time so far (it answers SIGUSR1 on stdout)."""
    assert server.stdout is not None
    server.send_signal(signal.SIGUSR1)
    stats: dict[str, Any] = json.loads(server.stdout.readline())
    return stats


# ---------------------------------------------------------------------- child modes


class GcClock:
    """Times the collector's runs in this process (gc.callbacks), per generation."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.by_generation = [0.0, 0.0, 0.0]
        self.collections = [0, 0, 0]
        self.collected = 0
        """Objects the collector freed: garbage in reference cycles."""
        self._t0 = 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            spent = time.perf_counter() - self._t0
            self.seconds += spent
            self.by_generation[info["generation"]] += spent
            self.collections[info["generation"]] += 1
            self.collected += info["collected"]

    def report(self) -> None:
        line = json.dumps(
            {
                "seconds": self.seconds,
                "by_generation": self.by_generation,
                "collections": self.collections,
                "collected": self.collected,
                "tracked_objects": len(gc.get_objects()),
            }
        )
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


async def serve_gateway(redis_url: str, port: int, connections: int) -> None:
    from meetq.gateway.server import GatewayConfig, serve

    config = GatewayConfig(
        port=port,
        max_connections=connections + 100,
        connects_per_second=100_000,
        max_sessions_per_user=1_000,
        ping_interval=30.0,
    )
    ready = asyncio.Event()
    stop_event = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop_event.set)
    loop.add_signal_handler(signal.SIGUSR1, GcClock().report)
    task = asyncio.ensure_future(serve(redis_url, SECRET, config, stop=stop_event, ready=ready))
    await ready.wait()
    gc.collect()
    print("ready", flush=True)
    stats = await task
    print(json.dumps(stats), file=sys.stderr, flush=True)


async def noop_worker(redis_url: str) -> None:
    from meetq import ServiceWorker, TaskType

    w = ServiceWorker(redis_url, "ai-service", workers=64)
    w.register_handler(TaskType.SPEECH_RECOGNITION, lambda req: {"ok": True})
    stop_event = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop_event.set)
    async with w:
        print("ready", flush=True)
        await stop_event.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--rates", default="1000,5000")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--only", default="picows,websockets,gateway")
    parser.add_argument("--json")
    parser.add_argument("--serve-gateway", nargs=3, metavar=("REDIS_URL", "PORT", "N"))
    parser.add_argument("--noop-worker", metavar="REDIS_URL")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.serve_gateway:
        url, port, n = args.serve_gateway
        uvloop.run(serve_gateway(url, int(port), int(n)))
        return
    if args.noop_worker:
        uvloop.run(noop_worker(args.noop_worker))
        return
    if hard < args.connections + 1000:  # per process: the server and the load generator
        raise SystemExit(f"RLIMIT_NOFILE hard limit {hard} is too low for {args.connections}")
    rates = [float(r) for r in args.rates.split(",")]
    results: dict[str, Any] = {"connections": args.connections, "seconds": args.seconds}
    for lib in ("picows", "websockets"):
        if lib not in args.only:
            continue
        port = free_port()
        server = spawn([sys.executable, str(HERE / "gateway_echo.py"), lib, str(port)])
        try:
            results[f"echo_{lib}"] = measure(
                server,
                f"ws://127.0.0.1:{port}/",
                args.connections,
                rates,
                args.seconds,
                "echo",
                None,
            )
        finally:
            stop(server)
        print(json.dumps({f"echo_{lib}": results[f"echo_{lib}"]}), flush=True)
    if "gateway" in args.only:
        with running_redis() as redis_server:
            worker = spawn([sys.executable, __file__, "--noop-worker", redis_server.url])
            port = free_port()
            gateway = spawn(
                [
                    sys.executable,
                    __file__,
                    "--serve-gateway",
                    redis_server.url,
                    str(port),
                    str(args.connections),
                ]
            )
            try:
                results["gateway"] = measure(
                    gateway,
                    f"ws://127.0.0.1:{port}/",
                    args.connections,
                    rates,
                    args.seconds,
                    "ai.speech_recognition",
                    SECRET,
                    {"worker": worker.pid, "redis": redis_server.proc.pid},
                    gc_probe=True,
                )
            finally:
                stop(gateway)
                stop(worker)
        print(json.dumps({"gateway": results["gateway"]}), flush=True)
    results["command"] = " ".join(["python", *sys.argv])
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
