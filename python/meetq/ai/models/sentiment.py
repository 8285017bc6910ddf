"""emotion_detection with VADER (vaderSentiment ships its lexicon; nothing is downloaded).

VADER is a rule-based sentiment model for short social text: it scores the valence of a
transcript or chat line, it does not detect emotions beyond positive/negative/neutral.
The label uses VADER's recommended thresholds on the compound score (±0.05).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from meetq.ai.models.base import ModelFn, ModelSpec

THRESHOLD = 0.05


def label(compound: float) -> str:
    if compound >= THRESHOLD:
        return "positive"
    if compound <= -THRESHOLD:
        return "negative"
    return "neutral"


def load(_data: Mapping[str, Any]) -> ModelFn:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()

    def run(text: str) -> str:
        scores = analyzer.polarity_scores(text)
        return orjson.dumps({"label": label(scores["compound"]), "scores": scores}).decode()

    return run


SENTIMENT = ModelSpec(load=load, blocking=True, description="VADER sentiment (en)")
