"""Pure-Python twin of `native/dispatch.pyx`: the bus's per-batch hot loop.

Sync handlers run inline. Async handlers are started eagerly: their coroutine is stepped
once right here, so one that finishes without suspending costs no task, no timer and no
loop iteration. Only runs that really suspend (and `in_thread` handlers) are handed back
to the bus, which finishes them under `handler_timeout`; `budget` caps how many events
may be handed back per call, so the bus can bound the events in progress.
"""

from __future__ import annotations

from asyncio import CancelledError
from collections.abc import Callable
from typing import Any

Handler = Callable[[Any], Any]
# type -> (sync handlers, async handlers, in_thread handlers)
Table = dict[str, tuple[tuple[Handler, ...], tuple[Handler, ...], tuple[Handler, ...]]]
# (handler, coroutine or None for a thread handler, what the coroutine yielded)
Run = tuple[Handler, Any, Any]


def dispatch(
    events: list[Any],
    start: int,
    table: Table,
    on_error: Callable[[Any, Any, BaseException], None],
    budget: int,
) -> tuple[int, int, list[tuple[Any, list[Run]]] | None, int]:
    """Runs events[start:] until `budget` events are left in progress.

    Returns (events fully processed, failed handler runs, [(event, runs)] still in
    progress or None, index of the first event not looked at).
    """
    processed = failed = 0
    pending: list[tuple[Any, list[Run]]] | None = None
    i, n = start, len(events)
    get = table.get
    while i < n and budget > 0:
        ev = events[i]
        i += 1
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
        runs: list[Run] | None = None
        for fn in entry[1]:
            try:
                coro = fn(ev)
                yielded = coro.send(None)
            except StopIteration:
                continue
            except (Exception, CancelledError) as exc:
                failed += 1
                on_error(ev, fn, exc)
                continue
            if runs is None:
                runs = []
            runs.append((fn, coro, yielded))
        for fn in entry[2]:
            if runs is None:
                runs = []
            runs.append((fn, None, None))
        if runs is None:
            processed += 1
        else:
            if pending is None:
                pending = []
            pending.append((ev, runs))
            budget -= 1
    return processed, failed, pending, i
