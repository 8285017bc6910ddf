"""AIService: the ai_tasks worker that runs each AI task on a StackFlow node.

A `ServiceWorker` on the AI service's queue has one handler per mapped task type. The
handler takes the input from the task payload, picks a node, runs the inference through
the StackFlowClient and returns the joined output as the task result; a failure (node
error, timeout, node gone) fails the task, so the queue's retries and DLQ apply.

Nodes: each `StackFlowClient` is one unit-manager directory (one edge host) with its
nodes; for every (unit, model, options) a work_id is set up once per client, lazily, and
set up again when the client no longer knows it (`UnitNotFoundError`); a node that went
away is set up again by its client under the same work_id, which tasks wait for when no
other node is ready. Requests go to
the available work_id with the fewest requests in flight, which spreads load over
several nodes of the same unit.

Events: after each task, `on_event(name, payload)` is called with
`events.AI_TASK_COMPLETED` or `events.AI_TASK_FAILED` (wire it to a RedisPubSubQueue or
a LocalEventBus; a failing callback is logged, never fails the task).
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio

from meetq import events
from meetq.ai.client import StackFlowClient
from meetq.ai.errors import NodeUnavailableError, StackFlowError, UnitNotFoundError
from meetq.dispatch import ServiceWorker, TaskRequest

log = logging.getLogger(__name__)

EventCallback = Callable[[str, dict[str, Any]], Awaitable[None] | None]


@dataclass(frozen=True)
class ModelRoute:
    """Where a task type runs and how its payload becomes the node's input.

    `inputs` are the payload keys tried in order (a string, or a list of stream chunks,
    e.g. base64 audio); `setup_keys` are payload keys that become setup options (a task
    with other `keywords` gets its own work_id); `json_output` parses the node's output
    as a JSON object for the result (sentiment's label and scores)."""

    unit: str
    model: str
    response_format: str = "llm.utf-8.stream"
    input: str = "llm.utf-8.stream"
    inputs: tuple[str, ...] = ("text", "data", "input")
    setup_keys: tuple[str, ...] = ()
    json_output: bool = False
    setup: Mapping[str, Any] = field(default_factory=dict)


def default_route(task_type: str, unit: str, model: str) -> ModelRoute:
    """The seed's AI types with the inputs our models expect."""
    if task_type == "speech_recognition":
        return ModelRoute(unit, model, inputs=("audio", "data"), setup_keys=("keywords",))
    if task_type == "emotion_detection":
        return ModelRoute(
            unit,
            model,
            response_format="llm.utf-8",
            input="llm.utf-8",
            inputs=("text", "transcript", "data"),
            json_output=True,
        )
    return ModelRoute(unit, model)


LATENCY_WINDOW = 1024


def _quantile(window: collections.deque[float], q: float) -> float:
    ordered = sorted(window)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass(eq=False)
class _Target:
    """One (client, setup) pair: its work_id once set up, and its load."""

    client: StackFlowClient
    work_id: str | None = None
    inflight: int = 0
    setting_up: asyncio.Task[str] | None = None
    retry_at: float = 0.0


class AIService:
    """`AIService(redis, client_or_clients, models={TaskType.X: ("llm", "asr"), ...})`."""

    def __init__(
        self,
        redis_or_url: str | redis.asyncio.Redis,
        clients: StackFlowClient | Sequence[StackFlowClient],
        models: Mapping[str, ModelRoute | tuple[str, str]],
        *,
        service_name: str = "ai-service",
        queue_name: str | None = None,
        workers: int = 64,
        on_event: EventCallback | None = None,
        setup_retry: float = 1.0,
        timing: bool = False,
        **worker_options: Any,
    ) -> None:
        self.clients = [clients] if isinstance(clients, StackFlowClient) else list(clients)
        if not self.clients:
            raise ValueError("AIService needs at least one StackFlowClient")
        self.routes: dict[str, ModelRoute] = {
            str(t): r if isinstance(r, ModelRoute) else default_route(str(t), *r)
            for t, r in models.items()
        }
        self.on_event = on_event
        self.setup_retry = setup_retry
        self.timing = timing  # adds {"timing": {created_at, picked_up, infer_s, done}}
        self.worker = ServiceWorker(
            redis_or_url, service_name, queue_name=queue_name, workers=workers, **worker_options
        )
        self._targets: dict[tuple[Any, ...], list[_Target]] = {}
        self._own_clients: list[StackFlowClient] = []
        self.completed = 0
        self.failed = 0
        # the last LATENCY_WINDOW successful runs per task type, node round trip included
        self._latency: dict[str, collections.deque[float]] = {}
        for task_type in self.routes:
            self.worker.register_handler(task_type, self._handler(task_type))

    async def start(self) -> None:
        """Starts the worker, and the clients not started yet (those it also stops)."""
        for client in self.clients:
            if not client.started:
                await client.start()
                self._own_clients.append(client)
        await self.worker.start()

    async def stop(self) -> None:
        await self.worker.stop()
        for targets in self._targets.values():
            for target in targets:
                if target.setting_up is not None:
                    target.setting_up.cancel()
        for client in self._own_clients:
            await client.stop()
        self._own_clients.clear()

    async def __aenter__(self) -> AIService:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def get_stats(self) -> dict[str, Any]:
        return {
            "completed": self.completed,
            "failed": self.failed,
            "work_ids": {
                "/".join(map(str, key[:2])): [t.work_id for t in targets]
                for key, targets in self._targets.items()
            },
            # per task type over its last LATENCY_WINDOW runs (gauges on /metrics)
            "latency_p50_seconds": {t: _quantile(w, 0.5) for t, w in self._latency.items() if w},
            "latency_p99_seconds": {t: _quantile(w, 0.99) for t, w in self._latency.items() if w},
            # node health, per set-up model and host (the dashboard's AI card shows it)
            "nodes": {
                f"{'/'.join(map(str, key[:2]))} #{i}": (
                    f"{'up' if self._up(t) else 'down'}, {t.inflight} in flight"
                )
                for key, targets in self._targets.items()
                for i, t in enumerate(targets)
            },
        }

    @staticmethod
    def _up(target: _Target) -> bool:
        return target.work_id is not None and target.client.available(target.work_id)

    # --- the task handler ---------------------------------------------------------

    def _handler(self, task_type: str) -> Callable[[TaskRequest], Awaitable[dict[str, Any]]]:
        """The task type's handler: one coroutine per task, no other task, future or
        timer of its own (the node call is a future; the work_id pick is synchronous once
        a node is ready)."""
        route = self.routes[task_type]
        inputs, setup_keys, json_output = route.inputs, route.setup_keys, route.json_output
        plain_key = self._key(route, {})  # the targets of a task without setup options
        window = self._latency[task_type] = collections.deque(maxlen=LATENCY_WINDOW)
        monotonic = time.monotonic

        async def run(request: TaskRequest) -> dict[str, Any]:
            started = monotonic()
            payload = request.payload
            try:
                data: Any = None
                for name in inputs:
                    if name in payload:
                        data = payload[name]
                        break
                if isinstance(data, list):
                    data = [str(x) for x in data]
                elif not isinstance(data, str):
                    raise StackFlowError(f"payload needs one of {', '.join(inputs)}", -24)
                if setup_keys:
                    options = {k: payload[k] for k in setup_keys if k in payload}
                    key = self._key(route, options) if options else plain_key
                else:
                    options, key = {}, plain_key
                timeout = request.timeout if request.timeout and request.timeout > 0 else None
                picked_up = time.time() if self.timing else 0.0
                target = self._ready(key)
                if target is None:
                    target = await self._pick(key, route, options, timeout)
                work_id = target.work_id
                assert work_id is not None
                target.inflight += 1
                sent = time.perf_counter()
                try:
                    output = await target.client.infer(work_id, data, timeout=timeout)
                except UnitNotFoundError:
                    target.work_id = None  # the client forgot it: set up again next task
                    raise
                finally:
                    target.inflight -= 1
                result: dict[str, Any]
                if json_output:
                    value = orjson.loads(output)
                    result = value if isinstance(value, dict) else {"value": value}
                else:
                    result = {"text": output}
            except Exception as exc:
                self.failed += 1
                if self.on_event is not None:
                    await self._emit(
                        events.AI_TASK_FAILED,
                        {"task_id": request.id, "type": task_type, "error": str(exc)},
                    )
                raise
            self.completed += 1
            took = monotonic() - started
            window.append(took)
            if self.timing:
                result["timing"] = {
                    "created_at": request.created_at,
                    "picked_up": picked_up,
                    "infer_s": time.perf_counter() - sent,
                    "done": time.time(),
                }
            if self.on_event is not None:
                await self._emit(
                    events.AI_TASK_COMPLETED,
                    {"task_id": request.id, "type": task_type, "duration": took},
                )
            return result

        return run

    # --- work_ids -------------------------------------------------------------------

    @staticmethod
    def _key(route: ModelRoute, options: dict[str, Any]) -> tuple[Any, ...]:
        return (route.unit, route.model, orjson.dumps(options, option=orjson.OPT_SORT_KEYS))

    def _ready(self, key: tuple[Any, ...]) -> _Target | None:
        """The ready target with the fewest requests in flight, if any (the hot path)."""
        best: _Target | None = None
        for target in self._targets.get(key, ()):
            work_id = target.work_id
            if (
                (best is None or target.inflight < best.inflight)
                and work_id is not None
                and target.client.available(work_id)
            ):
                best = target
        return best

    async def _pick(
        self,
        key: tuple[Any, ...],
        route: ModelRoute,
        options: dict[str, Any],
        timeout: float | None,
    ) -> _Target:
        """A target once one is ready: sets the (unit, model, options) up where needed,
        waits for a node coming back."""
        targets = self._targets.get(key)
        if targets is None:
            targets = self._targets[key] = [_Target(c) for c in self.clients]
        ready = self._ready(key)
        if ready is not None:
            return ready
        now = time.monotonic()
        waits: list[asyncio.Future[Any]] = []
        for target in targets:
            if target.work_id is not None:
                # Its node went away: the client sets it up again under the same work_id.
                waits.append(
                    asyncio.ensure_future(
                        target.client.wait_available(target.work_id, timeout or 30.0)
                    )
                )
            elif target.setting_up is None and target.retry_at <= now:
                target.setting_up = asyncio.ensure_future(self._setup(target, route, options))
        waiting = waits + [t.setting_up for t in targets if t.setting_up is not None]
        if not waiting:
            raise NodeUnavailableError(f"no node serves {route.unit}/{route.model} right now")
        done, _ = await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        for fut in waits:
            fut.cancel()  # availability waits end here; set-ups go on for the next task
        ready = self._ready(key)
        if ready is not None:
            return ready
        errors = [f.exception() for f in done if not f.cancelled()]
        raise next((e for e in errors if e is not None), None) or NodeUnavailableError(
            f"no node could set up {route.unit}/{route.model}"
        )

    async def _setup(self, target: _Target, route: ModelRoute, options: dict[str, Any]) -> str:
        try:
            work_id = await target.client.setup(
                route.unit,
                route.model,
                response_format=route.response_format,
                input=route.input,
                **{**route.setup, **options},
            )
        except BaseException:
            target.retry_at = time.monotonic() + self.setup_retry
            raise
        finally:
            target.setting_up = None
        target.work_id = work_id
        return work_id

    async def _emit(self, name: str, payload: dict[str, Any]) -> None:
        if self.on_event is None:
            return
        try:
            result = self.on_event(name, payload)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("AIService event callback failed for %s", name)
