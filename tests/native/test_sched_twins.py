"""The native scheduler core and task record against their pure twins: the same random
operation sequence applied to both gives the same returns, errors, callbacks, books and
task states (deadlines differ by the clock each read, so callbacks are compared by name).
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import meetq.local.scheduler  # noqa: F401  (registers the enums with both twins)
from meetq import _native
from meetq._pure import sched as pure

pytestmark = pytest.mark.skipif(_native.BACKEND != "native", reason="no native build")


class Rejected(Exception):
    pass


class Harness:
    """One core with recording callbacks; handlers are chosen by name."""

    def __init__(self, core_cls: Any, task_cls: Any, buffer_size: int, max_results: int):
        self.task_cls = task_cls
        self.calls: list[tuple[Any, ...]] = []
        self.core = core_cls(
            buffer_size,
            2,
            max_results,
            3600.0,
            "p-",
            0,
            arm=lambda ms: self.calls.append(("arm",)),
            kick=lambda: self.calls.append(("kick",)),
            reject=self.reject,
            finished=lambda t: self.calls.append(("finished", t.id)),
            idle=lambda: self.calls.append(("idle",)),
            start_async=self.start_async,
            start_thread=lambda t: self.calls.append(("thread", t.id)),
            failed=lambda t, exc: self.calls.append(("failed", t.id, type(exc).__name__)),
        )
        self.tasks: list[Any] = []

    def reject(self, task: Any, full: bool) -> None:
        self.calls.append(("reject", full))
        raise Rejected("full" if full else "invalid")

    def start_async(self, task: Any, awaitable: Any) -> None:
        self.calls.append(("async", task.id))
        awaitable.close()
        self.core.finish(task, pure.COMPLETED, None)

    def handler(self, name: str) -> Any:
        def ok(t: Any) -> str:
            return "ok:" + str(t.type)

        def boom(t: Any) -> None:
            raise ValueError("boom")

        def cancels(t: Any) -> None:
            raise asyncio.CancelledError

        async def coro(t: Any) -> None:
            return None

        def submits(t: Any) -> None:  # a handler submitting a task from inside the pump
            self.core.submit(self.task_cls(type="child", handler=ok))

        return {
            "ok": ok,
            "boom": boom,
            "cancels": cancels,
            "coro": coro,
            "submits": submits,
            "none": None,
        }[name]

    def apply(self, op: tuple[Any, ...]) -> Any:
        kind = op[0]
        try:
            if kind == "submit":
                _, handler, priority, delay, tid, in_thread = op
                task = self.task_cls(
                    type=handler,
                    handler=self.handler(handler),
                    priority=priority,
                    delay=delay,
                    id=tid,
                    in_thread=in_thread,
                )
                self.tasks.append(task)
                return ("id", self.core.submit(task))
            if kind == "resubmit" and self.tasks:
                return ("id", self.core.submit(self.tasks[op[1] % len(self.tasks)]))
            if kind == "cancel":
                return self.core.cancel(op[1])
            if kind == "pump":
                return self.core.pump()
            if kind == "start":
                return self.core.start()
            if kind == "close":
                return self.core.close()
            if kind == "unqueue_finish" and self.tasks:
                task = self.tasks[op[1] % len(self.tasks)]
                if task._where in (pure.READY, pure.OVERDUE, pure.DELAYED):
                    self.core.unqueue(task)
                    self.core.finish(task, pure.CANCELLED, "dropped")
                return None
            return None
        except Rejected as exc:
            return ("rejected", str(exc))
        except ValueError as exc:
            return ("ValueError", str(exc))

    def snapshot(self) -> Any:
        table = {
            tid: (type(v).__name__.replace("FinishedTask", "F"), str(v.status), v._where)
            for tid, v in self.core.tasks.items()
        }
        tasks = [
            (t.id, str(t.status), t._where, t._why, t.result, t._error, t._timer >= 0)
            for t in self.tasks
        ]
        ready = [t.id for t in self.core.ready_order()]
        return self.core.stats(), table, tasks, ready, self.calls, self.core.is_idle()


ops = st.one_of(
    st.tuples(
        st.just("submit"),
        st.sampled_from(["ok", "boom", "cancels", "coro", "submits", "none"]),
        st.sampled_from([0, 1, 2, 3, 7, -1]),
        st.sampled_from([0.0, 0.0, 30.0, 3600.0]),
        st.sampled_from(["", "", "", "a", "b"]),
        st.booleans(),
    ),
    st.tuples(st.just("resubmit"), st.integers(0, 50)),
    st.tuples(st.just("cancel"), st.sampled_from(["p-1", "p-2", "p-3", "p-5", "a", "b", "x"])),
    st.tuples(st.just("pump")),
    st.tuples(st.just("start")),
    st.tuples(st.just("unqueue_finish"), st.integers(0, 50)),
    st.tuples(st.just("close")),
)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(ops, max_size=40),
    st.sampled_from([1, 2, 4, 100]),
    st.sampled_from([1, 3, 1000]),
)
def test_native_core_matches_pure_twin(
    sequence: list[tuple[Any, ...]], buffer_size: int, max_results: int
) -> None:
    native = Harness(_native.SchedulerCore, _native.Task, buffer_size, max_results)
    twin = Harness(pure.SchedulerCore, pure.Task, buffer_size, max_results)
    for op in sequence:
        assert native.apply(op) == twin.apply(op), op
        assert native.snapshot() == twin.snapshot(), op


def test_task_records_match() -> None:
    def h(t: Any) -> None:
        pass

    for kwargs in (
        {},
        {"type": "t", "handler": h, "delay": 2, "timeout": None, "in_thread": True},
        {"payload": {"a": 1}, "max_retries": 3, "retry_backoff": 0.5, "scheduled_at": 5},
    ):
        a, b = _native.Task(**kwargs), pure.Task(**kwargs)
        assert repr(a).replace(repr(h), "h") == repr(b).replace(repr(h), "h")
        for name in ("timeout", "delay", "retry_backoff", "scheduled_at", "max_retries"):
            assert getattr(a, name) == getattr(b, name)
            assert type(getattr(a, name)) is type(getattr(b, name))
    positional = _native.Task("t", h, 2), pure.Task("t", h, 2)
    assert [(t.type, t.handler, t.priority) for t in positional] == [("t", h, 2)] * 2
    for cls in (_native.Task, pure.Task):
        with pytest.raises(TypeError):
            cls(nope=1)
        with pytest.raises(TypeError):
            cls("t", type="u")
        t = cls()
        assert t.payload == {} and t.payload is t.payload  # made once, on first read
        t.payload = {"x": 1}
        assert t.payload == {"x": 1}
        assert t._timer == -1 and t.timeout == 30.0 and not math.isnan(t.retry_backoff)


def test_a_task_subclass_keeps_its_own_init() -> None:
    class Named(_native.Task):  # type: ignore[misc]
        def __init__(self, name: str) -> None:
            self.label = name

    named = Named("x")  # the generic type call: the base record, then this __init__
    assert (named.label, named.type, named.timeout) == ("x", "x", 30.0)
