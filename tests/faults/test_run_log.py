"""The run-log check the fault tests rest on: a re-run after success is judged by when the
workers started and finished, not by the order their lines reached Redis."""

from __future__ import annotations

from fault_workers import RunLog


def test_a_frozen_run_whose_start_line_arrives_late_is_no_rerun() -> None:
    # the victim started at t=0 and froze before its "S" line left; the other worker took
    # the message over, ran it from t=1 to t=2; the victim resumed and finished at t=4
    log = RunLog(
        entries=[("S", "m", 2), ("D", "m", 2), ("S", "m", 1), ("D", "m", 1)],
        times=[1.0, 2.0, 0.0, 4.0],
    )
    assert log.reruns_after_success() == set()


def test_a_run_started_after_a_success_is_a_rerun_whatever_the_line_order() -> None:
    log = RunLog(
        entries=[("S", "m", 1), ("S", "m", 2), ("D", "m", 1), ("D", "m", 2), ("S", "n", 1)],
        times=[0.0, 3.0, 2.0, 4.0, 0.5],
    )
    assert log.reruns_after_success() == {"m"}
