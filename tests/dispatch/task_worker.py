"""A ServiceWorker process for the dispatch tests (run as a script, never imported).

usage: task_worker.py URL QUEUE LOG_KEY

Handlers for the task types of the tests' route:
  echo    returns {"echo": payload}
  boom    raises RuntimeError("handler exploded")
  slow    sleeps payload["sleep"] seconds, then returns {"slept": ...}
  hang    waits forever; RPUSHes "started:<id>" to LOG_KEY first, "cancelled:<id>" when
          cancelled
  record  RPUSHes "ran:<id>" to LOG_KEY and returns {}
Prints "ready" once started; stops gracefully on SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import Any

import redis.asyncio
import uvloop

from meetq import ServiceWorker, TaskRequest


async def main(url: str, queue: str, log_key: str) -> None:
    r = redis.asyncio.Redis.from_url(url)
    w = ServiceWorker(
        url,
        "test-service",
        queue_name=queue,
        workers=64,
        retry_backoff=0.01,
        cancel_check_interval=0.5,
    )

    def echo(req: TaskRequest) -> dict[str, Any]:
        return {"echo": req.payload, "user_id": req.user_id}

    def boom(req: TaskRequest) -> None:
        raise RuntimeError("handler exploded")

    async def slow(req: TaskRequest) -> dict[str, Any]:
        await asyncio.sleep(float(req.payload.get("sleep", 0.1)))
        return {"slept": req.payload.get("sleep")}

    async def hang(req: TaskRequest) -> None:
        await r.rpush(log_key, f"started:{req.id}")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await r.rpush(log_key, f"cancelled:{req.id}")
            raise

    async def record(req: TaskRequest) -> dict[str, Any]:
        await r.rpush(log_key, f"ran:{req.id}")
        return {}

    w.register_handler("echo", echo)
    w.register_handler("boom", boom)
    w.register_handler("slow", slow)
    w.register_handler("hang", hang)
    w.register_handler("record", record)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with w:
        print("ready", flush=True)
        await stop.wait()
    await r.aclose()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    uvloop.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
