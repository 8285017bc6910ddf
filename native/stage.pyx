# cython: language_level=3, boundscheck=False, wraparound=False
"""`publish_batch`'s per-message loop; pure twin (and the chunk layout) in
`python/meetq/_stage.py`."""

from meetq.errors import MalformedMessageError, MessageTooLargeError

cdef tuple DIGITS = (b"0", b"1", b"2", b"3")


def stage(msgs, list ids, list chunks, double now, object dumps, Py_ssize_t max_size,
          str id_prefix, object id_count, Py_ssize_t full):
    """Stages messages from `msgs` until a chunk holds `full` items; returns that chunk's
    index, or -1 once `msgs` is exhausted."""
    cdef Py_ssize_t p, i, delay_ms
    cdef list chunk
    cdef bint fresh
    for msg in msgs:
        mid = msg.id
        fresh = not mid
        if fresh:
            mid = id_prefix + format(next(id_count), "x")
            msg.id = mid
        elif "\0" in mid:
            raise ValueError("message ids must not contain NUL bytes")
        if not msg.timestamp:
            msg.timestamp = now
        ids.append(mid)
        try:
            raw = dumps(msg.to_dict())
        except (TypeError, ValueError) as exc:
            raise MalformedMessageError(f"payload is not serializable: {exc}") from exc
        if len(raw) > max_size:
            raise MessageTooLargeError(f"message {mid} is {len(raw)} bytes, limit {max_size}")
        p = int(msg.priority)
        if not 0 <= p <= 3:
            raise ValueError(f"message priority must be 0-3, not {p}")
        body = <bytes>DIGITS[p] + raw
        deliver_at = msg.deliver_at
        if deliver_at and (delay_ms := int((deliver_at - now) * 1000)) > 0:
            i = 8
            chunk = <list>chunks[8]
            chunk.append(mid)
            chunk.append(delay_ms)
        else:
            i = p + 4 if fresh else p
            chunk = <list>chunks[i]
            chunk.append(mid)
        chunk.append(body)
        if len(chunk) >= full:
            return i
    return -1
