"""meetq.ai: AI inference nodes over ZMQ with the Edge-LLM-Infra StackFlow protocol.

`StackFlowClient` plays the unit-manager's role towards nodes (C++ or ours),
`StackFlowNode` is the reference node, `AIService` runs AI tasks of the `ai_tasks`
queue on them. Needs the `meetq[ai]` extra (pyzmq); the real models need `meetq[ai-models]`.
"""

from __future__ import annotations

import importlib
from typing import Any

from meetq.ai.client import StackFlowClient
from meetq.ai.errors import (
    ClientClosedError,
    InferenceDataEmptyError,
    InferencePushError,
    JsonFormatError,
    ModelLoadError,
    NodeUnavailableError,
    NoSuchActionError,
    ProtocolError,
    SocketInUseError,
    StackFlowError,
    StackFlowTimeoutError,
    StreamIndexError,
    TaskFullError,
    TaskRunError,
    UnitCallError,
    UnitNotFoundError,
)
from meetq.ai.models import ModelSpec
from meetq.ai.node import StackFlowNode, run_node_from_args


def __getattr__(name: str) -> Any:
    # AIService needs the dispatch layer; loaded on first use.
    if name == "AIService":
        return importlib.import_module("meetq.ai.service").AIService
    raise AttributeError(f"module 'meetq.ai' has no attribute {name!r}")


__all__ = [
    "AIService",
    "ClientClosedError",
    "InferenceDataEmptyError",
    "InferencePushError",
    "JsonFormatError",
    "ModelLoadError",
    "ModelSpec",
    "NoSuchActionError",
    "NodeUnavailableError",
    "ProtocolError",
    "SocketInUseError",
    "StackFlowClient",
    "StackFlowError",
    "StackFlowNode",
    "StackFlowTimeoutError",
    "StreamIndexError",
    "TaskFullError",
    "TaskRunError",
    "UnitCallError",
    "UnitNotFoundError",
    "run_node_from_args",
]
