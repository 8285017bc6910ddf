"""Component life cycle: idempotent start/stop, `async with`, and supervised background
tasks that never die silently.

    class Thing(Component):
        async def _on_start(self) -> None:
            self.supervise("fetcher", self._fetch_loop)   # restarted with backoff if it dies
        async def _on_stop(self) -> None:
            ...                                           # hand work back, close what we opened

    async with Thing() as t: ...        # = await t.start() ... await t.stop()
    t.state, t.healthy                  # for QueueManager.health()

A supervised task that raises is logged at ERROR with its traceback and started again after
`meetq._core.backoff.backoff(attempt)`; one that returns is done. After `max_restarts`
deaths in a row (a run of `stable_after` seconds or more resets the count) the component
is marked `failed` and stays unhealthy. `stop()` runs `_on_stop` (which usually lets the
tasks finish at a safe point), then cancels and awaits every supervised task still running,
even when `_on_stop` raised, and only then raises that error: it never leaks a task.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import Final, Self

from meetq._core.backoff import backoff

log = logging.getLogger("meetq.lifecycle")

NEW: Final = "new"
RUNNING: Final = "running"
STOPPING: Final = "stopping"
STOPPED: Final = "stopped"
FAILED: Final = "failed"


class Supervisor:
    """Background tasks of one component, restarted with backoff when they die."""

    def __init__(
        self,
        owner: str,
        max_restarts: int | None = None,
        stable_after: float = 10.0,
        on_failure: Callable[[str, BaseException], None] | None = None,
    ) -> None:
        self.owner = owner
        self.max_restarts = max_restarts
        self.stable_after = stable_after
        self.on_failure = on_failure
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._down: set[str] = set()  # died, waiting to restart (or given up)
        self.restarts: dict[str, int] = {}
        self.last_error: str | None = None
        self._closing = False

    @property
    def healthy(self) -> bool:
        """No supervised task is dead or waiting for its restart."""
        return not self._down

    @property
    def running(self) -> list[str]:
        return [name for name, task in self._tasks.items() if not task.done()]

    def supervise(self, name: str, factory: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        """Runs `factory()` as task `name` until it returns or the supervisor stops."""
        if name in self._tasks and not self._tasks[name].done():
            raise RuntimeError(f"{self.owner}: task {name!r} is already supervised")
        self._closing = False
        task = asyncio.get_running_loop().create_task(
            self._guard(name, factory), name=f"{self.owner}:{name}"
        )
        self._tasks[name] = task
        return task

    def task(self, name: str) -> asyncio.Task[None] | None:
        return self._tasks.get(name)

    async def _guard(self, name: str, factory: Callable[[], Awaitable[None]]) -> None:
        deaths = 0
        while True:
            began = time.monotonic()
            try:
                await factory()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._closing:
                    log.error("%s: %s died while stopping", self.owner, name, exc_info=True)
                    raise
                deaths = 1 if time.monotonic() - began >= self.stable_after else deaths + 1
                self.restarts[name] = self.restarts.get(name, 0) + 1
                self.last_error = f"{name}: {type(exc).__name__}: {_text(exc)}"
                self._down.add(name)
                if self.max_restarts is not None and deaths > self.max_restarts:
                    log.error(
                        "%s: %s died %d times in a row; giving up",
                        self.owner,
                        name,
                        deaths,
                        exc_info=True,
                    )
                    if self.on_failure is not None:
                        self.on_failure(name, exc)
                    return
                pause = backoff(deaths - 1, base=0.05, cap=5.0)
                log.error(
                    "%s: %s died; restarting in %.2fs", self.owner, name, pause, exc_info=True
                )
            await asyncio.sleep(pause)  # the restart backoff, not synchronization
            self._down.discard(name)

    async def stop(self, grace: float = 0.0, names: Iterable[str] | None = None) -> None:
        """Waits up to `grace` seconds for the tasks (all, or those `names`) to return, then
        cancels and awaits the rest. No task is restarted once this has begun."""
        if names is not None:
            await self._stop_some(grace, set(names))
            return
        self._closing = True
        tasks = [t for t in self._tasks.values() if not t.done()]
        if tasks and grace > 0:
            _, tasks_left = await asyncio.wait(tasks, timeout=grace)
            tasks = list(tasks_left)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        for task in self._tasks.values():
            if not task.cancelled():
                task.exception()  # logged by _guard already; retrieved, so asyncio is quiet
        self._tasks.clear()
        self._down.clear()

    async def _stop_some(self, grace: float, names: set[str]) -> None:
        self._closing = True  # a task that dies now is not restarted
        try:
            chosen = {n: t for n, t in self._tasks.items() if n in names}
            tasks = [t for t in chosen.values() if not t.done()]
            if tasks and grace > 0:
                _, late = await asyncio.wait(tasks, timeout=grace)
                tasks = list(late)
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks)
            for name, task in chosen.items():
                if not task.cancelled():
                    task.exception()
                del self._tasks[name]
                self._down.discard(name)
        finally:
            self._closing = False


def _text(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return "unprintable"


class Component:
    """Base of meetq components: idempotent `start`/`stop`, `async with`, `state`,
    `healthy`, and `supervise` for background tasks. Subclasses implement `_on_start` and
    `_on_stop`; `_on_stop` runs before the supervised tasks are cancelled, so it can let
    them finish at a safe point."""

    _component_name = "component"

    def __init__(self, name: str | None = None, max_restarts: int | None = None) -> None:
        self._supervisor = Supervisor(
            name or self._component_name, max_restarts, on_failure=self._supervised_failed
        )
        self._state: str = NEW
        self._transition: asyncio.Lock | None = None
        self._trouble: Exception | None = None

    @property
    def state(self) -> str:
        """new, running, stopping, stopped or failed."""
        return self._state

    @property
    def healthy(self) -> bool:
        """Running, every supervised task alive, and no outage reported."""
        return self._state == RUNNING and self._supervisor.healthy and self._trouble is None

    @property
    def error(self) -> Exception | None:
        """The outage reported by `_degraded` while it lasts (e.g. a MeetqConnectionError)."""
        return self._trouble

    @property
    def last_error(self) -> str | None:
        if self._trouble is not None:
            return f"{type(self._trouble).__name__}: {_text(self._trouble)}"
        return self._supervisor.last_error

    def _degraded(self, error: Exception) -> None:
        """A part cannot do its job for now (it keeps trying): unhealthy until `_recovered`."""
        self._trouble = error

    def _recovered(self) -> None:
        self._trouble = None

    @property
    def supervisor(self) -> Supervisor:
        """The supervisor of this component's background tasks (names, restarts, health)."""
        return self._supervisor

    def supervise(self, name: str, factory: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        return self._supervisor.supervise(name, factory)

    def _supervised_failed(self, name: str, exc: BaseException) -> None:
        self._state = FAILED

    def _lock(self) -> asyncio.Lock:
        if self._transition is None:
            self._transition = asyncio.Lock()
        return self._transition

    async def start(self) -> None:
        async with self._lock():
            if self._state in (RUNNING, FAILED):
                return
            self._state = RUNNING
            try:
                await self._on_start()
            except BaseException:
                # a half-started component takes down what it started
                self._state = STOPPING
                try:
                    await self._on_stop()
                finally:
                    await self._supervisor.stop()
                    self._state = STOPPED
                raise

    async def stop(self) -> None:
        async with self._lock():
            if self._state not in (RUNNING, FAILED):
                await self._on_idle_stop()
                return
            self._state = STOPPING
            try:
                await self._on_stop()
            finally:
                await self._supervisor.stop(self._stop_grace())
                self._state = STOPPED

    def _stop_grace(self) -> float:
        """Seconds `stop` waits for supervised tasks to return after `_on_stop`."""
        return 0.0

    async def _on_start(self) -> None:
        pass

    async def _on_stop(self) -> None:
        pass

    async def _on_idle_stop(self) -> None:
        """`stop()` of a component that is not running (e.g. close what publish opened)."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
