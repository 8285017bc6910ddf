"""Load generator of the gateway benchmark, in its own process (run as a script).

usage: gateway_load.py URL CONNECTIONS [SECRET]

Opens CONNECTIONS WebSocket connections (picows client, one token each when SECRET is
given), prints "connected <n> <seconds>", then obeys stdin lines:
  rate R SECONDS TYPE   paced requests at R/s spread round-robin over the connections;
                        prints one JSON line: sent, done, errors, p50/p90/p99/max (ms),
                        measured from each request's scheduled send time (no
                        coordinated omission); and this process's own lag, so a
                        figure says whether the generator or the server was late:
                        send lag (actual - scheduled send time, p99/max) and loop
                        lag (how late a 5 ms ticker fired, p99/max)
  quit                  closes everything and exits
A final frame is any frame with the request's id whose status is not "accepted"; an
`accepted` frame is recognised by its bytes (the gateway's encoding ends with
`"status":"accepted"}`), not decoded, so the generator spends its CPU where the server
makes it.
"""

from __future__ import annotations

import asyncio
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
ERRORS = [0]
SEND_LAG: list[float] = []
ACCEPTED_TAIL = b'"status":"accepted"}'


class Client(WSListener):  # type: ignore[misc]
    def __init__(self) -> None:
        self.transport: WSTransport | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type != WSMsgType.TEXT:
            return
        payload = frame.get_payload_as_bytes()
        if payload.endswith(ACCEPTED_TAIL):
            return
        msg = orjson.loads(payload)
        if msg.get("status") == "accepted":
            return
        sent = PENDING.pop(msg.get("request_id", ""), None)
        if sent is None:
            return
        if msg.get("status") not in (None, "success"):
            ERRORS[0] += 1
        LATENCIES.append(time.perf_counter() - sent)


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


async def paced(clients: list[Client], rate: float, seconds: float, ttype: str) -> dict[str, Any]:
    PENDING.clear()
    LATENCIES.clear()
    SEND_LAG.clear()
    ERRORS[0] = 0
    total = int(rate * seconds)
    ticker = Ticker()
    ticker.start()
    start = time.perf_counter()
    sent = 0
    k = 0
    while sent < total:
        now = time.perf_counter()
        due = min(total, int((now - start) * rate) + 1)
        while sent < due:
            client = clients[k % len(clients)]
            k += 1
            rid = f"r{sent}"
            scheduled = start + sent / rate
            PENDING[rid] = scheduled
            frame = orjson.dumps({"request_id": rid, "type": ttype, "data": {"n": sent}})
            assert client.transport is not None
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
        "done": len(lat),
        "lost": len(PENDING),
        "errors": ERRORS[0],
        "seconds": round(elapsed, 2),
        "p50_ms": q(0.50),
        "p90_ms": q(0.90),
        "p99_ms": q(0.99),
        "max_ms": round(lat[-1] * 1000, 2) if lat else -1.0,
        "load_send_lag_p99_ms": quantile_ms(send_lag, 0.99),
        "load_send_lag_max_ms": quantile_ms(send_lag, 1.0),
        "load_loop_lag_p99_ms": quantile_ms(loop_lag, 0.99),
        "load_loop_lag_max_ms": quantile_ms(loop_lag, 1.0),
    }


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
            result = await paced(clients, float(line[1]), float(line[2]), line[3])
            print(json.dumps(result), flush=True)
    for c in clients:
        if c.transport is not None:
            c.transport.disconnect()


if __name__ == "__main__":
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    uvloop.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else None))
    os._exit(0)
