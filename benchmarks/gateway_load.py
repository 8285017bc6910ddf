"""Load generator of the gateway benchmark, in its own process (run as a script).

usage: gateway_load.py URL CONNECTIONS [SECRET]

Opens CONNECTIONS WebSocket connections (picows client, one token each when SECRET is
given), prints "connected <n> <seconds>", then obeys stdin lines:
  rate R SECONDS TYPE [CONNS [DATA]]
                        paced requests at R/s spread round-robin over the connections
                        (the first CONNS of them, when given; DATA: the requests' `data`
                        as JSON without spaces, default {"n": i});
                        prints one JSON line: sent, done, errors (by status), p50/p90/
                        p99/p99.9/max (ms), measured from each request's scheduled send
                        time (no coordinated omission); and this process's own lag, so a
                        figure says whether the generator or the server was late:
                        send lag (actual - scheduled send time, p99/max) and loop
                        lag (how late a 5 ms ticker fired, p99/max). A final frame whose
                        data holds a `timing` (the AIService's, benchmarks/bench_ai_path.py)
                        adds the per-hop times, p50 and p99: `in` scheduled send ->
                        created_at, `pickup`, `zmq` (infer_s), `back` done -> received.
  quit                  closes everything and exits
A final frame is any frame with the request's id whose status is not "accepted"; an
`accepted` frame is recognised by its bytes (the gateway's encoding ends with
`"status":"accepted"}`), not decoded, so the generator spends its CPU where the server
makes it. Requests for a connection the server closed are not sent (`not_sent`).
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import resource
import sys
import time
from typing import Any

import orjson
import uvloop
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

PENDING: dict[str, float] = {}
LATENCIES: list[float] = []
STATUSES: collections.Counter[str] = collections.Counter()
FIRST_ERROR: list[str] = []
SEND_LAG: list[float] = []
HOPS: list[tuple[float, float, float, float, float, float]] = []
"""(scheduled send, received, created_at, picked_up - created_at, infer_s, done): the
perf clock for the first two, the wall clock for created_at and done."""
ACCEPTED_TAIL = b'"status":"accepted"}'


class Client(WSListener):  # type: ignore[misc]
    def __init__(self) -> None:
        self.transport: WSTransport | None = None
        self.closed = False

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.closed = True

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type != WSMsgType.TEXT:
            return
        payload = frame.get_payload_as_bytes()
        if payload.endswith(ACCEPTED_TAIL):
            return
        msg = orjson.loads(payload)
        status = msg.get("status")
        if status == "accepted":
            return
        sent = PENDING.pop(msg.get("request_id", ""), None)
        if sent is None:
            return
        now = time.perf_counter()
        if status not in (None, "success"):
            STATUSES[str(status)] += 1
            if not FIRST_ERROR:
                FIRST_ERROR.append(payload[:300].decode(errors="replace"))
            return
        LATENCIES.append(now - sent)
        data = msg.get("data")
        timing = data.get("timing") if type(data) is dict else None
        if timing:
            created = timing["created_at"]
            pickup = timing["picked_up"] - created
            HOPS.append((sent, now, created, pickup, timing["infer_s"], timing["done"]))


async def connect_all(url: str, n: int, secret: str | None) -> list[Client]:
    from meetq.gateway.auth import make_token

    sem = asyncio.Semaphore(100)
    clients: list[Client] = []

    async def one(i: int) -> None:
        target = url
        if secret:
            target = f"{url}?token={make_token(secret, user_id=i, meeting_id=1, ttl=3600)}"
        async with sem:
            for attempt in range(20):
                try:
                    _, client = await ws_connect(Client, target, websocket_handshake_timeout=30)
                    clients.append(client)
                    return
                except Exception:
                    await asyncio.sleep(0.05 * (attempt + 1))  # backoff between retries
            raise RuntimeError(f"connection {i} failed")

    await asyncio.gather(*(one(i) for i in range(n)))
    return clients


class Ticker:
    """How late this process's loop runs a 5 ms periodic callback: the generator's own
    backlog, which would otherwise show up as the server's latency."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self.handle: asyncio.TimerHandle | None = None
        self.due = 0.0

    def start(self) -> None:
        self.due = time.perf_counter() + 0.005
        self.handle = asyncio.get_running_loop().call_later(0.005, self.tick)

    def tick(self) -> None:
        now = time.perf_counter()
        self.lags.append(max(0.0, now - self.due))
        self.due = now + 0.005
        self.handle = asyncio.get_running_loop().call_later(0.005, self.tick)

    def stop(self) -> None:
        if self.handle is not None:
            self.handle.cancel()


