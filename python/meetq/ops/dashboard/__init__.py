"""The live web dashboard: queue depths and rates, the DLQ, sessions, streams, AI nodes.

Plain HTML/CSS/JS in `static/` (no build step, no framework). The page gets the whole
state once, then the server pushes only what changed over Server-Sent Events
(`/api/events`). One poller per dashboard reads the sources every `interval` through the
`MetricsHub` cache (O(1) Redis commands per queue), however many browsers watch.

The DLQ is read a page at a time (`/api/dlq`, filters on type and reason); requeue and
purge are POSTs that need `Authorization: Bearer <token>` (the gateway passes its own
check as `authorize`). Without a token or an `authorize`, the actions are refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import AsyncIterator, Callable
from importlib import resources
from typing import Any

from meetq.ops.http import EventStream, HttpServer, Request, Response
from meetq.ops.metrics import MetricsHub
from meetq.ops.queues import QueueSnapshot, dead_letter_dict

log = logging.getLogger("meetq.ops.dashboard")

_STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
_MAX_PAGE = 500


def _load_static() -> dict[str, bytes]:
    root = resources.files(__package__).joinpath("static")
    return {f.name: f.read_bytes() for f in root.iterdir() if f.name.rsplit(".", 1)[-1] != "py"}


class Dashboard:
    """Serves the page, the push stream, the DLQ API and the actions on an HttpServer."""

    def __init__(
        self,
        hub: MetricsHub,
        token: str | None = None,
        authorize: Callable[[str], bool] | None = None,
        interval: float = 1.0,
        title: str = "meetq",
    ) -> None:
        if hub.inspector is None:
            raise ValueError("the dashboard needs a MetricsHub with a QueueInspector")
        self.hub = hub
        self.inspector = hub.inspector
        self.interval = interval
        self.title = title
        self._token = token
        self._authorize = authorize
        self._static = _load_static()
        self._state: dict[str, Any] = {}
        self._prev: dict[str, QueueSnapshot] = {}
        self._subscribers: set[asyncio.Queue[tuple[str, object]]] = set()
        self._poller: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = False

    # ------------------------------------------------------------------ wiring

    def routes(self, server: HttpServer) -> None:
        server.route("GET", "/", self._index)
        server.route("GET", "/static/", self._static_file)
        server.route("GET", "/api/state", self._api_state)
        server.route("GET", "/api/events", self._api_events)
        server.route("GET", "/api/dlq", self._api_dlq)
        server.route("POST", "/api/dlq/requeue", self._api_requeue)
        server.route("POST", "/api/dlq/purge", self._api_purge)

    async def start(self) -> None:
        if self._poller is None:
            await self._tick()
            self._poller = asyncio.create_task(self._poll(), name="meetq-dashboard-poller")

    async def stop(self) -> None:
        if self._poller is not None:
            self._stopping = True
            self._wake.set()
            await asyncio.wait({self._poller})  # never swallows a cancel of our caller
            self._poller = None
            self._stopping = False
        for sub in list(self._subscribers):
            sub.put_nowait(("bye", {}))

    def poke(self) -> None:
        """Read the sources now (after an action) instead of at the next interval."""
        self._wake.set()

    # ------------------------------------------------------------------ state

    async def _poll(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._wake.wait()
            self._wake.clear()
            if self._stopping:
                return
            try:
                await self._tick()
            except Exception:
                log.exception("dashboard: reading the state failed")

    async def _tick(self) -> None:
        await self.hub.refresh(force=True)
        state = self._build_state()
        delta = {k: v for k, v in state.items() if self._state.get(k) != v and k != "time"}
        if "queues" in delta:
            old = self._state.get("queues", {})
            delta["queues"] = {name: q for name, q in state["queues"].items() if old.get(name) != q}
            gone = [name for name in old if name not in state["queues"]]
            if gone:
                delta["removed_queues"] = gone
        self._state = state
        if delta:
            delta["time"] = state["time"]
            for sub in list(self._subscribers):
                if sub.qsize() < 100:  # a stuck browser misses deltas, then gets a full state
                    sub.put_nowait(("delta", delta))
                else:
                    _drain(sub)
                    sub.put_nowait(("state", state))

    def _build_state(self) -> dict[str, Any]:
        queues: dict[str, Any] = {}
        now = time.time()
        for name in self.hub.queues:
            snap = self.hub.snapshot(name)
            if snap is None:
                continue
            entry = snap.as_dict()
            entry.pop("taken_at")
            prev = self._prev.get(name)
            dt = snap.taken_at - prev.taken_at if prev else 0.0
            if prev is not None and dt > 0:
                entry["rates"] = {
                    "published": round(max(0, snap.published - prev.published) / dt, 1),
                    "processed": round(max(0, snap.processed - prev.processed) / dt, 1),
                    "failed": round(max(0, snap.failed - prev.failed) / dt, 1),
                    # net change of each priority's depth (+ growing, - draining)
                    "ready": {p: round((n - prev.ready[p]) / dt, 1) for p, n in snap.ready.items()},
                }
            else:
                entry["rates"] = {"published": 0.0, "processed": 0.0, "failed": 0.0, "ready": {}}
            entry["oldest_ready_age"] = round(snap.oldest_ready_age, 1)
            queues[name] = entry
            if prev is None or snap.taken_at - prev.taken_at >= self.interval * 0.5:
                self._prev[name] = snap
        components: dict[str, dict[str, Any]] = {}
        for (kind, name), stats in self.hub.component_stats().items():
            components.setdefault(kind, {})[name] = _jsonable(stats)
        for stream in self.hub.streams:
            card: dict[str, Any] = {"length": stream.length, "dead letters": stream.dead_letters}
            for group, g in stream.groups.items():
                card[f"{group}: lag"] = g["lag"]
                card[f"{group}: pending"] = g["pending"]
            components.setdefault("streams", {})[stream.topic] = card
        return {
            "title": self.title,
            "time": now,
            "redis_up": self.hub._redis_up == 1,
            "queues": queues,
            "components": components,
            "actions": self._token is not None or self._authorize is not None,
        }

    # ------------------------------------------------------------------ handlers

    async def _index(self, _: Request) -> Response:
        return Response(200, self._static["index.html"], _STATIC_TYPES[".html"])

    async def _static_file(self, req: Request) -> Response:
        name = req.path.removeprefix("/static/")
        body = self._static.get(name)
        if body is None or "/" in name:
            return Response.error(404, "no such file")
        return Response(200, body, _STATIC_TYPES.get("." + name.rsplit(".", 1)[-1], "text/plain"))

    async def _api_state(self, _: Request) -> Response:
        return Response.json(self._state)

    async def _api_events(self, _: Request) -> EventStream:
        sub: asyncio.Queue[tuple[str, object]] = asyncio.Queue()
        sub.put_nowait(("state", self._state))
        self._subscribers.add(sub)

        async def events() -> AsyncIterator[tuple[str, object]]:
            try:
                while True:
                    try:
                        async with asyncio.timeout(15.0):
                            item = await sub.get()
                    except TimeoutError:
                        item = ("ping", {})  # keeps proxies from closing an idle stream
                    if item[0] == "bye":
                        return
                    yield item
            finally:
                self._subscribers.discard(sub)

        return EventStream(events())

    def _queue_arg(self, value: object) -> str | None:
        return value if isinstance(value, str) and value in self.hub.queues else None

    async def _api_dlq(self, req: Request) -> Response:
        queue = self._queue_arg(req.query.get("queue"))
        if queue is None:
            return Response.error(404, "unknown queue")
        try:
            offset = int(req.query.get("offset", "0"))
            limit = int(req.query.get("limit", "25"))
        except ValueError:
            return Response.error(400, "offset and limit must be integers")
        if offset < 0 or not 1 <= limit <= _MAX_PAGE:
            return Response.error(400, f"offset >= 0 and 1 <= limit <= {_MAX_PAGE}")
        page = await self.inspector.dead_letter_page(
            queue, offset, limit, req.query.get("type", ""), req.query.get("reason", "")
        )
        return Response.json(
            {
                "queue": queue,
                "offset": offset,
                "total": page.total,
                "next_offset": page.next_offset,
                "scanned": page.scanned,
                "entries": [dead_letter_dict(e) for e in page.entries],
            }
        )

    def _allowed(self, req: Request) -> bool:
        auth = req.headers.get("authorization", "")
        scheme, _, credential = auth.partition(" ")
        if scheme.lower() != "bearer" or not credential:
            return False
        if self._authorize is not None:
            try:
                return bool(self._authorize(credential))
            except Exception:
                return False
        return self._token is not None and hmac.compare_digest(
            credential.encode(), self._token.encode()
        )

    async def _action_body(self, req: Request) -> tuple[str, dict[str, Any]] | Response:
        if not self._allowed(req):
            return Response.error(401, "requeue and purge need a valid token")
        try:
            body = req.json()
        except ValueError:
            return Response.error(400, "body must be JSON")
        if not isinstance(body, dict):
            return Response.error(400, "body must be a JSON object")
        queue = self._queue_arg(body.get("queue"))
        if queue is None:
            return Response.error(404, "unknown queue")
        return queue, body

    async def _api_requeue(self, req: Request) -> Response:
        parsed = await self._action_body(req)
        if isinstance(parsed, Response):
            return parsed
        queue, body = parsed
        count = body.get("count")
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 100_000:
            return Response.error(400, "count must be an integer from 1 to 100000")
        moved = await self.inspector.queue(queue).requeue_dead_letters(count)
        log.info("dashboard: requeued %d dead letters of %s", moved, queue)
        self.poke()
        return Response.json({"queue": queue, "requeued": moved})

    async def _api_purge(self, req: Request) -> Response:
        parsed = await self._action_body(req)
        if isinstance(parsed, Response):
            return parsed
        queue, body = parsed
        if body.get("confirm") != queue:
            return Response.error(400, "purge needs confirm = the queue's name")
        removed = await self.inspector.queue(queue).purge_dead_letters()
        log.info("dashboard: purged %d dead letters of %s", removed, queue)
        self.poke()
        return Response.json({"queue": queue, "purged": removed})


def _drain(q: asyncio.Queue[Any]) -> None:
    while not q.empty():
        q.get_nowait()


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)
