"""The demo's AI path: real StackFlow nodes in processes of their own, and the AIService.

Three `meetq ai-node` processes serve one private socket directory: PocketSphinx speech
recognition (unit `asr`), VADER sentiment (unit `sentiment`) and the configurable-latency
stand-in (unit `llm`, which `ai.audio_denoising` tasks run on: there is no denoising
model, the stand-in only costs the time one would). The AIService consumes `ai_tasks`
and runs each task on them through a StackFlowClient.

Voice commands are spoken by espeak-ng once at start and sent as real 16 kHz PCM. Without
espeak-ng (Debian package `espeak-ng`) the demo says so and sends no spoken commands; the
corrupt-audio task still goes (it needs no speech). Without the models (extra
`meetq[ai-models]`) it runs no AI tasks at all and says so: it never fakes an answer.

Nodes are started before the event loop and stopped after it (SIGTERM, then kill), from
a plain context manager, so Ctrl-C or SIGTERM at any point leaves no process and no
socket directory behind.
"""

from __future__ import annotations

import importlib.util
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meetq.errors import MeetqError
from meetq.ops.common import die_with_parent

if TYPE_CHECKING:
    from meetq.ai import AIService

VOICE_COMMANDS = ("start recording", "mute microphone", "share screen", "raise hand", "stop video")
CHAT_LINES = (
    "This meeting is great, thank you all!",
    "The audio is terrible and I hate this lag.",
    "The meeting starts at ten.",
)
CORRUPT_AUDIO = ["@@ this is not base64 PCM @@"]
# (unit, model name for the node process, model name the AIService sets up)
NODES = (("asr", "asr", "pocketsphinx-en-us"), ("sentiment", "sentiment", "vader"))
STANDIN = ("llm", "latency", "latency-standin")
STANDIN_LATENCY_MS = 20.0
ROUTES = {
    "speech_recognition": ("asr", "pocketsphinx-en-us"),
    "emotion_detection": ("sentiment", "vader"),
    "audio_denoising": ("llm", "latency-standin"),
}
START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0


class AiNodeStartError(MeetqError):
    """A demo AI node process did not come up."""


def ai_missing() -> str | None:
    """Why the real AI path cannot run here, or None."""
    for module, extra in (
        ("zmq", "ai"),
        ("pocketsphinx", "ai-models"),
        ("vaderSentiment", "ai-models"),
    ):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install 'meetq[{extra}]'): no AI tasks run"
    return None


@dataclass
class DemoAI:
    """What the demo's load needs of the AI path: the socket directory and the speech."""

    base_dir: Path
    voice: dict[str, list[str]] = field(default_factory=dict)
    """phrase -> its audio as base64 stream chunks (empty without espeak-ng)"""
    notes: list[str] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)

    def service(self, url: str, on_event: Callable[[str, dict[str, Any]], None]) -> AIService:
        from meetq.ai import AIService, StackFlowClient

        client = StackFlowClient(self.base_dir, call_timeout=60, setup_timeout=60)
        return AIService(url, client, ROUTES, workers=32, on_event=on_event, timing=True)


def render_voice_commands(
    phrases: tuple[str, ...] = VOICE_COMMANDS,
) -> tuple[dict[str, list[str]], str | None]:
    """Each phrase spoken once by espeak-ng (16 kHz PCM, base64 chunks), or a note why not."""
    from meetq.ai.speech import ESPEAK, SpeechSynthesisError, b64_chunks, speak

    if ESPEAK is None:
        return {}, (
            "espeak-ng not found (Debian: apt-get install espeak-ng): no spoken voice "
            "commands sent; the corrupt-audio task still is"
        )
    try:
        return {p: b64_chunks(speak(p)) for p in phrases}, None
    except SpeechSynthesisError as exc:
        return {}, f"{exc}: no spoken voice commands sent"


class AiNodes:
    """The node processes under a private socket directory (a sync context manager)."""

    def __init__(self, start_timeout: float = START_TIMEOUT) -> None:
        self.start_timeout = start_timeout
        self.procs: list[subprocess.Popen[bytes]] = []
        self.base_dir: Path | None = None

    def __enter__(self) -> Path:
        # Short, private: ipc:// paths must fit in sun_path (108 bytes).
        self.base_dir = Path(tempfile.mkdtemp(prefix="meetq-ai-", dir="/tmp"))
        try:
            for unit, model, _ in (*NODES, STANDIN):
                argv = [sys.executable, "-m", "meetq", "ai-node", "--unit", unit]
                argv += ["--model", model, "--base-dir", str(self.base_dir)]
                argv += ["--latency-ms", str(STANDIN_LATENCY_MS), "--log-level", "WARNING"]
                self.procs.append(
                    subprocess.Popen(
                        argv,
                        stdout=subprocess.PIPE,
                        stdin=subprocess.DEVNULL,
                        start_new_session=True,  # a Ctrl-C reaches us; we stop them in order
                        preexec_fn=die_with_parent,
                    )
                )
            deadline = time.monotonic() + self.start_timeout
            for proc in self.procs:
                self._wait_ready(proc, deadline)
        except BaseException:
            self.__exit__()
            raise
        return self.base_dir

    def _wait_ready(self, proc: subprocess.Popen[bytes], deadline: float) -> None:
        assert proc.stdout is not None
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AiNodeStartError(
                    f"AI node {proc.args!r} not ready in {self.start_timeout:g}s"
                )
            ready, _, _ = select.select([proc.stdout], [], [], min(left, 0.5))
            if ready:
                chunk = os.read(proc.stdout.fileno(), 256)
                if not chunk:
                    raise AiNodeStartError(
                        f"AI node exited at start (status {proc.wait()}): {proc.args!r}"
                    )
                line += chunk
        if not line.startswith(b"ready "):
            raise AiNodeStartError(f"AI node said {line!r} instead of ready")

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        self.procs.clear()
        if self.base_dir is not None:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            self.base_dir = None
