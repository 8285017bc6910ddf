"""`Message`, the unit of work of the Redis queue, and its wire codec.

JSON through orjson by default (msgpack optional); never pickle. Decoding validates the
shape, so a malformed stored entry becomes a `MalformedMessageError` (and a DLQ entry),
never a crash.
"""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass, field
from typing import Any

from meetq._core import codec as _codec
from meetq._core.codec import DEFAULT_MAX_SIZE, Format
from meetq.errors import MalformedMessageError
from meetq.priority import Priority

__all__ = ["DEFAULT_MAX_SIZE", "Codec", "Format", "Message", "new_id"]


_PRIORITIES = tuple(Priority)


class _Ids:
    """Unique ids at the cost of a counter: 96 random bits per process, then a count.

    Re-seeded in a forked child, so parent and child never share a prefix."""

    def __init__(self) -> None:
        self.seed()
        os.register_at_fork(after_in_child=self.seed)

    def seed(self) -> None:
        self.prefix = os.urandom(12).hex()
        self.count = itertools.count(1)

    def __call__(self) -> str:
        return f"{self.prefix}{next(self.count):x}"


new_id = _Ids()


@dataclass(slots=True)
class Message:
    type: str
    payload: dict[str, Any] = field(default_factory=dict)
    priority: Priority = Priority.NORMAL
    id: str = ""
    timestamp: float = 0.0
    retry_count: int = 0
    max_retries: int = 0
    timeout: float = 30.0
    source: str = ""
    destination: str = ""
    deliver_at: float = 0.0
    """Epoch seconds before which the queue does not deliver the message (0: at once)."""
    reply_to: str = ""
    """A Redis list key; when set, the queue RPUSHes the outcome there (see `Reply`)."""
    expires_at: float = 0.0
    """Epoch seconds, Redis server time (0: never): a delivery past it is dropped unstarted
    and ends with status "timeout" (a dispatched task's deadline travels here)."""
    deliveries: int = field(default=0, compare=False)
    """How many times the queue has handed this message out (set on delivery, not stored)."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "type": self.type,
            "priority": int(self.priority),
            "payload": self.payload,
            "timestamp": self.timestamp,
            "retry_count": self.retry_count,
            "max_retries": self.max_retries,
            "timeout": self.timeout,
            "source": self.source,
            "destination": self.destination,
            "deliver_at": self.deliver_at,
            "reply_to": self.reply_to,
        }
        if self.expires_at:
            out["expires_at"] = self.expires_at
        return out

    @classmethod
    def from_dict(cls, data: Any) -> Message:
        """Validating constructor from decoded JSON/msgpack (the worker's hot path)."""
        if not isinstance(data, dict):
            raise MalformedMessageError(f"message must be an object, got {type(data).__name__}")
        get = data.get
        try:
            mtype = data["type"]
            if not isinstance(mtype, str) or not mtype:
                raise MalformedMessageError("message type must be a non-empty string")
            payload = get("payload") or {}
            if not isinstance(payload, dict):
                raise MalformedMessageError("message payload must be an object")
            p = get("priority", 1)
            priority = _PRIORITIES[p] if type(p) is int and 0 <= p <= 3 else Priority(int(p))
            return cls(
                mtype,
                payload,
                priority,
                str(get("id", "")),
                float(get("timestamp", 0.0)),
                int(get("retry_count", 0)),
                int(get("max_retries", 0)),
                float(get("timeout", 30.0)),
                str(get("source", "")),
                str(get("destination", "")),
                float(get("deliver_at", 0.0)),
                str(get("reply_to", "")),
                float(get("expires_at", 0.0)),
            )
        except MalformedMessageError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise MalformedMessageError(f"bad message field: {exc!r}") from exc

    def stamp(self) -> Message:
        """Fills `id` and `timestamp` when empty (done on publish)."""
        if not self.id:
            self.id = new_id()
        if not self.timestamp:
            self.timestamp = time.time()
        return self


class Codec(_codec.Codec):
    """The message codec: `meetq._core.codec.Codec` (format, size limit) that encodes a
    `Message` and decodes stored bytes into a validated one."""

    def encode(self, msg: Message) -> bytes:
        return self.dump(msg.to_dict(), f"message {msg.id or '?'}")

    def decode(self, raw: bytes) -> Message:
        return Message.from_dict(self.load(raw))
