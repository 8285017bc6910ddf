"""The messages of the broadcast layer: `PubSubMessage` (Pub/Sub) and `StreamEvent` (Streams),
and their wire form.

Both travel as one encoded object (JSON through orjson by default, msgpack optional; never
pickle) with a size limit. A Pub/Sub message published by meetq also carries its
publisher's id and a per-(publisher, channel) sequence number, so a subscriber can tell a
hole (`gap`) or a repeat from a normal delivery.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from meetq._core.codec import DEFAULT_MAX_SIZE, Codec, Format
from meetq.errors import MalformedMessageError, MessageTooLargeError
from meetq.queue.message import new_id

__all__ = [
    "DEFAULT_MAX_SIZE",
    "BroadcastCodec",
    "DeadEvent",
    "Format",
    "PubSubMessage",
    "PubSubSplicer",
    "StreamEvent",
    "instance_id",
]


def instance_id() -> str:
    """A fresh random name for one component instance (probe channel, publisher id)."""
    return os.urandom(8).hex()


@dataclass(slots=True)
class PubSubMessage:
    """One broadcast event. `channel`, `pattern`, `publisher` and `seq` are filled in on
    receipt (`pattern` only for a `psubscribe` delivery)."""

    type: str
    payload: dict[str, Any] = field(default_factory=dict)
    id: str = ""
    timestamp: float = 0.0
    source: str = ""
    channel: str = ""
    pattern: str | None = None
    publisher: str = ""
    seq: int = 0

    def stamp(self) -> PubSubMessage:
        if not self.id:
            self.id = new_id()
        if not self.timestamp:
            self.timestamp = time.time()
        return self


@dataclass(slots=True)
class StreamEvent:
    """One durable event of a `RedisStreamEventBus` topic. `id` is the stream entry id
    (`<ms>-<seq>`), `deliveries` how often this service's group has handed it out."""

    type: str
    payload: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    timestamp: float = 0.0
    id: str = ""
    topic: str = ""
    deliveries: int = 1


@dataclass(slots=True)
class DeadEvent:
    """An entry of a topic's dead-letter stream: why one service's group gave up on it."""

    id: str
    """The original entry id in the topic's stream."""
    group: str
    reason: str
    deliveries: int
    event: StreamEvent | None
    """None when the original body does not decode."""
    raw: bytes
    dead_id: str
    """The id of this entry in the dead-letter stream."""


def _check_payload(payload: Any) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise MalformedMessageError("payload must be an object")
    return payload


