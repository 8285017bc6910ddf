"""Speech for the ASR tests: espeak-ng speaks a phrase; we resample it to 16 kHz mono PCM."""

from __future__ import annotations

import array
import base64
import io
import shutil
import subprocess
import wave

ESPEAK = shutil.which("espeak-ng")


def speak(text: str) -> bytes:
    """16 kHz mono signed 16-bit PCM of `text` spoken by espeak-ng (en-US voice)."""
    assert ESPEAK is not None, "espeak-ng is not installed (Makefile APT_PACKAGES)"
    wav = subprocess.run(
        [ESPEAK, "-v", "en-us", "--stdout", text], capture_output=True, check=True, timeout=60
    ).stdout
    with wave.open(io.BytesIO(wav)) as w:
        assert w.getnchannels() == 1 and w.getsampwidth() == 2
        rate = w.getframerate()
        samples = array.array("h", w.readframes(w.getnframes()))
    return resample(samples, rate, 16_000).tobytes()


def resample(samples: array.array[int], src: int, dst: int) -> array.array[int]:
    """Linear interpolation; good enough for a recogniser fed synthetic speech."""
    n = len(samples) * dst // src
    out = array.array("h", bytes(2 * n))
    last = len(samples) - 1
    for i in range(n):
        x = i * src / dst
        j = int(x)
        a = samples[j]
        b = samples[j + 1] if j < last else a
        out[i] = int(a + (b - a) * (x - j))
    return out


def b64_chunks(pcm: bytes, size: int = 8000) -> list[str]:
    """The stream input of an ASR request: base64 chunks, each encoded on its own."""
    return [base64.b64encode(pcm[i : i + size]).decode() for i in range(0, len(pcm), size)]
