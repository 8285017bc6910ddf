"""The bus's batch dispatch loop: the Cython core and its pure twin agree exactly."""

from __future__ import annotations

from typing import Any

import pytest

from helpers import native_module
from meetq._pure import dispatch as _dispatch
from meetq._pure import ring as _ring

_cy = native_module("_cy_dispatch")
IMPLS = [pytest.param(_dispatch.dispatch, id="pure")]
IMPLS.append(
    pytest.param(_cy.dispatch, id="native")
    if _cy
    else pytest.param(None, id="native", marks=pytest.mark.skip("no native build"))
)


def noop(ev: Any) -> None:
    pass


@pytest.mark.parametrize("dispatch", IMPLS)
def test_runs_sync_inline_and_hands_back_the_rest(dispatch: Any) -> None:
    calls: list[tuple[str, str]] = []
    errors: list[tuple[str, str]] = []

    def ok(ev: Any) -> None:
        calls.append(("ok", ev.type))

    def bad(ev: Any) -> None:
        raise RuntimeError(ev.type)

    def threaded(ev: Any) -> None:  # never called by dispatch itself
        raise AssertionError

    table = {
        "a": ((ok, bad, ok), (), ()),
        "b": ((ok,), (), (threaded,)),
        "c": ((), (), (threaded, threaded)),
    }
    evs = [_ring.LocalEvent(t) for t in ["a", "b", "zzz", "c", "a"]]
    processed, failed, pending, end = dispatch(
        evs, 0, table, lambda ev, fn, exc: errors.append((ev.type, str(exc))), 10
    )
    assert (processed, failed, end) == (3, 2, 5)  # a, zzz, a done; b and c in progress
    assert [(ev.type, runs) for ev, runs in pending] == [
        ("b", [(threaded, None, None)]),
        ("c", [(threaded, None, None), (threaded, None, None)]),
    ]
    assert calls == [("ok", "a"), ("ok", "a"), ("ok", "b"), ("ok", "a"), ("ok", "a")]
    assert errors == [("a", "a"), ("a", "a")]


@pytest.mark.parametrize("dispatch", IMPLS)
def test_async_handlers_are_stepped_eagerly(dispatch: Any) -> None:
    import asyncio

    done: list[str] = []
    fut: asyncio.Future[None] = asyncio.Future(loop=asyncio.new_event_loop())

    async def finishes(ev: Any) -> None:
        done.append(ev.type)

    async def suspends(ev: Any) -> None:
        await fut
        done.append("never here during dispatch")

    async def fails(ev: Any) -> None:
        raise ValueError("async failure")

    async def cancels(ev: Any) -> None:
        raise asyncio.CancelledError

    errors: list[BaseException] = []
    table = {"f": ((), (finishes, fails, cancels), ()), "s": ((), (suspends, finishes), ())}
    evs = [_ring.LocalEvent("f"), _ring.LocalEvent("s")]
    processed, failed, pending, end = dispatch(
        evs, 0, table, lambda ev, fn, exc: errors.append(exc), 10
    )
    assert (processed, failed, end) == (1, 2, 2)
    assert done == ["f", "s"]
    assert [type(e) for e in errors] == [ValueError, asyncio.CancelledError]
    [(ev, [(fn, coro, yielded)])] = pending
    assert ev.type == "s" and fn is suspends and yielded is fut
    coro.close()
    fut.get_loop().close()


@pytest.mark.parametrize("dispatch", IMPLS)
def test_budget_and_start_bound_the_work(dispatch: Any) -> None:
    table = {"t": ((noop,), (), (noop,)), "n": ((noop,), (), ())}
    evs = [_ring.LocalEvent(t) for t in ["n", "t", "n", "t", "t", "n"]]
    processed, _, pending, end = dispatch(evs, 1, table, print, 2)
    assert (processed, len(pending), end) == (1, 2, 4)  # stops after the 2nd hand-back
    processed, _, pending, end = dispatch(evs, end, table, print, 2)
    assert (processed, len(pending), end) == (1, 1, 6)


@pytest.mark.parametrize("dispatch", IMPLS)
def test_nothing_in_progress_gives_none(dispatch: Any) -> None:
    assert dispatch([], 0, {}, print, 4) == (0, 0, None, 0)


@pytest.mark.parametrize("dispatch", IMPLS)
def test_base_exceptions_propagate(dispatch: Any) -> None:
    def stop(ev: Any) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        dispatch([_ring.LocalEvent("k")], 0, {"k": ((stop,), (), ())}, print, 1)
