"""The demo's phases around the load: clean queues, the dashboard, live progress while
the load runs and drains, and the summary read back from Redis and the components."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

from rich.console import Console
from rich.live import Live

from meetq.ops.demo_report import group_reasons, progress_view, summary_tables
from meetq.ops.queues import QueueInspector

if TYPE_CHECKING:
    from meetq.ops.demo import Demo

DEMO_QUEUES = ("ai_tasks", "media_tasks", "meeting_tasks", "signaling_tasks")
DRAIN_DEADLINE = 30.0


async def clean_queues(url: str) -> None:
    """The demo's queues start and end empty (it may be pointed at a shared Redis)."""
    from meetq._redis.keys import QueueKeys, StreamKeys
    from meetq.ops.common import redis_client
    from meetq.ops.demo_events import TOPIC

    r = redis_client(url)
    try:
        await r.delete(*[k for name in DEMO_QUEUES for k in QueueKeys(name).all])
        await r.delete(StreamKeys(TOPIC).stream, StreamKeys(TOPIC).dead)
    finally:
        await r.aclose()


async def live_load(demo: Demo, console: Console) -> bool:
    """Runs the load with a live view, then waits (bounded) until every task finished."""
    depths: dict[str, int] = {}
    inspector = QueueInspector(demo.url)
    t, duration = demo.tally, demo.config.duration
    try:
        with Live(console=console, refresh_per_second=8, transient=True) as live:

            async def track() -> None:
                while True:
                    for s in await inspector.snapshots(demo.queue_names):
                        depths[s.name] = s.ready_total + s.delayed + s.inflight
                    live.update(progress_view(t, duration, depths, "load"))
                    await asyncio.sleep(0.25)

            tracker = asyncio.create_task(track())
            try:
                await demo._load(lambda: None)
                deadline = time.monotonic() + DRAIN_DEADLINE
                while not await demo._drained() and time.monotonic() < deadline:
                    live.update(progress_view(t, duration, depths, "drain"))
                    await asyncio.sleep(0.05)
            finally:
                tracker.cancel()
                await asyncio.wait({tracker})
        return await demo._drained()
    finally:
        await inspector.close()


async def summarize(demo: Demo, drained: bool) -> None:
    t = demo.tally
    inspector = QueueInspector(demo.url)
    reasons: list[str] = []
    retried = 0
    try:
        for name in demo.queue_names:
            snap = await inspector.snapshot(name)
            retried += snap.retried
            offset: int | None = 0
            while offset is not None:
                page = await inspector.dead_letter_page(name, offset, 500)
                offset = page.next_offset
                for d in page.entries:
                    reasons.append(d.reason)
                    payload = d.message.payload if d.message else {}
                    if "client_type" in payload:  # the queue path: no client saw it fail
                        t.failed[(payload["client_type"], payload["prio"])] += 1
    finally:
        await inspector.close()
    t.dlq_reasons = group_reasons(reasons)
    bus = demo.bus.get_stats()
    extra = {
        "retries": f"{retried:,}",
        "dropped events (local bus)": f"{bus['dropped_events']:,}",
        "refused at the edge": f"{sum(t.refused.values()):,}",
        **demo.fanout.summary(),
    }
    for key, get_stats in demo.path.components().items():
        stats = get_stats()
        if key[0] == "dispatcher":
            extra["dispatcher timeouts"] = f"{stats.get('total_timeout', 0):,}"
        if key[0] == "sessions":
            extra["gateway sessions / bad frames"] = (
                f"{stats.get('active_sessions', 0):,} / {stats.get('bad_frames', 0):,}"
            )
    out = Console()
    for table in summary_tables(t, extra):
        out.print(table)
    for note in t.notes:
        out.print(f"[dim]note:[/] {note}")
    if not drained:
        out.print("[red]not every task finished within the drain deadline[/]")


async def dashboard(demo: Demo, stack: contextlib.AsyncExitStack) -> str:
    import secrets

    from meetq.ops.dashboard import Dashboard
    from meetq.ops.http import HttpServer
    from meetq.ops.metrics import MetricsHub

    inspector = QueueInspector(demo.url)
    stack.push_async_callback(inspector.close)
    hub = MetricsHub(inspector, demo.queue_names)
    hub.add_component("bus", "demo", demo.bus.get_stats)
    hub.add_component("scheduler", "demo", demo.scheduler.get_stats)
    from meetq.ops.demo_events import TOPIC

    hub.watch_stream(TOPIC)
    for (kind, name), get_stats in demo.path.components().items():
        hub.add_component(kind, name, get_stats)
    token = secrets.token_urlsafe(12)
    board = Dashboard(hub, token=token, title="meetq demo")
    server = HttpServer("127.0.0.1", demo.config.dashboard_port)
    hub.routes(server)
    board.routes(server)
    await board.start()
    stack.push_async_callback(board.stop)
    await server.start()
    stack.push_async_callback(server.stop)
    return f"{server.url}/#token={token}"
