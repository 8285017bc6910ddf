"""Type stub of `native/stage.pyx`; pure twin (and documentation) in `_stage.py`."""

from collections.abc import Callable, Iterator
from typing import Any

from meetq.queue.message import Message

def stage(
    msgs: Iterator[Message],
    ids: list[str],
    chunks: list[list[Any]],
    now: float,
    dumps: Callable[[Any], bytes],
    max_size: int,
    id_prefix: str,
    id_count: Iterator[int],
    full: int,
) -> int: ...
