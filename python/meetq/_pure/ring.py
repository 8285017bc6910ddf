"""Pure-Python twin of the native ring buffer (`rust/src/ring.rs`) and `LocalEvent`.

Same API and observable behaviour: a bound of exactly `limit` items shared by `lanes`
strict-priority lanes, capacity rounded up to a power of two, and a waker called once on the
empty -> non-empty edge after `arm()`. A lock stands in for the native atomics.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
from asyncio import CancelledError
from collections import deque
from collections.abc import Callable
from types import CoroutineType, SimpleNamespace
from typing import Any

NORMAL = 1


def _first_step(fn: Callable[[Any], Any], ev: Any) -> tuple[Any, Any] | None:
    """`first_step` of `py_event.rs`: calls an async handler and takes its coroutine's first
    step in the calling task; None when it finished there (or returned something that is
    not a coroutine), else (coroutine, what it yielded); raises what the call or step raised."""
    coro = fn(ev)
    if coro.__class__ is not CoroutineType:
        return None
    try:
        yielded = coro.send(None)
    except StopIteration:
        return None
    return coro, yielded


class LocalEvent:
    """An in-process event: what `LocalEventBus` handlers receive."""

    __slots__ = ("payload", "priority", "source", "timestamp", "type")

    type: str
    payload: Any
    source: Any
    timestamp: float
    priority: int

    def __init__(
        self,
        type: str,
        payload: Any = None,
        source: Any = None,
        timestamp: float | None = None,
        priority: int = NORMAL,
    ) -> None:
        init = object.__setattr__
        init(self, "type", type)
        init(self, "payload", {} if payload is None else payload)
        init(self, "source", "" if source is None else source)
        init(self, "timestamp", time.time() if timestamp is None else timestamp)
        init(self, "priority", priority)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("LocalEvent is immutable")

    def __repr__(self) -> str:
        return (
            f"LocalEvent(type={self.type!r}, source={self.source!r}, "
            f"priority={self.priority}, payload={self.payload!r})"
        )


def _report_unraisable(exc: Exception, obj: object) -> None:
    """What the native side does with `PyErr::write_unraisable`."""
    if sys.unraisablehook is sys.__unraisablehook__:
        print(f"Exception ignored in ring waker {obj!r}:", file=sys.stderr)
        traceback.print_exception(exc, file=sys.stderr)
        return
    args = SimpleNamespace(
        exc_type=type(exc),
        exc_value=exc,
        exc_traceback=exc.__traceback__,
        err_msg="Exception ignored in ring waker",
        object=obj,
    )
    sys.unraisablehook(args)


class RingBuffer:
    """Bounded MPMC ring of Python objects with strict-priority lanes and edge wake-ups."""

    def __init__(self, limit: int, lanes: int = 1) -> None:
        if limit <= 0 or lanes <= 0:
            raise ValueError("limit and lanes must be positive")
        self._limit = limit
        self._capacity = max(2, 1 << (limit - 1).bit_length())
        self._lanes: list[deque[Any]] = [deque() for _ in range(lanes)]
        self._len = 0
        self._lock = threading.Lock()
        self._armed = False
        self._waker: Callable[[], Any] | None = None
        self._accepted = 0
        self._dropped = 0

    def _push(self, lane: int, item: Any) -> bool:
        with self._lock:
            if self._len >= self._limit:
                return False
            self._lanes[min(max(lane, 0), len(self._lanes) - 1)].append(item)
            self._len += 1
            self._accepted += 1
            woke = self._armed
            self._armed = False
        if woke and self._waker is not None:
            try:
                self._waker()
            except Exception as exc:  # as native: reported, never raised into the producer
                _report_unraisable(exc, self._waker)
        return True

    def _push_event(self, event: LocalEvent) -> bool:
        ok = self._push(event.priority, event)
        if not ok:
            self._dropped += 1
        return ok

    def try_push(self, item: Any, lane: int = 0) -> bool:
        return self._push(lane, item)

    def emit(self, event_type: str, payload: Any = None, source: Any = None) -> bool:
        return self._push_event(LocalEvent(event_type, payload, source))

    def emit_with_priority(
        self, priority: int, event_type: str, payload: Any = None, source: Any = None
    ) -> bool:
        if not 0 <= priority <= 3:
            raise ValueError(f"priority must be 0..3, got {priority}")
        return self._push_event(LocalEvent(event_type, payload, source, priority=priority))

    def pop(self) -> Any:
        with self._lock:
            for lane in reversed(self._lanes):
                if lane:
                    self._len -= 1
                    return lane.popleft()
        return None

    def _pop_one(self) -> tuple[bool, Any]:
        with self._lock:
            for lane in reversed(self._lanes):
                if lane:
                    self._len -= 1
                    return True, lane.popleft()
        return False, None

    def dispatch(
        self,
        max: int,
        table: dict[str, tuple[tuple[Any, ...], tuple[Any, ...], tuple[Any, ...]]],
        on_error: Callable[[Any, Any, BaseException], Any],
        budget: int,
        start_async: Callable[[Any, Any], Any],
    ) -> tuple[int, int, list[tuple[Any, list[tuple[Any, Any]]]] | None, int]:
        """The bus's emit -> handler path, as `RingBuffer.dispatch` in `py_event.rs`:
        pops up to `max` events one at a time and runs `table[event.type]` = (sync, async,
        thread handlers); stops once `budget` events are left in progress. Returns
        (processed, failed handler runs, [(event, runs)] or None, popped)."""
        processed = failed = popped = 0
        pending: list[tuple[Any, list[tuple[Any, Any]]]] | None = None
        get = table.get
        while popped < max and budget > 0:
            found, ev = self._pop_one()
            if not found:
                break
            popped += 1
            entry = get(ev.type)
            if entry is None:
                processed += 1
                continue
            for fn in entry[0]:
                try:
                    fn(ev)
                except (Exception, CancelledError) as exc:
                    failed += 1
                    on_error(ev, fn, exc)
            runs: list[tuple[Any, Any]] | None = None
            asyncs, threads = entry[1], entry[2]
            if len(asyncs) == 1 and not threads:
                fn = asyncs[0]
                try:
                    rest = _first_step(fn, ev)
                except (Exception, CancelledError) as exc:
                    failed += 1
                    on_error(ev, fn, exc)
                else:
                    if rest is not None:
                        runs = [(fn, rest)]
            else:
                for fn in asyncs:
                    rest = start_async(ev, fn)
                    if rest is not None:
                        if runs is None:
                            runs = []
                        runs.append((fn, rest))
            for fn in threads:
                if runs is None:
                    runs = []
                runs.append((fn, None))
            if runs is None:
                processed += 1
            else:
                if pending is None:
                    pending = []
                pending.append((ev, runs))
                budget -= 1
        return processed, failed, pending, popped

    def drain(self, max: int) -> list[Any]:
        out: list[Any] = []
        with self._lock:
            for lane in reversed(self._lanes):
                while lane and len(out) < max:
                    out.append(lane.popleft())
            self._len -= len(out)
        return out

    def arm(self) -> bool:
        with self._lock:
            self._armed = self._len == 0
            return self._armed

    def disarm(self) -> None:
        with self._lock:
            self._armed = False

    def set_waker(self, waker: Callable[[], Any] | None) -> None:
        self._waker = waker

    def __len__(self) -> int:
        return self._len

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def lanes(self) -> int:
        return len(self._lanes)

    @property
    def accepted(self) -> int:
        return self._accepted

    @property
    def dropped(self) -> int:
        return self._dropped
