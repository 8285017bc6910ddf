"""Spoken test audio: espeak-ng speaks a phrase, resampled to the ASR model's 16 kHz PCM.

Used by the demo (its voice commands) and by the tests of the ASR path; espeak-ng is a
Debian package (the Makefile's APT_PACKAGES), not a Python one, so `ESPEAK` is None
where it is missing and `speak` raises `SpeechSynthesisError` with the fix.
"""

from __future__ import annotations

import array
import base64
import io
import shutil
import subprocess
import wave

from meetq.errors import MeetqError

ESPEAK = shutil.which("espeak-ng")
SAMPLE_RATE = 16_000


class SpeechSynthesisError(MeetqError):
    """espeak-ng is missing or could not speak the phrase."""


def speak(text: str, voice: str = "en-us") -> bytes:
    """16 kHz mono signed 16-bit PCM of `text` spoken by espeak-ng."""
    if ESPEAK is None:
        raise SpeechSynthesisError("espeak-ng is not installed (Debian: apt-get install espeak-ng)")
    try:
        wav = subprocess.run(
            [ESPEAK, "-v", voice, "--stdout", text], capture_output=True, check=True, timeout=60
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise SpeechSynthesisError(f"espeak-ng failed on {text!r}: {exc}") from exc
    try:
        with wave.open(io.BytesIO(wav)) as w:
            if w.getnchannels() != 1 or w.getsampwidth() != 2:
                raise SpeechSynthesisError("espeak-ng did not produce 16-bit mono audio")
            rate = w.getframerate()
            samples = array.array("h", w.readframes(w.getnframes()))
    except (wave.Error, EOFError) as exc:
        raise SpeechSynthesisError(f"espeak-ng output is not a WAV file: {exc}") from exc
    return resample(samples, rate, SAMPLE_RATE).tobytes()


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
