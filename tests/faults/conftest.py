"""Collects the fault matrix's outcomes and prints them as one table after the run (also
written to $MEETQ_FAULT_MATRIX_OUT when set), so README.md and BENCHMARKS.md can quote it."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

_KEY = pytest.StashKey[list[tuple[str, str, str, str]]]()


@pytest.fixture
def matrix(request: pytest.FixtureRequest) -> Callable[[str, str, str, str], None]:
    """record(component, case, outcome, note): one row of the summary table."""
    rows = request.config.stash.setdefault(_KEY, [])

    def record(component: str, case: str, outcome: str, note: str = "") -> None:
        rows.append((component, case, outcome, note))

    return record


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    rows = config.stash.get(_KEY, [])
    if not rows:
        return
    backend = os.environ.get("MEETQ_BACKEND", "auto")
    header = ("component", "case", "outcome")
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(3)]
    lines = [
        f"fault matrix (backend {backend}): component x case -> outcome",
        f"{'component':<{widths[0]}}  {'case':<{widths[1]}}  {'outcome':<{widths[2]}}  note",
    ]
    for component, case, outcome, note in rows:
        lines.append(
            f"{component:<{widths[0]}}  {case:<{widths[1]}}  {outcome:<{widths[2]}}  {note}"
        )
    terminalreporter.write_sep("=", "fault matrix")
    for line in lines:
        terminalreporter.write_line(line)
    out = os.environ.get("MEETQ_FAULT_MATRIX_OUT")
    if out:
        with open(out, "a") as f:
            f.write("\n".join(lines) + "\n\n")
