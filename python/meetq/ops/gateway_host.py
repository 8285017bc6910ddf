"""`meetq gateway --metrics-port P --dashboard-port D`: the gateway with /metrics and the
dashboard beside it.

The gateway speaks only WebSocket (picows answers nothing else), so its /metrics and the
dashboard are served on a side HTTP port of the same process. They see the process's own
dispatcher, sessions and connections, and the service queues in Redis. The dashboard's
requeue and purge take the same signed tokens as the gateway's clients
(`Authorization: Bearer <token>`, checked by the gateway's authenticator).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from typing import Any


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="meetq gateway",
        description="The WebSocket gateway with /metrics and the dashboard on a side port.",
    )
    p.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--secret-env", default="MEETQ_GATEWAY_SECRET")
    p.add_argument("--secret-file")
    p.add_argument("--http-host", default="127.0.0.1", help="address of /metrics, dashboard")
    p.add_argument("--metrics-port", type=int, help="serve /metrics on this port")
    p.add_argument("--dashboard-port", type=int, help="serve the dashboard (and /metrics)")
    return p


def wants_side_port(argv: list[str]) -> bool:
    return any(a.split("=", 1)[0] in ("--metrics-port", "--dashboard-port") for a in argv)


def run(argv: list[str]) -> int:
    from meetq.gateway.server import read_secret

    args = parser().parse_args(argv)
    secret = read_secret(args.secret_env, args.secret_file)
    import uvloop

    uvloop.run(serve(args, secret))
    return 0


async def serve(args: argparse.Namespace, secret: str, stop: asyncio.Event | None = None) -> None:
    from meetq.dispatch import TaskDispatcher
    from meetq.dispatch.types import default_routes
    from meetq.gateway.auth import AuthError, HmacAuthenticator
    from meetq.gateway.server import GatewayConfig, GatewayServer, collector_for_gateway
    from meetq.gateway.sessions import ClientTaskManager
    from meetq.ops.http import HttpServer
    from meetq.ops.metrics import MetricsHub
    from meetq.ops.queues import QueueInspector

    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    authenticator = HmacAuthenticator(secret)

    def authorize(token: str) -> bool:
        try:
            authenticator(token)
        except AuthError:
            return False
        return True

    queues = sorted({r.queue_name for r in default_routes()})
    inspector = QueueInspector(args.redis_url)
    hub = MetricsHub(inspector, queues)
    config = GatewayConfig(host=args.host, port=args.port)
    http = HttpServer(args.http_host, args.dashboard_port or args.metrics_port or 0)
    hub.routes(http)
    board: Any = None
    try:
        async with (
            TaskDispatcher(args.redis_url) as dispatcher,
            ClientTaskManager(dispatcher) as manager,
            GatewayServer(manager, authenticator, config) as gateway,
        ):
            hub.add_component("dispatcher", "gateway", dispatcher.get_stats)
            hub.add_component("sessions", "gateway", gateway.get_stats)
            if args.dashboard_port is not None:
                from meetq.ops.dashboard import Dashboard

                board = Dashboard(hub, authorize=authorize, title="meetq gateway")
                board.routes(http)
                await board.start()
            await http.start()
            print(
                f"gateway on ws://{args.host}:{gateway.port}/, "
                f"{'dashboard and ' if board else ''}metrics on {http.url}",
                file=sys.stderr,
                flush=True,
            )
            with collector_for_gateway():  # as `meetq gateway` without a side port
                await stop.wait()
    finally:
        await http.stop()
        if board is not None:
            await board.stop()
        await inspector.close()
