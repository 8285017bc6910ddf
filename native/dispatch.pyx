# cython: language_level=3, boundscheck=False, wraparound=False
"""The bus's per-batch hot loop; pure twin in `python/meetq/_dispatch.py`."""


def dispatch(list events, dict table, object on_error):
    """Runs the inline handlers of each event.

    Returns (events fully processed, failed handler runs, events that still have deferred
    handlers to run, or None).
    """
    cdef Py_ssize_t processed = 0, failed = 0
    cdef list deferred = None
    cdef tuple entry
    for ev in events:
        entry = <tuple>table.get(ev.type)
        if entry is None:
            processed += 1
            continue
        for fn in <tuple>entry[0]:
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
