"""The one way meetq runs a user handler (queue, ServiceWorker, pub/sub, streams, bus,
scheduler), and the one rule for timeouts, cancellation and failure.

The rule:

- A plain `def` handler runs inline on the loop and is **not timed**: a running sync call
  cannot be interrupted, so if it returns it succeeded, however long it took. A completed
  run is never counted failed and never re-run.
- An `async def` handler runs in an asyncio Task of its own, started eagerly
  (`meetq._core.eager.start_eager`): its first step runs at once, inside that task, so
  `current_task()`, `asyncio.timeout()` and context variables there are the handler's,
  never the component's; a handler that never suspends is finished when `start` returns
  (no timer armed). The rest runs under the timeout. At the timeout the coroutine is
  cancelled and the run is a timeout failure.
- `in_thread=True` runs a plain function in the runner's thread pool. At the timeout the run
  is a timeout failure, but the thread cannot be stopped: the outcome carries it as
  `straggler`, and a component must hold the run's lease or slot until `await
  outcome.settled()` returns, so a retry never overlaps a run still going in this process.
- A `CancelledError` raised by the handler itself (it awaited something that was cancelled)
  is a failure of that run. Only the cancellation of the component's own task (stop,
  cancel_task) propagates as a cancellation.
- Every outcome carries a printable `error` (an exception whose `__str__` raises becomes
  "<ExceptionType: unprintable>"), the `duration` and the `result`. When the component
  passes `encode`, the result is encoded here and a result that cannot be encoded makes the
  run a failure, so what a waiter is told and what the stats count always agree.

API:

    spec = HandlerSpec.of(fn, in_thread=False)    # once, at registration
    runner = HandlerRunner(threads=4)             # owns the (lazy) thread pool
    step = runner.start(spec, arg, timeout)       # Outcome, or an awaitable of one
    outcome = step if isinstance(step, Outcome) else await step
    outcome = await runner.run(spec, arg, timeout)  # the same, always awaited
    runner.close()

`start` is the hot path: a sync handler or an async one that never suspends is finished
when it returns, and the caller awaits the rest only when there is a rest (typically in a
worker task of its own).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from operator import itemgetter
from types import CoroutineType
from typing import Any, Final

from meetq._core.eager import ASYNC, SYNC, THREAD, Resume, handler_kind, start_eager

COMPLETED: Final = "completed"
FAILED: Final = "failed"
TIMEOUT: Final = "timeout"

Encode = Callable[[Any], Any]

__all__ = [
    "ASYNC",
    "COMPLETED",
    "FAILED",
    "SYNC",
    "THREAD",
    "TIMEOUT",
    "HandlerRunner",
    "HandlerSpec",
    "Outcome",
    "describe",
]


def describe(exc: BaseException) -> str:
    """ "Type: text" for an exception, even one whose `__str__` raises."""
    name = type(exc).__name__
    try:
        text = str(exc)
    except Exception:
        return f"<{name}: unprintable>"
    return f"{name}: {text}"


class HandlerSpec:
    """A registered handler and how it runs (SYNC, ASYNC or THREAD)."""

    __slots__ = ("fn", "kind")

    def __init__(self, fn: Callable[..., Any], kind: int) -> None:
        self.fn = fn
        self.kind = kind

    @classmethod
    def of(cls, fn: Callable[..., Any], in_thread: bool = False) -> HandlerSpec:
        return cls(fn, handler_kind(fn, in_thread))


class Outcome(tuple[Any, ...]):
    """How one run ended. `status` is COMPLETED, FAILED or TIMEOUT (`ok`: completed);
    `error` is None only when completed; `encoded` is the encoded result when the run was
    given `encode`; `straggler` is a timed-out thread still running. (A tuple: made per
    run on the hot path, it costs a third of a plain object.)"""

    __slots__ = ()

    def __new__(
        cls,
        status: str,
        result: Any = None,
        error: str | None = None,
        duration: float = 0.0,
        encoded: Any = None,
        straggler: asyncio.Future[Any] | None = None,
    ) -> Outcome:
        return tuple.__new__(
            cls, (status, result, error, duration, encoded, straggler, status == COMPLETED)
        )

    status: str = property(itemgetter(0))  # type: ignore[assignment]
    result: Any = property(itemgetter(1))
    error: str | None = property(itemgetter(2))  # type: ignore[assignment]
    duration: float = property(itemgetter(3))  # type: ignore[assignment]
    encoded: Any = property(itemgetter(4))
    straggler: asyncio.Future[Any] | None = property(itemgetter(5))  # type: ignore[assignment]
    ok: bool = property(itemgetter(6))  # type: ignore[assignment]

    async def settled(self) -> None:
        """Returns once nothing of the run is still going (a timed-out thread returned)."""
        if self.straggler is not None:
            await asyncio.wait({self.straggler})

    def __repr__(self) -> str:
        return f"Outcome({self.status}, error={self.error!r}, duration={self.duration:.6f})"


_new = tuple.__new__


def _finished(result: Any, t0: float, encode: Encode | None) -> Outcome:
    duration = time.perf_counter() - t0
    if encode is None:
        return Outcome(COMPLETED, result, None, duration)
    try:
        encoded = encode(result)
    except Exception as exc:
        return Outcome(FAILED, result, f"result is not serializable: {describe(exc)}", duration)
    return Outcome(COMPLETED, result, None, duration, encoded)


def _failed(error: str, t0: float, status: str = FAILED) -> Outcome:
    return Outcome(status, None, error, time.perf_counter() - t0)


async def _outcome_of(task: asyncio.Task[Outcome]) -> Outcome:
    """The rest of a run whose task suspended. Cancelling whoever awaits this cancels the
    handler's task too (a task waiting on a task passes its cancellation on)."""
    return await task


