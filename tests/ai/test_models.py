"""Real models through the client: PocketSphinx on espeak-ng speech, VADER on text; and
the latency stand-in."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import orjson
import pytest

from meetq.ai import ModelLoadError, StackFlowClient, StackFlowNode
from meetq.ai.models import builtin
from meetq.ai.models.asr import COMMANDS, decode_pcm, grammar
from meetq.ai.models.standins import split
from meetq.ai.speech import ESPEAK, b64_chunks, speak

pytest.importorskip("pocketsphinx")
pytest.importorskip("vaderSentiment")
needs_espeak = pytest.mark.skipif(ESPEAK is None, reason="espeak-ng not installed")

PHRASES = ("start recording", "mute microphone", "share screen", "raise hand", "stop video")


@needs_espeak
async def test_asr_recognises_spoken_meeting_commands(base_dir: Path) -> None:
    async with (
        StackFlowClient(base_dir, call_timeout=60, setup_timeout=60) as client,
        StackFlowNode("asr", builtin("asr"), base_dir),
    ):
        work_id = await client.setup("asr", "pocketsphinx-en-us")
        heard = await asyncio.gather(
            *(client.infer(work_id, b64_chunks(speak(phrase))) for phrase in PHRASES)
        )
        assert list(heard) == list(PHRASES)


@needs_espeak
async def test_asr_with_the_tasks_own_keywords(base_dir: Path) -> None:
    async with (
        StackFlowClient(base_dir, call_timeout=60, setup_timeout=60) as client,
        StackFlowNode("asr", builtin("asr"), base_dir),
    ):
        work_id = await client.setup("asr", "ps", keywords=["next slide", "previous slide"])
        assert await client.infer(work_id, b64_chunks(speak("next slide"))) == "next slide"
        with pytest.raises(ModelLoadError):
            await client.setup("asr", "ps", keywords=["unmutez"])  # not in the dictionary


def test_asr_input_decoding_and_grammar() -> None:
    pcm = bytes(range(256)) * 7
    joined = "".join(b64_chunks(pcm, size=100))  # each chunk padded on its own
    assert "=" in joined
    assert decode_pcm(joined) == pcm
    assert decode_pcm(base64.b64encode(pcm).decode()) == pcm
    assert grammar(["Start  Recording"]).endswith("public <command> = start recording;\n")
    assert len(COMMANDS) >= 10
    with pytest.raises(ModelLoadError):
        grammar(["drop table; --"])


async def test_sentiment_labels_and_scores(base_dir: Path) -> None:
    async with (
        StackFlowClient(base_dir, call_timeout=30) as client,
        StackFlowNode("llm", builtin("sentiment"), base_dir),
    ):
        work_id = await client.setup("llm", "vader", response_format="llm.utf-8", input="llm.utf-8")
        good, bad, flat = await asyncio.gather(
            client.infer(work_id, "This meeting is great, thank you all!"),
            client.infer(work_id, "The audio is terrible and I hate this lag."),
            client.infer(work_id, "The meeting starts at ten."),
        )
        assert orjson.loads(good)["label"] == "positive"
        assert orjson.loads(bad)["label"] == "negative"
        neutral = orjson.loads(flat)
        assert neutral["label"] == "neutral"
        assert set(neutral["scores"]) == {"neg", "neu", "pos", "compound"}


async def test_latency_standin_streams_its_chunks(base_dir: Path) -> None:
    async with (
        StackFlowClient(base_dir, call_timeout=30) as client,
        StackFlowNode("llm", builtin("latency", latency_ms=5, chunks=3), base_dir),
    ):
        work_id = await client.setup("llm", "latency")
        assert [d async for d in client.stream(work_id, "abcdefgh")] == ["abc", "def", "gh"]
        other = await client.setup("llm", "latency", chunks=2, latency_ms=1)
        assert [d async for d in client.stream(other, "abcd")] == ["ab", "cd"]
    assert split("", 3) == [""]
    assert split("ab", 5) == ["a", "b"]