class BroadcastCodec:
    """Encodes and validates broadcast messages with the shared codec's formats and limit."""

    def __init__(self, fmt: Format = "json", max_size: int = DEFAULT_MAX_SIZE) -> None:
        self._codec = Codec(fmt, max_size)
        self.dumps = self._codec.dumps
        self.loads = self._codec.loads
        self.max_size = max_size

    def _dump(self, obj: dict[str, Any]) -> bytes:
        return self._codec.dump(obj, "message")

    # -- Pub/Sub -------------------------------------------------------------------------

    def encode_pubsub(self, msg: PubSubMessage, publisher: str, seq: int) -> bytes:
        """The wire form; a message without an id travels without one (the receiver names it
        "<publisher>:<seq>", unique already), which spares a fresh id per message."""
        obj: dict[str, Any] = {
            "type": msg.type,
            "payload": msg.payload,
            "timestamp": msg.timestamp or time.time(),
            "source": msg.source,
            "p": publisher,
            "s": seq,
        }
        if msg.id:
            obj["id"] = msg.id
        try:
            raw: bytes = self.dumps(obj)
        except (TypeError, ValueError, OverflowError) as exc:
            raise MalformedMessageError(f"payload is not serializable: {exc}") from exc
        if len(raw) > self.max_size:
            raise MessageTooLargeError(f"message is {len(raw)} bytes, limit {self.max_size}")
        return raw

    def splicer(self, publisher: str, source: str, timestamp: float) -> PubSubSplicer | None:
        """A `PubSubSplicer` for a batch's messages that share these fields (JSON only:
        msgpack has no such shortcut, None)."""
        if self._codec.fmt != "json":
            return None
        return PubSubSplicer(publisher, source, timestamp, self.max_size)

    def _load_object(self, raw: bytes) -> dict[str, Any]:
        """How both hot decodes start: the size limit, the decode, an object."""
        if len(raw) > self.max_size:
            raise MessageTooLargeError(f"message is {len(raw)} bytes, limit {self.max_size}")
        try:
            data = self.loads(raw)
        except Exception as exc:
            raise MalformedMessageError(f"undecodable message: {exc}") from exc
        if type(data) is not dict:
            raise MalformedMessageError(f"message must be an object, got {type(data).__name__}")
        return data

    def decode_pubsub(self, raw: bytes, channel: str, pattern: str | None) -> PubSubMessage:
        """Validating decode (the subscriber's hot path: plain type checks, one dict walk)."""
        get = self._load_object(raw).get
        mtype = get("type")
        if type(mtype) is not str or not mtype:
            raise MalformedMessageError("message type must be a non-empty string")
        payload = get("payload")
        if payload is None:
            payload = {}
        elif type(payload) is not dict:
            raise MalformedMessageError("message payload must be an object")
        seq = get("s", 0)
        publisher = get("p", "")
        if type(seq) is not int or type(publisher) is not str:
            raise MalformedMessageError("bad publisher or sequence")
        timestamp = get("timestamp", 0.0)
        source = get("source", "")
        mid = get("id")
        try:
            if type(timestamp) is not float:
                timestamp = float(timestamp)
            if type(source) is not str:
                source = str(source)
            mid = str(mid) if mid else (f"{publisher}:{seq}" if publisher else "")
        except (TypeError, ValueError) as exc:
            raise MalformedMessageError(f"bad message field: {exc!r}") from exc
        return PubSubMessage(
            mtype, payload, mid, timestamp, source, channel, pattern, publisher, seq
        )

    # -- Streams -------------------------------------------------------------------------

    def encode_event(self, event: StreamEvent) -> bytes:
        if not isinstance(event.type, str) or not event.type:
            raise MalformedMessageError("event type must be a non-empty string")
        return self._dump(
            {
                "type": event.type,
                "payload": _check_payload(event.payload),
                "source": event.source,
                "timestamp": event.timestamp or time.time(),
            }
        )

    def decode_event(self, raw: bytes, entry_id: str, topic: str, deliveries: int) -> StreamEvent:
        """Validating decode (the consumer's hot path: plain type checks, one dict walk)."""
        get = self._load_object(raw).get
        etype = get("type")
        if type(etype) is not str or not etype:
            raise MalformedMessageError("event type must be a non-empty string")
        payload = get("payload") or {}
        if type(payload) is not dict:
            raise MalformedMessageError("payload must be an object")
        source = get("source", "")
        timestamp = get("timestamp", 0.0)
        try:
            if type(source) is not str:
                source = str(source)
            if type(timestamp) is not float:
                timestamp = float(timestamp)
        except (TypeError, ValueError) as exc:
            raise MalformedMessageError(f"bad event field: {exc!r}") from exc
        return StreamEvent(etype, payload, source, timestamp, entry_id, topic, deliveries)


class PubSubSplicer:
    """The JSON wire form of `encode_pubsub` for the messages of one batch that have no id
    and share the publisher, source and timestamp: those fields are encoded once, and a
    message costs one orjson call for its type and payload, spliced into the same bytes
    (no dict per message; the bytes are exactly `encode_pubsub`'s)."""

    __slots__ = ("_tail", "max_size", "publisher", "source", "timestamp")

    def __init__(self, publisher: str, source: str, timestamp: float, max_size: int) -> None:
        self.publisher = publisher
        self.source = source
        self.timestamp = timestamp
        self.max_size = max_size
        dumps = orjson.dumps
        self._tail = b',"timestamp":%b,"source":%b,"p":%b,"s":' % (
            dumps(timestamp),
            dumps(source),
            dumps(publisher),
        )

    def encode(self, mtype: Any, payload: Any, seq: int) -> bytes:
        dumps = orjson.dumps
        try:
            raw = b'{"type":%b,"payload":%b%b%d}' % (dumps(mtype), dumps(payload), self._tail, seq)
        except (TypeError, ValueError, OverflowError) as exc:
            raise MalformedMessageError(f"payload is not serializable: {exc}") from exc
        if len(raw) > self.max_size:
            raise MessageTooLargeError(f"message is {len(raw)} bytes, limit {self.max_size}")
        return raw
