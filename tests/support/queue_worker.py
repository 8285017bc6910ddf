"""A RedisMessageQueue worker process for the fault tests (run as a script, never imported).

usage: queue_worker.py URL QUEUE DONE_KEY VISIBILITY_TIMEOUT

Handlers: "ok" RPUSHes the message id to DONE_KEY (after `payload["sleep"]` seconds),
"boom" raises, "hang" waits past its timeout. Prints "ready" once started; stops
gracefully on SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

import redis.asyncio
import uvloop

from meetq import Message, RedisMessageQueue


async def main(url: str, queue: str, done_key: str, visibility: float) -> None:
    r = redis.asyncio.Redis.from_url(url)
    q = RedisMessageQueue(url, queue, workers=8, visibility_timeout=visibility, retry_backoff=0.01)

    async def ok(msg: Message) -> None:
        delay = float(msg.payload.get("sleep", 0))
        if delay:
            await asyncio.sleep(delay)
        await r.rpush(done_key, msg.id)

    async def boom(msg: Message) -> None:
        raise RuntimeError("handler exploded")

    async def hang(msg: Message) -> None:
        await asyncio.Event().wait()  # never set: runs until its timeout cancels it

    q.register_handler("ok", ok)
    q.register_handler("boom", boom)
    q.register_handler("hang", hang)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with q:
        print("ready", flush=True)
        await stop.wait()
    await r.aclose()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    uvloop.run(main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])))
