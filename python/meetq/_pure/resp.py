"""RESP2 command encoding, pure-Python twin of `native/resp.pyx` (same functions, same bytes).

A command is a sequence of arguments; each becomes a RESP bulk string:

    *<argc>\\r\\n  then per argument  $<len>\\r\\n<bytes>\\r\\n

Arguments are encoded exactly as redis-py 5's `Encoder` + `PythonRespSerializer` do, so a
batch written by meetq is byte-identical to the same commands sent through redis-py:

- `bytes`, `bytearray` and `memoryview` are sent as they are (`bytearray` is an addition:
  redis-py refuses it);
- `str` as UTF-8 (strict: a lone surrogate raises `UnicodeEncodeError`);
- `int` and `float` as `repr()` of the plain number (`-1`, `1.5`, `1e+100`, `inf`); for
  subclasses the plain `int`/`float` repr is used (redis-py would send an IntEnum's repr
  such as `<Priority.HIGH: 2>`, which is never what a caller means);
- `bool`, `None` and anything else raise `redis.exceptions.DataError`, as in redis-py.

Like redis-py, a first argument given as `str` is split on ASCII whitespace (so
`"CONFIG GET"` becomes two arguments), and one given as `bytes` is split when it contains a
space.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from redis.exceptions import DataError

__all__ = ["encode_command", "encode_commands"]


def _arg_bytes(value: Any) -> bytes | bytearray | memoryview:
    cls = type(value)
    if cls is bytes or cls is str:
        return value.encode() if cls is str else value  # type: ignore[no-any-return]
    if isinstance(value, bytes | bytearray):
        return value
    if isinstance(value, memoryview):
        return value if value.c_contiguous else value.tobytes()
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bool):
        raise DataError(
            "Invalid input of type: 'bool'. Convert to a bytes, string, int or float first."
        )
    if isinstance(value, int):
        return int.__repr__(value).encode()
    if isinstance(value, float):
        return float.__repr__(value).encode()
    raise DataError(
        f"Invalid input of type: '{type(value).__name__}'. "
        "Convert to a bytes, string, int or float first."
    )


def _split_name(args: Sequence[Any]) -> Sequence[Any]:
    """redis-py's rule for a command name holding several words ("CONFIG GET")."""
    if not args:
        return args
    first = args[0]
    if isinstance(first, str):
        words = first.encode().split()
        if len(words) != 1 or words[0] != first.encode():
            return (*words, *args[1:])
    elif isinstance(first, bytes) and b" " in first:
        return (*first.split(), *args[1:])
    return args


def _encode_into(out: bytearray, args: Iterable[Any]) -> None:
    if not isinstance(args, tuple | list):
        args = tuple(args)
    args = _split_name(args)
    out += b"*%d\r\n" % len(args)
    for value in args:
        data = _arg_bytes(value)
        out += b"$%d\r\n" % (data.nbytes if isinstance(data, memoryview) else len(data))
        out += data
        out += b"\r\n"


def encode_command(args: Iterable[Any]) -> bytes:
    """The RESP bytes of one command, e.g. `encode_command(("SET", "k", 1))`."""
    out = bytearray()
    _encode_into(out, args)
    return bytes(out)


def encode_commands(commands: Iterable[Iterable[Any]]) -> bytes:
    """The RESP bytes of a whole batch of commands, concatenated into one buffer."""
    out = bytearray()
    for args in commands:
        _encode_into(out, args)
    return bytes(out)
