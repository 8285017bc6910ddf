"""The scheduler's id table: the ids it makes (prefix + number) and any other id a caller
gives live in two halves natively (one dict in the pure twin); every id, whichever half
holds it, is found, cancelled, reused once finished and evicted the same way."""

from __future__ import annotations

from typing import Any

import pytest

from meetq import Task, TaskNotFoundError, TaskScheduler, TaskStatus


def noop(_t: Any) -> None:
    pass


async def test_made_and_given_ids_are_kept_apart_and_both_work() -> None:
    async with TaskScheduler() as s:
        made = s.submit(Task(type="m", handler=noop, delay=60))
        prefix = made.rstrip("0123456789")
        number = int(made[len(prefix) :])
        # Given ids: a plain one, one spelling a number the core has not made yet, and
        # one spelling a made number with a leading zero (a different id).
        given = ["job-1", f"{prefix}{number + 1000}", f"{prefix}0{number}", prefix]
        for tid in given:
            assert s.submit(Task(type="g", handler=noop, delay=60, id=tid)) == tid
        for tid in [made, *given]:
            assert s.status(tid) is TaskStatus.PENDING
        with pytest.raises(ValueError, match="already scheduled"):
            s.submit(Task(type="g", handler=noop, delay=60, id=f"{prefix}0{number}"))
        assert s.cancel(f"{prefix}0{number}")
        assert s.status(made) is TaskStatus.PENDING  # not the same id
        assert s.status(f"{prefix}0{number}") is TaskStatus.CANCELLED
        assert not s.cancel(f"{prefix}{number + 1}")  # never made
        with pytest.raises(TaskNotFoundError):
            s.status(f"{prefix}{number + 1}")
        assert not s.cancel(12345)  # not even a string
        dropped = await s.stop()
    # stop() reports the made ids by number, then the given ones in submission order
    assert [t.id for t in dropped] == [made, given[1], given[0], given[3]]


async def test_a_finished_id_is_reused_and_old_results_are_evicted() -> None:
    async with TaskScheduler(max_results=8) as s:
        first = s.submit(Task(type="a", handler=noop))
        assert (await s.wait(first)).status is TaskStatus.COMPLETED
        again = s.submit(Task(type="b", handler=lambda t: "second", id=first))
        assert again == first
        assert (await s.wait(first)).status is TaskStatus.COMPLETED
        ids = [s.submit(Task(type="c", handler=noop, id=f"c{i}")) for i in range(20)]
        ids += [s.submit(Task(type="c", handler=noop)) for _ in range(20)]
        assert (await s.wait(ids[-1])).status is TaskStatus.COMPLETED
        known = [tid for tid in [first, *ids] if _known(s, tid)]
    assert 1 <= len(known) <= 8
    assert known == ids[-len(known) :]  # the newest results are the ones kept


def _known(s: TaskScheduler, tid: str) -> bool:
    try:
        s.status(tid)
    except TaskNotFoundError:
        return False
    return True