def _own_cancel() -> bool:
    """Whether the running task itself was cancelled (the component's stop, not the handler)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class HandlerRunner:
    """Runs handlers by the rule above; owns the thread pool of `in_thread` handlers."""

    def __init__(self, threads: int = 4, thread_name: str = "meetq-handler") -> None:
        self._threads = max(1, threads)
        self._thread_name = thread_name
        self._executor: ThreadPoolExecutor | None = None

    def start(
        self, spec: HandlerSpec, arg: Any, timeout: float | None, encode: Encode | None = None
    ) -> Outcome | Coroutine[Any, Any, Outcome]:
        """Runs what can run now: the Outcome if the handler finished, else a coroutine
        that finishes it (await it, or run it as a task). `timeout` None or <= 0: none."""
        t0 = time.perf_counter()
        kind = spec.kind
        if kind == THREAD:
            return self._in_thread(spec.fn, arg, timeout, encode, t0)
        try:
            value = spec.fn(arg)
        except (Exception, asyncio.CancelledError) as exc:
            # a sync call cannot be cancelled from outside: whatever it raises is its own
            return _failed(describe(exc), t0)
        if kind == SYNC and (value is None or not isinstance(value, CoroutineType)):
            if encode is None:  # the hot path: a sync handler, nothing to encode
                d = time.perf_counter() - t0
                return _new(Outcome, (COMPLETED, value, None, d, None, None, True))
            return _finished(value, t0, encode)
        return self._continue(value, timeout, encode, t0)

    def _continue(
        self,
        value: Coroutine[Any, Any, Any],
        timeout: float | None,
        encode: Encode | None,
        t0: float,
    ) -> Outcome | Coroutine[Any, Any, Outcome]:
        # an async handler (or a callable that is async without looking so: a partial,
        # a __call__): it runs in a task of its own, whose first step runs now
        try:
            task, outcome = start_eager(self._guarded(value, timeout, encode, t0))
        except asyncio.CancelledError:  # only the handler's own: the task is brand new
            return _failed("handler was cancelled", t0)
        if task is None:
            return outcome  # type: ignore[no-any-return]
        return _outcome_of(task)

    def call(self, spec: HandlerSpec, arg: Any, timeout: float | None) -> Any:
        """`start` for the hottest path, a SYNC spec with nothing to encode (the queue's
        inline runs): the handler's own result when it completed (no Outcome made, no
        clock read: sync runs are not timed), else what `start` returns (an `Outcome`
        for a failure, the coroutine that finishes an async-looking callable)."""
        try:
            value = spec.fn(arg)
        except (Exception, asyncio.CancelledError) as exc:
            return _failed(describe(exc), time.perf_counter())
        if value is None or not isinstance(value, CoroutineType):
            return value
        return self._continue(value, timeout, None, time.perf_counter())

    async def run(
        self, spec: HandlerSpec, arg: Any, timeout: float | None, encode: Encode | None = None
    ) -> Outcome:
        step = self.start(spec, arg, timeout, encode)
        return step if isinstance(step, Outcome) else await step

    async def run_here(self, spec: HandlerSpec, arg: Any, timeout: float | None) -> Outcome:
        """The whole run of an async handler inside the calling task, for a component
        whose own worker task runs one handler at a time (the bus): the handler's
        `asyncio.timeout()` and `current_task()` are that task's, as they would be in a
        task of its own, without making one per run."""
        t0 = time.perf_counter()
        try:
            coro = spec.fn(arg)
            if coro.__class__ is not CoroutineType:
                return _finished(coro, t0, None)
            first = coro.send(None)  # untimed: no timer for a handler that never suspends
        except StopIteration as done:
            d = time.perf_counter() - t0
            return _new(Outcome, (COMPLETED, done.value, None, d, None, None, True))
        except asyncio.CancelledError:
            return _failed("handler was cancelled", t0)
        except Exception as exc:
            return _failed(describe(exc), t0)
        return await self._resume(coro, first, timeout, None, t0)

    async def resume_here(
        self, coro: Coroutine[Any, Any, Any], first: Any, timeout: float | None
    ) -> Outcome:
        """The rest of an async handler whose first step the calling task already took
        (the bus's native `dispatch` steps it): the rest runs under `timeout`, inside the
        calling task, as in `run_here`. `duration` counts from here."""
        return await self._resume(coro, first, timeout, None, time.perf_counter())

    async def _guarded(
        self,
        coro: Coroutine[Any, Any, Any],
        timeout: float | None,
        encode: Encode | None,
        t0: float,
    ) -> Outcome:
        """The whole run of an async handler, inside the handler's own task: the first
        step untimed (no timer for a handler that never suspends), the rest under
        `timeout`."""
        try:
            first = coro.send(None)
        except StopIteration as done:
            return _finished(done.value, t0, encode)
        except asyncio.CancelledError:
            return _failed("handler was cancelled", t0)
        except Exception as exc:
            return _failed(describe(exc), t0)
        return await self._resume(coro, first, timeout, encode, t0)

    async def _resume(
        self,
        coro: Coroutine[Any, Any, Any],
        first: Any,
        timeout: float | None,
        encode: Encode | None,
        t0: float,
    ) -> Outcome:
        rest: Awaitable[Any] = Resume(coro, first)
        if not timeout or timeout <= 0:
            try:
                result = await rest
            except asyncio.CancelledError:
                if _own_cancel():
                    raise
                return _failed("handler was cancelled", t0)
            except Exception as exc:
                return _failed(describe(exc), t0)
            return _finished(result, t0, encode)
        scope = asyncio.timeout(timeout)
        try:
            async with scope:
                result = await rest
        except TimeoutError as exc:
            if scope.expired():
                return _failed(f"handler timed out after {timeout}s", t0, TIMEOUT)
            return _failed(describe(exc), t0)
        except asyncio.CancelledError:
            if _own_cancel():
                raise
            return _failed("handler was cancelled", t0)
        except Exception as exc:
            return _failed(describe(exc), t0)
        if scope.expired():  # it swallowed the cancellation and returned: still cut short
            return _failed(f"handler timed out after {timeout}s", t0, TIMEOUT)
        return _finished(result, t0, encode)

    async def _in_thread(
        self,
        fn: Callable[[Any], Any],
        arg: Any,
        timeout: float | None,
        encode: Encode | None,
        t0: float,
    ) -> Outcome:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self._threads, thread_name_prefix=self._thread_name)
        fut = asyncio.get_running_loop().run_in_executor(self._executor, fn, arg)
        if timeout and timeout > 0:
            done, _ = await asyncio.wait({fut}, timeout=timeout)
            if not done:
                error = f"handler timed out after {timeout}s"
                return Outcome(TIMEOUT, None, error, time.perf_counter() - t0, None, fut)
        else:
            await asyncio.wait({fut})
        try:
            result = fut.result()
        except (Exception, asyncio.CancelledError) as exc:
            return _failed(describe(exc), t0)
        return _finished(result, t0, encode)

    def close(self, wait: bool = False) -> None:
        """Shuts the thread pool down (a new one is made if the runner is used again)."""
        if self._executor is not None:
            self._executor.shutdown(wait=wait, cancel_futures=True)
            self._executor = None
