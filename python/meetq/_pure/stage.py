"""`publish_batch`'s per-message loop; the native twin is `native/stage.pyx`.

It turns messages into the arguments of the publish script, one chunk per kind:
chunks[0..3] hold messages of that priority whose ids the caller gave (the script dedupes
them), chunks[4..7] the same with ids made here (unique by construction), chunks[8] the
delayed ones. Each chunk starts with its mode (the priority digit, or b"d") and continues
with (id, body) pairs, or (id, delay_ms, body) triples for chunk 8; a body is the priority
digit followed by the encoded message.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from meetq.errors import MalformedMessageError, MessageTooLargeError

if TYPE_CHECKING:
    from meetq.queue.message import Message

DIGITS = (b"0", b"1", b"2", b"3")


def stage(
    msgs: Iterator[Message],
    ids: list[str],
    chunks: list[list[Any]],
    now: float,
    dumps: Callable[[Any], bytes],
    max_size: int,
    id_prefix: str,
    id_count: Iterator[int],
    full: int,
) -> int:
    """Stages messages from `msgs` until a chunk holds `full` items; returns that chunk's
    index, or -1 once `msgs` is exhausted. A message without an id gets
    `id_prefix` + the next count in hex (what `message.new_id` makes); one without a
    timestamp gets `now`. Every id is appended to `ids`."""
    for msg in msgs:
        mid = msg.id
        fresh = not mid
        if fresh:
            msg.id = mid = f"{id_prefix}{next(id_count):x}"
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
        body = DIGITS[p] + raw
        if msg.deliver_at and (delay_ms := int((msg.deliver_at - now) * 1000)) > 0:
            i = 8
            chunk = chunks[8]
            chunk.append(mid)
            chunk.append(delay_ms)
        else:
            i = p + 4 if fresh else p
            chunk = chunks[i]
            chunk.append(mid)
        chunk.append(body)
        if len(chunk) >= full:
            return i
    return -1
