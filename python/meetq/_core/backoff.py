"""Exponential backoff with jitter: one rule for reconnects, retries and restarts."""

from __future__ import annotations

import random


def backoff(attempt: int, base: float = 0.05, cap: float = 2.0) -> float:
    """Seconds to wait before try `attempt` (0-based): `base` doubling up to `cap`, with
    jitter over the upper half so a crowd of clients does not reconnect in step."""
    return random.uniform(0.5, 1.0) * min(cap, base * 2.0 ** min(attempt, 30))
