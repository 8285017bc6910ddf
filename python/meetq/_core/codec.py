"""`Codec`: the wire format of everything meetq stores or sends (queue messages, pub/sub
and stream events, dispatcher requests): JSON through orjson by default, msgpack optional,
never pickle, with a size limit checked both ways so one huge value can neither be stored
nor take a reader down."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import orjson

from meetq.errors import MalformedMessageError, MessageTooLargeError

DEFAULT_MAX_SIZE = 1 << 20
"""Bytes: the default limit of one encoded value."""

Format = Literal["json", "msgpack"]


class Codec:
    """Encodes plain values (dicts, lists, str, numbers) to bytes within `max_size`.

    `dump`/`load` raise `MalformedMessageError` for values that do not encode or bytes that
    do not decode, `MessageTooLargeError` past the limit. `dumps`/`loads` are the raw
    functions, for hot paths that check the size themselves (the batch stager)."""

    def __init__(self, fmt: Format = "json", max_size: int = DEFAULT_MAX_SIZE) -> None:
        self.fmt = fmt
        self.max_size = max_size
        if fmt == "msgpack":
            import msgpack

            self.dumps: Callable[[Any], bytes] = msgpack.packb
            self.loads: Callable[[bytes], Any] = msgpack.unpackb
        elif fmt == "json":
            self.dumps = orjson.dumps
            self.loads = orjson.loads
        else:
            raise ValueError(f"unknown format {fmt!r}")

    def dump(self, value: Any, what: str = "value") -> bytes:
        try:
            raw: bytes = self.dumps(value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise MalformedMessageError(f"payload is not serializable: {exc}") from exc
        if len(raw) > self.max_size:
            raise MessageTooLargeError(f"{what} is {len(raw)} bytes, limit {self.max_size}")
        return raw

    def load(self, raw: bytes, what: str = "stored message") -> Any:
        if len(raw) > self.max_size:
            raise MessageTooLargeError(f"{what} is {len(raw)} bytes, limit {self.max_size}")
        try:
            return self.loads(raw)
        except Exception as exc:
            raise MalformedMessageError(f"undecodable message: {exc}") from exc


__all__ = ["DEFAULT_MAX_SIZE", "Codec", "Format"]
