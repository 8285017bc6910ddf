"""Stand-in models for load tests: honest about doing no inference at all."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

from meetq.ai.models.base import ModelFn, ModelSpec, fixed


def echo(text: str) -> str:
    """Returns its input: the cheapest possible model, for protocol and overhead tests."""
    return text


ECHO = fixed(echo)


def split(text: str, chunks: int) -> list[str]:
    """`text` cut into `chunks` nearly equal pieces (fewer when it is shorter)."""
    if chunks <= 1:
        return [text]
    chunks = min(chunks, len(text) or 1)
    size, rest = divmod(len(text), chunks)
    out, start = [], 0
    for i in range(chunks):
        end = start + size + (1 if i < rest else 0)
        out.append(text[start:end])
        start = end
    return out


def latency_model(latency_ms: float, chunks: int = 1) -> ModelFn:
    """Echoes its input as `chunks` deltas spread over `latency_ms` (simulated inference
    time, spent in `asyncio.sleep`, so many requests overlap like on a real accelerator)."""
    pause = max(0.0, latency_ms) / 1000.0 / max(1, chunks)

    async def run(text: str) -> AsyncIterator[str]:
        for piece in split(text, chunks):
            await asyncio.sleep(pause)
            yield piece

    return run


def latency_spec(latency_ms: float = 5.0, chunks: int = 1) -> ModelSpec:
    """Setup data may override `latency_ms` and `chunks` per work_id."""

    def load(data: Mapping[str, Any]) -> ModelFn:
        return latency_model(
            float(data.get("latency_ms", latency_ms)), int(data.get("chunks", chunks))
        )

    return ModelSpec(load=load, description=f"latency {latency_ms} ms, {chunks} chunks")
