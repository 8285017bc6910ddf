"""The demo's platform path: WebSocket clients -> gateway -> dispatcher -> Redis ->
ServiceWorkers -> back to the client (used when meetq[gateway] is installed).

Each simulated client is a real WebSocket connection (the `websockets` library) with a
signed token for its user and meeting; it sends JSON frames and reads `accepted` and the
final frame, so its latency is end to end as a client sees it. The media service also
dispatches server-side recording tasks with retries, so retries and the DLQ show too.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable
from typing import Any

import orjson

from meetq.ops.demo_report import Tally

SERVICES = ("ai-service", "media-service", "meeting-service", "signaling-service")
Handlers = dict[str, dict[str, Callable[[dict[str, Any]], Any]]]


class Client:
    """One simulated user session over a real WebSocket connection."""

    def __init__(self, tally: Tally, user: int, meeting: int) -> None:
        self.tally = tally
        self.user = user
        self.meeting = meeting
        self.ws: Any = None
        self.pending: dict[str, tuple[str, str, float]] = {}
        self.inputs: dict[str, str] = {}  # rid -> the phrase spoken / the text scored
        self._reader: asyncio.Task[None] | None = None
        self._sends: set[asyncio.Future[Any]] = set()
        self._seq = 0

    async def connect(self, url: str) -> None:
        from websockets.asyncio.client import connect

        self.ws = await connect(url, compression=None, open_timeout=30, max_size=1 << 20)
        await self.ws.recv()  # welcome: the session id to resume with
        self._reader = asyncio.create_task(self._read(), name=f"demo-client-{self.user}")

    def _write(self, text: str) -> None:
        fut = asyncio.ensure_future(self.ws.send(text))
        self._sends.add(fut)
        fut.add_done_callback(self._sends.discard)

    def send(self, kind: str, priority: str, data: dict[str, Any], timeout: float = 15.0) -> None:
        self._seq += 1
        rid = f"u{self.user}-{self._seq}"
        said = data.pop("said", None)
        if said is not None or kind == "ai.emotion_detection":
            self.inputs[rid] = str(said if said is not None else data.get("text"))
        if kind == "ai.speech_recognition":
            timeout = 60.0  # real ASR queues behind the other utterances on a busy box
        self.pending[rid] = (kind, priority, time.monotonic())
        frame: dict[str, Any] = {"request_id": rid, "type": kind, "data": data}
        frame.update(priority=priority, timeout=timeout)
        self._write(orjson.dumps(frame).decode())

    def send_garbage(self) -> None:
        """A frame that is not JSON: the gateway answers with an error frame, nothing else."""
        self.tally.refused["(not JSON)"] += 1
        self._write("{this is not json")

    async def _read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        t = self.tally
        with contextlib.suppress(ConnectionClosed):
            async for raw in self.ws:
                frame = orjson.loads(raw)
                status = frame.get("status")
                rid = frame.get("request_id")
                if status == "accepted" or rid not in self.pending:
                    continue
                kind, prio, sent = self.pending.pop(rid)
                said = self.inputs.pop(rid, None)
                if status == "success":
                    t.completed[(kind, prio)] += 1
                    t.latencies.append(time.monotonic() - sent)
                    t.record_ai(kind, said, frame.get("data") or {})
                elif frame.get("code") == "unknown_type":
                    t.refused[kind] += 1
                    t.sent[(kind, prio)] -= 1
                else:
                    t.failed[(kind, prio)] += 1
                    t.errors[f"{status}: {frame.get('error') or frame.get('code')}"] += 1

    async def close(self) -> None:
        if self._sends:
            await asyncio.wait(set(self._sends), timeout=10)
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await self.ws.close()
        if self._reader is not None:
            await asyncio.wait({self._reader}, timeout=10)
            self._reader.cancel()


class GatewayPath:
    """Dispatcher, service workers, session manager and gateway; clients drive them."""

    name = "WebSocket gateway -> TaskDispatcher -> ServiceWorkers"

    def __init__(
        self,
        url: str,
        tally: Tally,
        handlers: Handlers,
        ai_service: Callable[[], Any] | None = None,
    ) -> None:
        self.url = url
        self.tally = tally
        self.handlers = handlers
        self.ai_service = ai_service  # makes the AIService (the ai-service's worker)
        self.ai: Any = None
        self.secret = secrets.token_urlsafe(24)
        self.clients: list[Client] = []
        self.dispatcher: Any = None
        self.gateway: Any = None
        self.workers: dict[str, Any] = {}
        self._server_side: dict[str, tuple[str, str]] = {}

    @property
    def queue_names(self) -> list[str]:
        return [w.queue_name for w in self.workers.values()]

    async def start(
        self, stack: contextlib.AsyncExitStack, sessions: list[tuple[int, int]]
    ) -> None:
        from meetq.dispatch import ServiceWorker, TaskDispatcher
        from meetq.gateway.auth import HmacAuthenticator, make_token
        from meetq.gateway.server import GatewayConfig, GatewayServer
        from meetq.gateway.sessions import ClientTaskManager

        for service in SERVICES:
            if service == "ai-service" and self.ai_service is not None:
                self.ai = await stack.enter_async_context(self.ai_service())
                self.workers[service] = self.ai.worker
                continue
            w = ServiceWorker(self.url, service, workers=16, retry_backoff=0.05)
            for ttype, fn in self.handlers.get(service, {}).items():
                w.register_handler(ttype, _adapt(fn))
            await stack.enter_async_context(w)
            self.workers[service] = w
        self.dispatcher = await stack.enter_async_context(TaskDispatcher(self.url))
        manager = await stack.enter_async_context(
            ClientTaskManager(self.dispatcher, max_in_flight=256)
        )
        config = GatewayConfig(
            port=0,
            max_sessions_per_user=4,
            max_frames_per_second=1000.0,
            ping_interval=30.0,
            max_frame_size=512 * 1024,  # a spoken command is ~100 KB of base64 PCM
        )
        self.gateway = GatewayServer(manager, HmacAuthenticator(self.secret), config)
        await stack.enter_async_context(self.gateway)
        stack.push_async_callback(self._close_clients)
        base = f"ws://127.0.0.1:{self.gateway.port}/"
        for user, meeting in sessions:
            client = Client(self.tally, user, meeting)
            await client.connect(f"{base}?token={make_token(self.secret, user, meeting)}")
            self.clients.append(client)

    async def _close_clients(self) -> None:
        await asyncio.gather(*(c.close() for c in self.clients))

    def send(self, session: int, kind: str, priority: str, data: dict[str, Any]) -> None:
        client = self.clients[session % len(self.clients)]
        if kind == "(not JSON)":
            client.send_garbage()
            return
        self.tally.sent[(kind, priority)] += 1
        client.send(kind, priority, data)

    async def server_side(self, kind: str, priority: str, data: dict[str, Any]) -> None:
        """A service dispatching a task itself (with retries), as the meeting service does
        for recordings; the outcome comes back to the callback."""
        from meetq.dispatch import TaskRequest, TaskStatus
        from meetq.priority import Priority

        t = self.tally
        t.sent[(kind, priority)] += 1
        started = time.monotonic()

        def done(resp: Any) -> None:
            if resp.status == TaskStatus.COMPLETED:
                t.completed[(kind, priority)] += 1
                t.latencies.append(time.monotonic() - started)
            else:
                t.failed[(kind, priority)] += 1
                t.errors[f"{resp.status}: {resp.error}"] += 1

        req = TaskRequest(
            type="recording",
            payload=data,
            priority=Priority.parse(priority),
            max_retries=2,
            timeout=20.0,
        )
        await self.dispatcher.dispatch_async(req, done)

    def outstanding(self) -> int:
        return sum(len(c.pending) for c in self.clients) + int(
            self.dispatcher.get_stats()["active_tasks"]
        )

    def components(self) -> dict[tuple[str, str], Callable[[], Any]]:
        out = {
            ("dispatcher", "demo"): self.dispatcher.get_stats,
            ("sessions", "gateway"): self.gateway.get_stats,
        }
        if self.ai is not None:
            out[("ai", "ai-service")] = self.ai.get_stats
        return out


def _adapt(fn: Callable[[dict[str, Any]], Any]) -> Callable[[Any], Any]:
    """A demo handler (payload dict in) as a ServiceWorker handler (TaskRequest in)."""
    import inspect

    if inspect.iscoroutinefunction(fn):

        async def run_async(req: Any) -> Any:
            return await fn(req.payload)

        return run_async

    def run(req: Any) -> Any:
        return fn(req.payload)

    return run
