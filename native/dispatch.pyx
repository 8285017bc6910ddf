# cython: language_level=3, boundscheck=False, wraparound=False
"""The bus's per-batch hot loop; pure twin in `python/meetq/_dispatch.py`.

Sync handlers run inline. Async handlers are started eagerly: their coroutine is stepped
once right here, so one that finishes without suspending costs no task, no timer and no
loop iteration. Only runs that really suspend (and `in_thread` handlers) are handed back
to the bus, which finishes them under `handler_timeout`; `budget` caps how many events
may be handed back per call, so the bus can bound the events in progress.
"""

from asyncio import CancelledError


def dispatch(list events, Py_ssize_t start, dict table, object on_error, Py_ssize_t budget):
    """Runs events[start:] until `budget` events are left in progress.

    Returns (events fully processed, failed handler runs, [(event, runs)] still in
    progress or None, index of the first event not looked at). A run is
    (handler, coroutine or None for a thread handler, what the coroutine yielded).
    """
    cdef Py_ssize_t processed = 0, failed = 0, i = start, n = len(events)
    cdef list pending = None
    cdef list runs
    cdef tuple entry
    while i < n and budget > 0:
        ev = events[i]
        i += 1
        entry = <tuple>table.get(ev.type)
        if entry is None:
            processed += 1
            continue
        for fn in <tuple>entry[0]:
            try:
                fn(ev)
            except (Exception, CancelledError) as exc:
                failed += 1
                on_error(ev, fn, exc)
        runs = None
        for fn in <tuple>entry[1]:
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
        for fn in <tuple>entry[2]:
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
