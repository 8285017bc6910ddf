"""The services behind the gateway in the gateway tests (run as a script, never imported).

usage: gateway_worker.py URL

ai-service (ai_tasks):      speech_recognition echoes {"echo": payload}
                            emotion_detection sleeps payload["sleep"] s, then echoes
                            synthesis_detection raises
media-service (media_tasks): media_processing echoes
Prints "ready" once started; stops gracefully on SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import Any

import uvloop

from meetq import ServiceWorker, TaskRequest, TaskType


async def main(url: str) -> None:
    ai = ServiceWorker(url, "ai-service", workers=64, retry_backoff=0.01)
    media = ServiceWorker(url, "media-service", workers=16)

    def echo(req: TaskRequest) -> dict[str, Any]:
        return {"echo": req.payload, "user_id": req.user_id, "meeting_id": req.meeting_id}

    async def slow(req: TaskRequest) -> dict[str, Any]:
        await asyncio.sleep(float(req.payload.get("sleep", 0.1)))
        return {"echo": req.payload}

    def boom(req: TaskRequest) -> None:
        raise RuntimeError("model exploded")

    ai.register_handler(TaskType.SPEECH_RECOGNITION, echo)
    ai.register_handler(TaskType.EMOTION_DETECTION, slow)
    ai.register_handler(TaskType.SYNTHESIS_DETECTION, boom)
    media.register_handler(TaskType.MEDIA_PROCESSING, echo)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with ai, media:
        print("ready", flush=True)
        await stop.wait()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    uvloop.run(main(sys.argv[1]))
