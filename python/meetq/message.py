"""`Message`, the unit of work of the Redis queue, and its wire codec.

JSON through orjson by default (msgpack optional); never pickle. Decoding validates the
shape, so a malformed stored entry becomes a `MalformedMessageError` (and a DLQ entry),
never a crash.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from meetq.errors import MalformedMessageError, MessageTooLargeError
from meetq.priority import Priority

DEFAULT_MAX_SIZE = 1 << 20

Format = Literal["json", "msgpack"]


def new_id() -> str:
    return uuid.uuid4().hex


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
    deliveries: int = field(default=0, compare=False)
    """How many times the queue has handed this message out (set on delivery, not stored)."""

    def to_dict(self) -> dict[str, Any]:
        return {
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

    @classmethod
    def from_dict(cls, data: Any) -> Message:
        if not isinstance(data, dict):
            raise MalformedMessageError(f"message must be an object, got {type(data).__name__}")
        try:
            mtype = data["type"]
            if not isinstance(mtype, str) or not mtype:
                raise MalformedMessageError("message type must be a non-empty string")
            payload = data.get("payload") or {}
            if not isinstance(payload, dict):
                raise MalformedMessageError("message payload must be an object")
            return cls(
                type=mtype,
                payload=payload,
                priority=Priority(int(data.get("priority", Priority.NORMAL))),
                id=str(data.get("id", "")),
                timestamp=float(data.get("timestamp", 0.0)),
                retry_count=int(data.get("retry_count", 0)),
                max_retries=int(data.get("max_retries", 0)),
                timeout=float(data.get("timeout", 30.0)),
                source=str(data.get("source", "")),
                destination=str(data.get("destination", "")),
                deliver_at=float(data.get("deliver_at", 0.0)),
                reply_to=str(data.get("reply_to", "")),
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


class Codec:
    """Encodes messages for Redis with a size limit; `fmt` is "json" or "msgpack"."""

    def __init__(self, fmt: Format = "json", max_size: int = DEFAULT_MAX_SIZE) -> None:
        self.fmt = fmt
        self.max_size = max_size
        if fmt == "msgpack":
            import msgpack

            self._dumps = msgpack.packb
            self._loads = msgpack.unpackb
        elif fmt == "json":
            self._dumps = orjson.dumps
            self._loads = orjson.loads
        else:
            raise ValueError(f"unknown format {fmt!r}")

    def encode(self, msg: Message) -> bytes:
        try:
            raw: bytes = self._dumps(msg.to_dict())
        except (TypeError, ValueError) as exc:
            raise MalformedMessageError(f"payload is not serializable: {exc}") from exc
        if len(raw) > self.max_size:
            raise MessageTooLargeError(
                f"message {msg.id or '?'} is {len(raw)} bytes, limit {self.max_size}"
            )
        return raw

    def decode(self, raw: bytes) -> Message:
        if len(raw) > self.max_size:
            raise MessageTooLargeError(f"stored message is {len(raw)} bytes, limit {self.max_size}")
        try:
            data = self._loads(raw)
        except Exception as exc:
            raise MalformedMessageError(f"undecodable message: {exc}") from exc
        return Message.from_dict(data)
