"""publish_batch's staging loop: the native and pure twins build identical chunks.

The reference is written out here from the chunk layout documented in `_stage.py`:
each message encoded by `Codec.encode` after the same id and timestamp stamping. The native
side is skipped, not failed, when the run uses the pure backend.
"""

from __future__ import annotations

import itertools
from types import ModuleType
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import twins
from meetq import Message, Priority
from meetq._pure import stage as _stage
from meetq.errors import MalformedMessageError, MessageTooLargeError
from meetq.queue.message import Codec

IMPLS = twins("stage", _stage)
NOW = 1_700_000_000.25


def empty() -> list[list[Any]]:
    return [[b"0"], [b"1"], [b"2"], [b"3"], [b"0"], [b"1"], [b"2"], [b"3"], [b"d"]]


def run(impl: ModuleType, msgs: list[Message], full: int = 10**9, **kw: Any) -> Any:
    """Stages everything; returns (ids, [(chunk index, chunk)] in the order they filled)."""
    ids: list[str] = []
    chunks = empty()
    filled: list[tuple[int, list[Any]]] = []
    it = iter(msgs)
    count = kw.pop("count", itertools.count(1))
    while True:
        i = impl.stage(
            it, ids, chunks, NOW, kw.get("dumps", orjson.dumps), kw.get("max_size", 1 << 20),
            "pfx", count, full,
        )  # fmt: skip
        if i < 0:
            break
        filled.append((i, chunks[i]))
        chunks[i] = [chunks[i][0]]
    filled.extend((i, c) for i, c in enumerate(chunks) if len(c) > 1)
    return ids, filled


def expected(msgs: list[Message], full: int) -> Any:
    codec = Codec()
    ids: list[str] = []
    chunks = empty()
    filled: list[tuple[int, list[Any]]] = []
    count = itertools.count(1)
    for m in msgs:
        fresh = not m.id
        if fresh:
            m.id = f"pfx{next(count):x}"
        if not m.timestamp:
            m.timestamp = NOW
        ids.append(m.id)
        body = b"%d" % m.priority + codec.encode(m)
        delay = int((m.deliver_at - NOW) * 1000) if m.deliver_at else 0
        i = 8 if delay > 0 else int(m.priority) + (4 if fresh else 0)
        chunks[i] += [m.id, delay, body] if delay > 0 else [m.id, body]
        if len(chunks[i]) >= full:
            filled.append((i, chunks[i]))
            chunks[i] = [chunks[i][0]]
    filled.extend((i, c) for i, c in enumerate(chunks) if len(c) > 1)
    return ids, filled


def clone(msgs: list[Message]) -> list[Message]:
    return [Message(**{f: getattr(m, f) for f in Message.__dataclass_fields__}) for m in msgs]


messages = st.builds(
    Message,
    type=st.text(min_size=1, max_size=8),
    payload=st.dictionaries(
        st.text(max_size=5), st.integers(-(2**63), 2**63 - 1) | st.text(max_size=5), max_size=3
    ),
    priority=st.sampled_from(list(Priority)),
    id=st.sampled_from(["", "", "", "given-1", "given-2", "ü-id"]),
    timestamp=st.sampled_from([0.0, 12.5]),
    deliver_at=st.sampled_from([0.0, 0.0, NOW - 5, NOW + 0.0004, NOW + 2.5]),
)


@pytest.mark.parametrize("impl", IMPLS)
@settings(max_examples=300, deadline=None)
@given(msgs=st.lists(messages, max_size=30), full=st.integers(min_value=3, max_value=12))
def test_matches_the_reference(impl: ModuleType, msgs: list[Message], full: int) -> None:
    want = expected(clone(msgs), full)
    assert run(impl, msgs, full) == want


@pytest.mark.parametrize("impl", IMPLS)
def test_stamps_only_what_is_missing(impl: ModuleType) -> None:
    given_id = Message(type="a", id="mine", timestamp=5.0)
    fresh = Message(type="a")
    ids, filled = run(impl, [given_id, fresh])
    assert ids == ["mine", "pfx1"]
    assert (given_id.id, given_id.timestamp) == ("mine", 5.0)
    assert (fresh.id, fresh.timestamp) == ("pfx1", NOW)
    assert [i for i, _ in filled] == [1, 5]  # NORMAL: given ids in chunk 1, made ones in 5


@pytest.mark.parametrize("impl", IMPLS)
def test_bad_messages_raise_clear_errors_after_staging_the_earlier_ones(impl: ModuleType) -> None:
    ids: list[str] = []
    chunks = empty()
    bad_payload = Message(type="a", payload={"x": object()})
    with pytest.raises(MalformedMessageError, match="not serializable"):
        impl.stage(
            iter([Message(type="a"), bad_payload]), ids, chunks, NOW, orjson.dumps, 1 << 20,
            "p", itertools.count(1), 100,
        )  # fmt: skip
    assert len(ids) == 2 and len(chunks[5]) == 3
    with pytest.raises(MessageTooLargeError, match="limit 50"):
        run(impl, [Message(type="a", payload={"b": "x" * 100})], max_size=50)
    with pytest.raises(ValueError, match="NUL"):
        run(impl, [Message(type="a", id="a\0b")])
    with pytest.raises(ValueError, match="priority"):
        run(impl, [Message(type="a", priority=7)])  # type: ignore[arg-type]
