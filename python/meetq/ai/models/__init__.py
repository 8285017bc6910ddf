"""Models a StackFlowNode can serve: stand-ins (echo, latency) and real ones (asr,
sentiment), the real ones imported only when asked for (extra `meetq[ai-models]`)."""

from __future__ import annotations

from meetq.ai.models.base import ModelFn, ModelOutput, ModelSpec, fixed
from meetq.ai.models.standins import ECHO, echo, latency_spec

BUILTIN = ("echo", "latency", "asr", "sentiment")


def builtin(name: str, *, latency_ms: float = 5.0, chunks: int = 1) -> ModelSpec:
    """The built-in model called `name`."""
    if name == "echo":
        return ECHO
    if name == "latency":
        return latency_spec(latency_ms, chunks)
    if name == "asr":
        from meetq.ai.models.asr import ASR

        return ASR
    if name == "sentiment":
        from meetq.ai.models.sentiment import SENTIMENT

        return SENTIMENT
    raise ValueError(f"unknown model {name!r}; built-in: {', '.join(BUILTIN)}")


__all__ = ["BUILTIN", "ECHO", "ModelFn", "ModelOutput", "ModelSpec", "builtin", "echo", "fixed"]