def quantile_ms(values: list[float], p: float) -> float:
    """The p-quantile of sorted `values` (seconds) in ms; -1 when empty."""
    if not values:
        return -1.0
    return round(values[min(len(values) - 1, int(p * len(values)))] * 1000, 2)


async def paced(
    clients: list[Client], rate: float, seconds: float, ttype: str, data: Any = None
) -> dict[str, Any]:
    for kept in (PENDING, LATENCIES, STATUSES, FIRST_ERROR, SEND_LAG, HOPS):
        kept.clear()
    total = int(rate * seconds)
    ticker = Ticker()
    ticker.start()
    wall_minus_perf = time.time() - time.perf_counter()
    start = time.perf_counter()
    sent = not_sent = 0
    k = 0
    while sent + not_sent < total:
        now = time.perf_counter()
        due = min(total, int((now - start) * rate) + 1)
        while sent + not_sent < due:
            i = sent + not_sent
            client = clients[k % len(clients)]
            k += 1
            if client.closed or client.transport is None:
                not_sent += 1  # the server closed this session
                continue
            rid = f"r{i}"
            scheduled = start + i / rate
            PENDING[rid] = scheduled
            body = {"n": i} if data is None else data
            frame = orjson.dumps({"request_id": rid, "type": ttype, "data": body})
            client.transport.send(WSMsgType.TEXT, frame)
            SEND_LAG.append(time.perf_counter() - scheduled)
            sent += 1
        await asyncio.sleep(0.001)  # pacing tick
    deadline = time.perf_counter() + 30
    while PENDING and time.perf_counter() < deadline:
        await asyncio.sleep(0.01)  # drain the tail (bounded)
    elapsed = time.perf_counter() - start
    ticker.stop()
    lat = sorted(LATENCIES)
    send_lag = sorted(SEND_LAG)
    loop_lag = sorted(ticker.lags)

    def q(p: float) -> float:
        return quantile_ms(lat, p)

    return {
        "rate": rate,
        "sent": sent,
        "not_sent": not_sent,
        "done": len(lat),
        "lost": len(PENDING),
        "errors": sum(STATUSES.values()),
        "statuses": dict(STATUSES),
        "first_error": FIRST_ERROR[0] if FIRST_ERROR else "",
        "seconds": round(elapsed, 2),
        "achieved": round(len(lat) / elapsed, 1),
        "p50_ms": q(0.50),
        "p90_ms": q(0.90),
        "p99_ms": q(0.99),
        "p999_ms": q(0.999),
        "max_ms": round(lat[-1] * 1000, 2) if lat else -1.0,
        "hops_ms": hop_quantiles(wall_minus_perf),
        "load_send_lag_p99_ms": quantile_ms(send_lag, 0.99),
        "load_send_lag_max_ms": quantile_ms(send_lag, 1.0),
        "load_loop_lag_p99_ms": quantile_ms(loop_lag, 0.99),
        "load_loop_lag_max_ms": quantile_ms(loop_lag, 1.0),
    }


def hop_quantiles(wall_minus_perf: float) -> dict[str, list[float]]:
    """Per hop [p50, p99] ms of the finals that carried a `timing` (none: empty)."""
    hops: dict[str, list[float]] = {"in": [], "pickup": [], "zmq": [], "back": []}
    for sent, received, created, pickup, infer, done in HOPS:
        hops["in"].append(created - (sent + wall_minus_perf))
        hops["pickup"].append(pickup)
        hops["zmq"].append(infer)
        hops["back"].append(received + wall_minus_perf - done)
    out = {}
    for name, values in hops.items():
        if values:
            values.sort()
            out[name] = [quantile_ms(values, 0.5), quantile_ms(values, 0.99)]
    return out


async def main(url: str, n: int, secret: str | None) -> None:
    t0 = time.perf_counter()
    clients = await connect_all(url, n, secret)
    print(f"connected {len(clients)} {time.perf_counter() - t0:.2f}", flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = (await reader.readline()).decode().split()
        if not line or line[0] == "quit":
            break
        if line[0] == "rate":
            use = clients[: int(line[4])] if len(line) > 4 else clients
            data = orjson.loads(line[5]) if len(line) > 5 else None
            result = await paced(use, float(line[1]), float(line[2]), line[3], data)
            print(json.dumps(result), flush=True)
    for c in clients:
        if c.transport is not None:
            c.transport.disconnect()


if __name__ == "__main__":
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    uvloop.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else None))
    os._exit(0)
