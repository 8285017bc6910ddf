"""speech_recognition with PocketSphinx (the `pocketsphinx` package ships its en-US model).

Input: 16 kHz mono signed 16-bit little-endian PCM, base64-encoded, sent as the chunks of
a stream input (each chunk may be encoded on its own, padding included). Output: the
recognised text.

PocketSphinx's general en-US language model is weak on short commands; a meeting voice
command is one of a few phrases, so by default the decoder searches a JSGF grammar of
meeting commands (`COMMANDS`), which makes it fast (tens of ms) and accurate for them.
Under a grammar the answer is one whole phrase, or "" when none was recognised.
A setup may pass its own `keywords` (a list of phrases, every word in the shipped
dictionary) or `keywords: null` for free dictation with the shipped language model.
"""

from __future__ import annotations

import base64
import binascii
import re
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from meetq.ai.errors import ModelLoadError, StackFlowError
from meetq.ai.models.base import ModelFn, ModelSpec

SAMPLE_RATE = 16_000

COMMANDS = (
    "start recording",
    "stop recording",
    "mute microphone",
    "turn on microphone",
    "start video",
    "stop video",
    "share screen",
    "stop sharing",
    "raise hand",
    "lower hand",
    "end meeting",
    "leave meeting",
)

_PHRASE = re.compile(r"^[a-z' ]+$")
_PADDED = re.compile(r"[^=]*=*")


def grammar(phrases: Sequence[str]) -> str:
    """A JSGF grammar accepting exactly one of `phrases`."""
    clean = []
    for phrase in phrases:
        words = " ".join(str(phrase).lower().split())
        if not words or not _PHRASE.match(words):
            raise ModelLoadError(f"keyword phrase {phrase!r}: only letters, spaces and '")
        clean.append(words)
    if not clean:
        raise ModelLoadError("empty keyword list")
    return "#JSGF V1.0;\ngrammar commands;\npublic <command> = " + " | ".join(clean) + ";\n"


def decode_pcm(text: str) -> bytes:
    """The PCM bytes of joined base64 chunks (each chunk padded on its own or not)."""
    try:
        return b"".join(
            base64.b64decode(piece, validate=True) for piece in _PADDED.findall(text) if piece
        )
    except (binascii.Error, ValueError):
        raise StackFlowError("audio is not valid base64", -2) from None


def load(data: Mapping[str, Any]) -> ModelFn:
    from pocketsphinx import Decoder

    keywords = data.get("keywords", COMMANDS)
    phrases: set[str] | None = None
    try:
        decoder = Decoder(samprate=SAMPLE_RATE, loglevel="FATAL")
        if keywords is not None:
            if isinstance(keywords, str) or not isinstance(keywords, Sequence):
                raise ModelLoadError("keywords must be a list of phrases")
            jsgf = grammar(keywords)
            phrases = {" ".join(str(k).lower().split()) for k in keywords}
            decoder.add_jsgf_string("commands", jsgf)
            decoder.activate_search("commands")
    except (RuntimeError, ValueError) as exc:
        raise ModelLoadError(f"pocketsphinx: {exc} (is every word in the dictionary?)") from exc
    lock = threading.Lock()  # one decoder per work_id; it is not re-entrant

    def run(text: str) -> str:
        pcm = decode_pcm(text)
        if len(pcm) % 2:
            pcm = pcm[:-1]
        with lock:
            decoder.start_utt()
            decoder.process_raw(pcm, full_utt=True)
            decoder.end_utt()
            hyp = decoder.hyp()
        text = hyp.hypstr if hyp is not None else ""
        # A grammar search can end on a partial path; only a whole phrase is an answer.
        return text if phrases is None or text in phrases else ""

    return run


ASR = ModelSpec(load=load, blocking=True, description="PocketSphinx en-US, 16 kHz PCM")
