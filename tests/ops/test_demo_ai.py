"""The demo's AI rows come from the real models: espeak-ng speech recognised by
PocketSphinx on an AI node process, chat lines scored by VADER, corrupt audio refused with
its reason; and the node processes and their socket directory are gone afterwards."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("zmq")
pytest.importorskip("pocketsphinx")
pytest.importorskip("vaderSentiment")
pytest.importorskip("picows")

from meetq.ai.speech import ESPEAK
from meetq.ops.demo_ai import CHAT_LINES, VOICE_COMMANDS

TABLE_ROW = re.compile(r"^│\s*(.+?)\s*│\s*(.*?)\s*│\s*(\S+)\s*│$")


def _rows(out: str, title: str) -> list[tuple[str, str, str]]:
    """The body rows of the rich table titled `title` (stdout is COLUMNS wide)."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    rows = []
    for line in lines[start + 1 :]:
        if line.startswith("└"):
            break
        m = TABLE_ROW.match(line)
        if m and "─" not in line:
            rows.append((m.group(1), m.group(2), m.group(3)))
    return rows


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


@pytest.mark.skipif(ESPEAK is None, reason="espeak-ng not installed (Makefile APT_PACKAGES)")
def test_demo_recognises_voice_commands_and_scores_chat_with_vader() -> None:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env["COLUMNS"] = "200"  # no wrapped rows
    argv = [sys.executable, "-m", "meetq", "demo", "--duration", "3", "--rate", "40"]
    proc = subprocess.Popen(
        [*argv, "--clients", "4", "--seed", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err + out
    ai_dir = re.search(r"AI nodes \(.*\) under (\S+)", err)
    assert ai_dir, err
    assert not Path(ai_dir.group(1)).exists()  # the nodes' socket directory is removed

    voice = _rows(out, "voice commands")
    assert voice, out
    for said, _heard, times in voice:
        assert said in VOICE_COMMANDS
        assert int(times) >= 1
    # PocketSphinx heard at least one spoken command right (its keyword in the text).
    assert any(said.split()[-1] in heard for said, heard, _ in voice), voice

    mood = {text: (label, float(score)) for text, label, score in _rows(out, "chat sentiment")}
    assert mood, out
    assert set(mood) <= set(CHAT_LINES)
    positive, negative, neutral = CHAT_LINES
    assert mood[positive][0] == "positive" and mood[positive][1] > 0.5  # every line is sent
    assert mood[negative][0] == "negative" and mood[negative][1] < -0.5
    assert mood[neutral] == ("neutral", 0.0)
    # The ASR round trip is measured inside the demo; corrupt audio fails with its reason.
    assert re.search(r"AI node p50 / p99: ai\.speech_recognition\s*│\s*[\d.]+ / [\d.]+ ms", out)
    assert "audio is not valid base64" in out
