"""The ring buffer: native (Rust) and pure twins run the same tests, plus a differential."""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
import weakref
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import native_module
from meetq._pure import ring as _ring

_rs = native_module("_meetq_rs")
IMPLS = [pytest.param(_ring, id="pure")]
IMPLS.append(
    pytest.param(_rs, id="native")
    if _rs
    else pytest.param(None, id="native", marks=pytest.mark.skip("no native build"))
)


@pytest.fixture(params=IMPLS)
def impl(request: pytest.FixtureRequest) -> Any:
    return request.param


class Token:
    """A weak-referenceable object, to see exactly when the ring lets go of it."""


def test_fifo_bound_and_capacity(impl: Any) -> None:
    r = impl.RingBuffer(5)
    assert (r.limit, r.capacity, r.lanes) == (5, 8, 1)
    assert [r.try_push(i) for i in range(6)] == [True] * 5 + [False]
    assert len(r) == 5
    assert r.pop() == 0
    assert r.drain(10) == [1, 2, 3, 4]
    assert r.pop() is None
    assert r.drain(10) == []
    assert r.accepted == 5


def test_wraps_around(impl: Any) -> None:
    r = impl.RingBuffer(3)
    out = []
    for i in range(100):
        assert r.try_push(i)
        if i % 3 == 2:
            out.extend(r.drain(2))
            out.append(r.pop())
    assert out == list(range(99))


def test_lanes_are_strict_priority_and_share_the_bound(impl: Any) -> None:
    r = impl.RingBuffer(4, 4)
    for lane, item in [(0, "low"), (3, "crit"), (1, "n1"), (2, "high")]:
        assert r.try_push(item, lane)
    assert not r.try_push("over", 3)
    assert r.drain(3) == ["crit", "high", "n1"]
    assert r.try_push("n2", 1)
    assert r.drain(10) == ["n2", "low"]


def test_invalid_sizes(impl: Any) -> None:
    with pytest.raises(ValueError):
        impl.RingBuffer(0)
    with pytest.raises(ValueError):
        impl.RingBuffer(4, 0)


def test_emit_builds_events_and_counts_drops(impl: Any) -> None:
    r = impl.RingBuffer(2, 4)
    assert r.emit("a", {"k": 1}, "src")
    assert r.emit_with_priority(3, "b")
    assert not r.emit("c")
    assert not r.try_push("x")  # a refused try_push is not a drop
    assert r.dropped == 1
    b, a = r.drain(2)
    assert (b.type, b.priority, b.payload, b.source) == ("b", 3, {}, "")
    assert (a.type, a.priority, a.payload, a.source) == ("a", 1, {"k": 1}, "src")
    assert a.timestamp > 1.7e9
    with pytest.raises(ValueError):
        r.emit_with_priority(4, "x")


def test_local_event_is_immutable(impl: Any) -> None:
    ev = impl.LocalEvent("t", {"a": 1}, "s", 12.5, 2)
    assert (ev.type, ev.payload, ev.source, ev.timestamp, ev.priority) == (
        "t",
        {"a": 1},
        "s",
        12.5,
        2,
    )
    with pytest.raises(AttributeError):
        ev.type = "u"
    assert "LocalEvent(type='t'" in repr(ev)


def test_waker_fires_once_per_empty_to_nonempty_edge(impl: Any) -> None:
    r = impl.RingBuffer(16)
    calls: list[int] = []
    r.set_waker(lambda: calls.append(len(r)))
    r.try_push(1)
    assert calls == []  # not armed: nobody is waiting
    assert r.arm() is False  # items present: the consumer must not sleep
    r.drain(10)
    assert r.arm() is True
    for i in range(10):
        r.emit("e", {"i": i})
    assert calls == [1]
    r.drain(10)
    assert r.arm()
    r.disarm()
    r.try_push(2)
    assert calls == [1]


def test_failing_waker_never_breaks_a_push(impl: Any) -> None:
    r = impl.RingBuffer(4)
    seen: list[Any] = []
    old = sys.unraisablehook
    sys.unraisablehook = seen.append
    try:
        r.set_waker(lambda: 1 / 0)
        assert r.arm()
        assert r.try_push("x")
    finally:
        sys.unraisablehook = old
    assert len(seen) == 1 and isinstance(seen[0].exc_value, ZeroDivisionError)
    assert r.pop() == "x"


def test_objects_are_released_exactly_once(impl: Any) -> None:
    obj = Token()
    base = sys.getrefcount(obj)
    r = impl.RingBuffer(8)
    for _ in range(5):
        r.try_push(obj)
    assert sys.getrefcount(obj) == base + 5
    assert r.pop() is obj
    assert sys.getrefcount(obj) == base + 4
    out = r.drain(2)
    del out
    assert sys.getrefcount(obj) == base + 2
    del r  # the two still inside are released with the ring
    gc.collect()
    assert sys.getrefcount(obj) == base


def test_ring_dropped_with_contents_frees_them(impl: Any) -> None:
    tokens = [Token() for _ in range(100)]
    refs = [weakref.ref(t) for t in tokens]
    r = impl.RingBuffer(128)
    for t in tokens:
        r.try_push(t)
    del tokens, t
    assert all(ref() is not None for ref in refs)
    del r
    gc.collect()
    assert all(ref() is None for ref in refs)


def test_threads_push_and_pop_without_loss(impl: Any) -> None:
    r = impl.RingBuffer(64)
    per, producers = 5_000, 4
    got: list[int] = []
    done = threading.Event()

    def produce(p: int) -> None:
        for i in range(per):
            while not r.try_push(p * per + i):
                pass

    def consume() -> None:
        while len(got) < per * producers:
            got.extend(r.drain(32))
        done.set()

    threads = [threading.Thread(target=produce, args=(p,)) for p in range(producers)]
    threads.append(threading.Thread(target=consume))
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert done.is_set()
    assert sorted(got) == list(range(per * producers))


