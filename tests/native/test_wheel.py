"""The timer wheel: native class, pure twin, and whichever `_native.TimerWheel` is active.

Every unit test runs on each implementation; a hypothesis state machine drives native, pure
and a sorted-list model with the same random operations and requires identical results.
The clock is virtual (plain ints), so nothing here depends on real time.
"""

from __future__ import annotations

import gc
import importlib
import sys
import weakref
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from meetq import _native
from meetq._pure import wheel as _wheel

try:
    NativeWheel: Any = importlib.import_module("meetq._meetq_rs").TimerWheel
except ImportError:  # pure-only install: native cases are skipped, not failed
    NativeWheel = None

RANGE = 1 << 36  # what the six levels span; beyond it timers overflow
U64_MAX = (1 << 64) - 1

IMPLS = {"native": NativeWheel, "pure": _wheel.TimerWheel, "active": _native.TimerWheel}


@pytest.fixture(params=sorted(IMPLS))
def W(request: pytest.FixtureRequest) -> Any:
    cls = IMPLS[request.param]
    if cls is None:
        pytest.skip("native extension not importable")
    return cls


def test_fires_in_deadline_order_with_ties_in_insertion_order(W: Any) -> None:
    w = W(0)
    for deadline, item in [(70, "a"), (5, "b"), (70, "c"), (5000, "d"), (5, "e")]:
        w.insert(deadline, item)
    assert len(w) == 5
    assert w.next_deadline() == 5
    assert w.advance(4) == []
    assert w.advance(69) == ["b", "e"]
    w.insert(70, "f")  # same deadline as a and c, inserted later: fires after them
    assert w.advance(100_000) == ["a", "c", "f", "d"]
    assert len(w) == 0
    assert w.next_deadline() is None
    assert w.elapsed == 100_000


def test_past_deadlines_fire_on_the_next_advance_even_without_moving(W: Any) -> None:
    w = W(start_ms=1000)
    w.insert(1000, "now")
    w.insert(3, "old")
    w.insert(500, "older-than-now")
    w.insert(3, "old-2")
    assert w.next_deadline() == 3
    assert w.advance(10) == ["old", "old-2", "older-than-now", "now"]
    assert w.elapsed == 1000  # time never goes backwards
    assert w.advance(999) == []


def test_cancel_is_exact_and_stale_handles_do_nothing(W: Any) -> None:
    w = W()
    a = w.insert(10, "a")
    b = w.insert(10, "b")
    assert w.cancel(a) is True
    assert w.cancel(a) is False
    c = w.insert(20, "c")  # reuses a's slab entry with a new generation
    assert c & 0xFFFFFFFF == a & 0xFFFFFFFF and c != a
    assert w.cancel(a) is False
    assert w.advance(15) == ["b"]
    assert w.cancel(b) is False, "cancel after fire"
    assert w.cancel(U64_MAX) is False
    assert w.cancel(12345) is False
    assert len(w) == 1
    assert w.cancel(c) is True
    assert w.advance(1 << 40) == []


def test_next_deadline_is_exact_at_every_level(W: Any) -> None:
    w = W()
    far = w.insert(3 * 64**3 + 7, "far")
    assert w.next_deadline() == 3 * 64**3 + 7
    mid = w.insert(64**2 + 99, "mid")
    w.insert(64**2 + 130, "mid2")
    assert w.next_deadline() == 64**2 + 99
    assert w.cancel(mid)
    assert w.next_deadline() == 64**2 + 130
    assert w.advance(64**2 + 129) == []
    assert w.next_deadline() == 64**2 + 130
    assert w.advance(64**2 + 130) == ["mid2"]
    assert w.next_deadline() == 3 * 64**3 + 7
    assert w.cancel(far)
    assert w.next_deadline() is None


def test_beyond_the_range_overflows_and_fires_on_time(W: Any) -> None:
    w = W(5)
    w.insert(3 * RANGE + 17, "x")
    w.insert(RANGE + 1, "y")
    w.insert(RANGE - 1, "z")
    w.insert(3 * RANGE + 17, "x2")
    assert w.next_deadline() == RANGE - 1
    assert w.advance(RANGE) == ["z"]
    assert w.next_deadline() == RANGE + 1
    assert w.advance(3 * RANGE + 16) == ["y"]
    assert w.advance(3 * RANGE + 17) == ["x", "x2"]
    w.insert(U64_MAX, "end of time")
    assert w.advance(U64_MAX - 1) == []
    assert w.advance(U64_MAX) == ["end of time"]


def test_arguments_are_checked_the_same_way(W: Any) -> None:
    w = W()
    with pytest.raises(OverflowError):
        w.insert(-1, "x")
    with pytest.raises(OverflowError):
        w.insert(1 << 64, "x")
    with pytest.raises(TypeError):
        w.insert(1.5, "x")
    with pytest.raises(OverflowError):
        w.advance(-5)
    with pytest.raises(OverflowError):
        w.cancel(-1)
    with pytest.raises(OverflowError):
        W(-1)
    assert len(w) == 0


