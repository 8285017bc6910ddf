"""Type stub of `native/dispatch.pyx`; pure twin (and documentation) in `_dispatch.py`."""

from collections.abc import Callable
from typing import Any

from meetq._pure.dispatch import Run, Table

def dispatch(
    events: list[Any],
    start: int,
    table: Table,
    on_error: Callable[[Any, Any, BaseException], None],
    budget: int,
) -> tuple[int, int, list[tuple[Any, list[Run]]] | None, int]: ...
