"""RESP encoding: native and pure encoders produce byte-identical output to redis-py 5's.

The reference is redis-py's own asyncio `Connection.pack_command(s)` (its Python encoder,
the same code as `PythonRespSerializer` with `Encoder("utf-8", "strict")`). The native
side is skipped, not failed, when the run uses the pure backend.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.asyncio.connection import Connection
from redis.connection import Encoder, PythonRespSerializer
from redis.exceptions import DataError

from helpers import twins
from meetq import _native
from meetq._pure import resp as _resp

IMPLS = twins("resp", _resp)

_REF_CONN = Connection()  # never connected: only its packer is used
_REF_SERIALIZER = PythonRespSerializer(6000, Encoder("utf-8", "strict", False).encode)


def ref_command(args: Sequence[Any]) -> bytes:
    return b"".join(bytes(p) for p in _REF_SERIALIZER.pack(*args))


def ref_commands(commands: Sequence[Sequence[Any]]) -> bytes:
    return b"".join(bytes(p) for p in _REF_CONN.pack_commands(commands))


text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
binary = st.binary(max_size=40) | st.binary(min_size=5990, max_size=7000)
args = st.one_of(
    binary,
    text,
    st.integers(min_value=-(2**63) - 5, max_value=2**63 + 5),
    st.integers(min_value=-(10**300), max_value=10**300),
    st.floats(allow_nan=True, allow_infinity=True),
    binary.map(memoryview),
)
names = st.one_of(
    st.sampled_from(["SET", "EVALSHA", "RPUSH", "CONFIG GET", " lpush\tx ", "x\ny", ""]),
    st.sampled_from([b"SET", b"CLIENT SETNAME", b"a\tb", b"", b"  "]),
    text,
    st.binary(max_size=10),
)
commands = st.tuples(names, st.lists(args, max_size=12)).map(lambda t: (t[0], *t[1]))


@pytest.mark.parametrize("impl", IMPLS)
@settings(max_examples=400, deadline=None)
@given(command=commands)
def test_command_matches_redis_py(impl: ModuleType, command: tuple[Any, ...]) -> None:
    assert impl.encode_command(command) == ref_command(command)


@pytest.mark.parametrize("impl", IMPLS)
@settings(max_examples=150, deadline=None)
@given(batch=st.lists(commands, max_size=20))
def test_batch_matches_redis_py_pack_commands(
    impl: ModuleType, batch: list[tuple[Any, ...]]
) -> None:
    assert impl.encode_commands(batch) == ref_commands(batch)
    assert impl.encode_commands(iter(batch)) == b"".join(impl.encode_command(c) for c in batch)


@pytest.mark.parametrize("impl", IMPLS)
def test_argument_containers(impl: ModuleType) -> None:
    cmd: list[Any] = ["RPUSH", "k", b"v"]
    assert impl.encode_command(cmd) == impl.encode_command(tuple(cmd))
    assert impl.encode_command(iter(cmd)) == ref_command(cmd)
    assert impl.encode_commands([]) == b""
    assert impl.encode_command(["SET", bytearray(b"k"), b"v"]) == ref_command(["SET", b"k", b"v"])


@pytest.mark.parametrize("impl", IMPLS)
def test_number_subclasses_use_the_plain_number(impl: ModuleType) -> None:
    from meetq import Priority

    assert impl.encode_command(["SET", "k", Priority.HIGH]) == ref_command(["SET", "k", 2])
    assert impl.encode_command(["SET", "k", -(2**64)]) == ref_command(["SET", "k", -(2**64)])
    assert (
        impl.encode_command(["SET", "k", -(2**63)])
        == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$20\r\n-9223372036854775808\r\n"
    )


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("bad", [True, None, object(), [1], {"a": 1}])
def test_unencodable_arguments_raise_data_error_like_redis_py(impl: ModuleType, bad: Any) -> None:
    with pytest.raises(DataError):
        ref_command(["SET", "k", bad])
    with pytest.raises(DataError):
        impl.encode_command(["SET", "k", bad])
    with pytest.raises(DataError):
        impl.encode_commands([["PING"], ["SET", "k", bad]])


@pytest.mark.parametrize("impl", IMPLS)
def test_lone_surrogate_is_refused(impl: ModuleType) -> None:
    with pytest.raises(UnicodeEncodeError):
        impl.encode_command(["SET", "k", "\ud800"])


@pytest.mark.parametrize("impl", IMPLS)
def test_big_batch_is_one_buffer(impl: ModuleType) -> None:
    payload = b"x" * 100
    batch = [("RPUSH", "q", payload)] * 10_000
    out = impl.encode_commands(batch)
    assert isinstance(out, bytes)
    assert out == impl.encode_command(batch[0]) * 10_000


def test_active_backend_exports_the_encoder() -> None:
    encode: Callable[[Sequence[Any]], bytes] = _native.encode_command
    assert encode(["PING"]) == b"*1\r\n$4\r\nPING\r\n"
    assert _native.encode_commands([["PING"], ["PING"]]) == b"*1\r\n$4\r\nPING\r\n" * 2