def test_holds_python_objects_without_leaks_or_double_frees(W: Any) -> None:
    item = object()
    base = sys.getrefcount(item)
    w = W()
    handles = [w.insert(i % 7, item) for i in range(100)]
    assert sys.getrefcount(item) == base + 100
    for h in handles[:30]:
        assert w.cancel(h)
        assert not w.cancel(h)
    assert sys.getrefcount(item) == base + 70
    fired = w.advance(3)
    assert len(fired) == sum(1 for i in range(30, 100) if i % 7 <= 3)
    assert sys.getrefcount(item) == base + 70
    del fired
    left = len(w)
    assert sys.getrefcount(item) == base + left
    del w
    gc.collect()
    assert sys.getrefcount(item) == base


def test_reference_cycles_through_the_wheel_are_collected(W: Any) -> None:
    class Holder:
        pass

    w = W()
    h = Holder()
    h.wheel = w  # type: ignore[attr-defined]
    w.insert(10, h)
    ref = weakref.ref(h)
    del w, h
    gc.collect()
    assert ref() is None


def test_an_item_finalizer_may_use_the_wheel_during_cancel(W: Any) -> None:
    w = W()

    class Reentrant:
        def __del__(self) -> None:
            w.insert(50, "from finalizer")

    h = w.insert(10, Reentrant())
    assert w.cancel(h)
    gc.collect()
    assert w.advance(100) == ["from finalizer"]


def test_huge_jump_fires_everything_in_order(W: Any) -> None:
    w = W()
    deadlines = [(i * 1_000_003) % 50_000_000_000 for i in range(2000)]
    for d in deadlines:
        w.insert(d, d)
    fired = w.advance(1 << 40)
    assert fired == sorted(deadlines)


# -- differential: native vs pure vs a sorted-list model -------------------------------

deltas = st.one_of(
    st.integers(-5, 70),  # same tick, level 0 and the first cascade
    st.integers(0, 5000),
    st.integers(0, 1 << 30),
    st.integers(RANGE - 100, 3 * RANGE),  # overflow
    st.sampled_from([0, 63, 64, 4095, 4096, 262_143, 262_144]),  # level edges
)
steps = st.one_of(
    st.integers(0, 70),
    st.sampled_from([1, 63, 64, 65, 4096, 1 << 24]),
    st.integers(0, 1 << 38),  # huge jumps
)


class WheelsAgree(RuleBasedStateMachine):
    """Same random operations on every wheel; every answer must be identical."""

    @initialize(start=st.one_of(st.integers(0, 200), st.integers(0, 1 << 40)))
    def setup(self, start: int) -> None:
        self.wheels = [_wheel.TimerWheel(start)]
        if NativeWheel is not None:
            self.wheels.append(NativeWheel(start))
        self.now = start
        self.model: list[tuple[int, int, int]] = []  # (deadline, seq, handle)
        self.handles: list[int] = []
        self.seq = 0

    def _same(self, results: list[Any]) -> Any:
        assert all(r == results[0] for r in results), results
        return results[0]

    @rule(delta=deltas, count=st.integers(1, 3))
    def insert(self, delta: int, count: int) -> None:
        deadline = min(max(self.now + delta, 0), U64_MAX)
        for _ in range(count):  # several timers on the same tick
            self.seq += 1
            handle = self._same([w.insert(deadline, self.seq) for w in self.wheels])
            self.model.append((deadline, self.seq, handle))
            self.handles.append(handle)

    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        if not self.handles:
            return
        handle = data.draw(st.sampled_from(self.handles))  # may be fired or cancelled
        live = [m for m in self.model if m[2] == handle]
        assert self._same([w.cancel(handle) for w in self.wheels]) is bool(live)
        if live:
            self.model.remove(live[0])

    @rule(step=steps)
    def advance(self, step: int) -> None:
        self.now = min(self.now + step, U64_MAX)
        fired = self._same([w.advance(self.now) for w in self.wheels])
        due = sorted(m for m in self.model if m[0] <= self.now)
        self.model = [m for m in self.model if m[0] > self.now]
        assert fired == [seq for _, seq, _ in due]

    @rule(back=st.integers(1, 1000))
    def advance_backwards(self, back: int) -> None:
        earlier = max(self.now - back, 0)
        fired = self._same([w.advance(earlier) for w in self.wheels])
        due = sorted(m for m in self.model if m[0] <= self.now)
        assert fired == [seq for _, seq, _ in due]  # only timers already past
        self.model = [m for m in self.model if m[0] > self.now]

    @invariant()
    def sizes_and_next_deadline_match(self) -> None:
        assert self._same([len(w) for w in self.wheels]) == len(self.model)
        expected = min((m[0] for m in self.model), default=None)
        assert self._same([w.next_deadline() for w in self.wheels]) == expected


WheelsAgree.TestCase.settings = settings(
    max_examples=500,
    stateful_step_count=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_wheels_agree = WheelsAgree.TestCase
