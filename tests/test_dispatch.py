"""The bus's batch dispatch loop: the Cython core and its pure twin agree exactly."""

from __future__ import annotations

from typing import Any

import pytest

from helpers import native_module
from meetq import _dispatch, _ring

_cy = native_module("_cy_dispatch")
IMPLS = [pytest.param(_dispatch.dispatch, id="pure")]
IMPLS.append(
    pytest.param(_cy.dispatch, id="native")
    if _cy
    else pytest.param(None, id="native", marks=pytest.mark.skip("no native build"))
)


@pytest.mark.parametrize("dispatch", IMPLS)
def test_runs_inline_handlers_and_defers_the_rest(dispatch: Any) -> None:
    calls: list[tuple[str, str]] = []
    errors: list[tuple[str, str]] = []

    def ok(ev: Any) -> None:
        calls.append(("ok", ev.type))

    def bad(ev: Any) -> None:
        raise RuntimeError(ev.type)

    async def slow(ev: Any) -> None:  # never called by dispatch itself
        raise AssertionError

    table = {
        "a": ((ok, bad, ok), ()),
        "b": ((ok,), ((slow, 1),)),
        "c": ((), ((slow, 1),)),
    }
    evs = [_ring.LocalEvent(t) for t in ["a", "b", "zzz", "c", "a"]]
    processed, failed, deferred = dispatch(
        evs, table, lambda ev, fn, exc: errors.append((ev.type, str(exc)))
    )
    assert processed == 3  # a, zzz, a; b and c still have deferred handlers
    assert failed == 2
    assert [e.type for e in deferred] == ["b", "c"]
    assert calls == [("ok", "a"), ("ok", "a"), ("ok", "b"), ("ok", "a"), ("ok", "a")]
    assert errors == [("a", "a"), ("a", "a")]


@pytest.mark.parametrize("dispatch", IMPLS)
def test_nothing_deferred_gives_none(dispatch: Any) -> None:
    assert dispatch([], {}, print) == (0, 0, None)


@pytest.mark.parametrize("dispatch", IMPLS)
def test_base_exceptions_propagate(dispatch: Any) -> None:
    def stop(ev: Any) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        dispatch([_ring.LocalEvent("k")], {"k": ((stop,), ())}, print)
