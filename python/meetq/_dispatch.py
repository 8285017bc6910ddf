"""Pure-Python twin of `native/dispatch.pyx`: the bus's per-batch hot loop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# type -> (inline handlers, deferred handlers); deferred ones (async / in_thread) are run
# by the bus after the batch, so the loop only notes which events need them.
Table = dict[str, tuple[tuple[Callable[[Any], Any], ...], tuple[Any, ...]]]


def dispatch(
    events: list[Any], table: Table, on_error: Callable[[Any, Any, BaseException], None]
) -> tuple[int, int, list[Any] | None]:
    """Runs the inline handlers of each event.

    Returns (events fully processed, failed handler runs, events that still have deferred
    handlers to run, or None).
    """
    processed = failed = 0
    deferred: list[Any] | None = None
    get = table.get
    for ev in events:
        entry = get(ev.type)
        if entry is None:
            processed += 1
            continue
        for fn in entry[0]:
            try:
                fn(ev)
            except Exception as exc:
                failed += 1
                on_error(ev, fn, exc)
        if entry[1]:
            if deferred is None:
                deferred = []
            deferred.append(ev)
        else:
            processed += 1
    return processed, failed, deferred