ops = st.lists(
    st.one_of(
        st.tuples(st.just("push"), st.integers(0, 3)),
        st.tuples(st.just("emit"), st.integers(0, 3)),
        st.tuples(st.just("pop"), st.just(0)),
        st.tuples(st.just("drain"), st.integers(0, 9)),
        st.tuples(st.just("arm"), st.just(0)),
    ),
    max_size=200,
)


@pytest.mark.skipif(_rs is None, reason="no native build")
@settings(max_examples=300, deadline=None)
@given(limit=st.integers(1, 9), lanes=st.integers(1, 4), script=ops)
def test_native_matches_pure(limit: int, lanes: int, script: list[tuple[str, int]]) -> None:
    rings = [_rs.RingBuffer(limit, lanes), _ring.RingBuffer(limit, lanes)]
    wakes = [[0], [0]]
    for ring, w in zip(rings, wakes, strict=True):
        ring.set_waker(lambda w=w: w.__setitem__(0, w[0] + 1))
    for step, (op, arg) in enumerate(script):
        results = []
        for ring in rings:
            if op == "push":
                results.append(ring.try_push(step, arg))
            elif op == "emit":
                results.append(ring.emit_with_priority(arg, f"t{step}"))
            elif op == "pop":
                item = ring.pop()
                results.append(getattr(item, "type", item))
            elif op == "drain":
                results.append([getattr(i, "type", i) for i in ring.drain(arg)])
            else:
                results.append(ring.arm())
        assert results[0] == results[1], (op, arg)
        assert len(rings[0]) == len(rings[1])
    assert wakes[0] == wakes[1]
    assert (rings[0].accepted, rings[0].dropped) == (rings[1].accepted, rings[1].dropped)
    assert rings[0].capacity == rings[1].capacity


def test_owner_cycle_through_the_waker_is_collected(impl: Any) -> None:
    class Owner:
        def __init__(self) -> None:
            self.ring = impl.RingBuffer(4)
            self.ring.set_waker(self.wake)

        def wake(self) -> None:
            pass

    owner = Owner()
    ref = weakref.ref(owner)
    del owner
    gc.collect()
    assert ref() is None


def _dispatch_table(log: list[Any]) -> dict[str, Any]:
    """Handlers of every kind; each records what it saw (the same for both twins)."""

    def ok(e: Any) -> None:
        log.append(("ok", e.type, e.payload["n"]))

    def boom(e: Any) -> None:
        raise ValueError(e.payload["n"])

    def cancels(e: Any) -> None:
        raise asyncio.CancelledError

    async def done(e: Any) -> None:
        log.append(("done", e.payload["n"]))

    async def suspends(e: Any) -> None:
        await asyncio.sleep(0)

    async def fails(e: Any) -> None:
        raise KeyError(e.payload["n"])

    def thread(e: Any) -> None:
        pass

    return {
        "a": ((ok,), (), ()),
        "b": ((ok, boom), (done,), ()),
        "c": ((cancels,), (suspends, fails), ()),
        "d": ((), (suspends,), (thread,)),
        "e": ((), (), ()),
        # one async handler, no thread: dispatch takes its first step itself
        "f": ((), (suspends,), ()),
        "g": ((ok,), (fails,), ()),
    }


def _kind_of(rest: Any) -> str:
    if rest is None:
        return "thread"
    return "stepped" if isinstance(rest, tuple) else "started"


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from("abcdefgh"), st.integers(0, 3)),
        max_size=30,
    ),
    st.integers(1, 12),
    st.integers(0, 5),
)
def test_dispatch_matches_the_pure_twin(
    events: list[tuple[str, int]], max_events: int, budget: int
) -> None:
    """`RingBuffer.dispatch` (the bus's emit -> handler path), native against pure, on a
    random ring content: the same handler calls, errors, hand-backs and leftovers."""
    if _rs is None:
        pytest.skip("no native build")
    outcomes = []
    for impl in (_rs, _ring):
        ring = impl.RingBuffer(64, 4)
        for n, (etype, prio) in enumerate(events):
            assert ring.emit_with_priority(prio, etype, {"n": n}, "src")
        log: list[Any] = []
        errors: list[Any] = []
        table = _dispatch_table(log)

        def start_async(e: Any, fn: Any, errors: list[Any] = errors) -> Any:
            # the bus starts a task here; stepping once is enough to compare the twins
            coro = fn(e)
            try:
                coro.send(None)
            except StopIteration:
                return None
            except Exception as exc:
                errors.append((e.payload["n"], fn.__name__, type(exc).__name__))
                return None
            return coro

        processed, failed, pending, popped = ring.dispatch(
            max_events,
            table,
            lambda e, fn, exc, errors=errors: errors.append(
                (e.payload["n"], fn.__name__, type(exc).__name__)
            ),
            budget,
            start_async,
        )
        handed = [
            (e.payload["n"], [(fn.__name__, _kind_of(rest)) for fn, rest in runs])
            for e, runs in pending or []
        ]
        for _, runs in pending or []:
            for _, rest in runs:
                if isinstance(rest, tuple):
                    rest[0].close()  # (coroutine, what it yielded): stepped by dispatch
                elif rest is not None:
                    rest.close()
        rest = [(e.type, e.payload["n"]) for e in ring.drain(100)]
        outcomes.append((processed, failed, handed, popped, log, errors, rest))
    assert outcomes[0] == outcomes[1]
