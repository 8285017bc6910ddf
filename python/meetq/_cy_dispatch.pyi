"""Type stub of `native/dispatch.pyx`; pure twin in `_dispatch.py`."""

from collections.abc import Callable
from typing import Any

def dispatch(
    events: list[Any],
    table: dict[str, tuple[tuple[Callable[[Any], Any], ...], tuple[Any, ...]]],
    on_error: Callable[[Any, Any, BaseException], None],
) -> tuple[int, int, list[Any] | None]: ...
