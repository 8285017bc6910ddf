"""What a node runs: a model function, how it is loaded per work_id, and where it runs.

A model function takes the request's input text (a stream input's chunks joined) and
returns the output as a `str`, an iterable or async iterable of `str` chunks, or an
awaitable of one of those. `ModelSpec.load` builds one such function per work_id from the
setup's `data` (so a setup can carry options, e.g. an ASR grammar); `blocking=True` runs
load and every call in the node's thread pool, keeping CPU-bound models off the loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

ModelOutput: TypeAlias = str | Iterable[str] | AsyncIterable[str] | Awaitable[Any]
ModelFn: TypeAlias = Callable[[str], ModelOutput]


@dataclass(frozen=True)
class ModelSpec:
    """A loadable model: `load(setup_data) -> ModelFn`; `blocking` = run in a thread."""

    load: Callable[[Mapping[str, Any]], ModelFn]
    blocking: bool = False
    description: str = ""


def fixed(fn: ModelFn, *, blocking: bool = False) -> ModelSpec:
    """A spec for a plain function that needs no per-setup loading."""
    return ModelSpec(load=lambda _data: fn, blocking=blocking)
