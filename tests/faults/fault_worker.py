"""A RedisMessageQueue worker process for the reliability and fault-matrix tests (run as a
script, never imported by pytest).

usage: fault_worker.py URL QUEUE LOG_URL LOG_KEY CONFIG_JSON

CONFIG_JSON holds the queue's keyword arguments (workers, visibility_timeout, prefetch,
retry_backoff, ...). The run log is written over LOG_URL (a path the test does not fault,
so a cut or silenced queue connection never loses a log line). Every handler RPUSHes
"S <id> <pid> <unix time>" to LOG_KEY when a run starts and "D ..." just before it returns
successfully, so a test reads one ordered log of every run in every process ("a run started
after a success" is a re-run of finished work).

Handler types (the payload tunes them):
  ok            async; sleeps payload["sleep"] seconds first (default 0)
  sync_ok       plain def; blocks in time.sleep(payload["sleep"]) (a wedged sync handler;
                only on its first delivery when payload["first_only"])
  thread_ok     plain def run with in_thread=True; time.sleep(payload["sleep"])
  raise         async; raises RuntimeError("handler exploded")
  unprintable   async; raises an exception whose __str__ and __repr__ raise
  sync_unprintable  the same from a plain def
  hang          async; awaits forever
  unencodable   async; returns a value JSON cannot encode
  base_exc      plain def; raises a BaseException subclass

With `"service": "<name>"` in CONFIG_JSON the process is a `ServiceWorker` of that
service on QUEUE instead (the other keys go to its queue), with one handler, "job": it
logs like "ok" (the task id) and sleeps payload["sleep"] seconds.

Prints "ready <pid>" once started; stops gracefully on SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from typing import Any

import orjson
import redis
import redis.asyncio
import uvloop
from redis.exceptions import ReadOnlyError

from meetq import Message, RedisMessageQueue, ServiceWorker, TaskRequest

PID = os.getpid()
# READONLY (a failover demoted the log's server) reconnects and retries: the log URL may
# lead to the new primary now, and a lost log line would read as a lost run.
LOG_CLIENT: dict[str, Any] = {"socket_timeout": 30, "retry_on_error": [ReadOnlyError]}


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str for you")

    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")


class Outlandish(BaseException):
    """Neither an Exception nor a cancellation: a handler may still raise it."""


async def service(url: str, queue: str, log_url: str, log_key: str, config: dict[str, Any]) -> None:
    """A ServiceWorker process (see the module docstring)."""
    r = redis.asyncio.Redis.from_url(log_url, **LOG_CLIENT)
    name = config.pop("service")
    worker = ServiceWorker(url, name, queue_name=queue, **config)

    async def job(req: TaskRequest) -> dict[str, Any]:
        await r.rpush(log_key, f"S {req.id} {PID} {time.time():.3f}")
        await asyncio.sleep(float(req.payload.get("sleep", 0)))
        await r.rpush(log_key, f"D {req.id} {PID} {time.time():.3f}")
        return {"done": req.id}

    worker.register_handler("job", job)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        async with worker:
            print(f"ready {PID}", flush=True)
            await stop.wait()
    finally:
        await r.aclose()


async def main(url: str, queue: str, log_url: str, log_key: str, config: dict[str, Any]) -> None:
    if "service" in config:
        await service(url, queue, log_url, log_key, config)
        return
    r = redis.asyncio.Redis.from_url(log_url, **LOG_CLIENT)
    sync = redis.Redis.from_url(log_url, **LOG_CLIENT)
    q = RedisMessageQueue(url, queue, **config)

    async def log_async(kind: str, msg: Message) -> None:
        await r.rpush(log_key, f"{kind} {msg.id} {PID} {time.time():.3f}")

    def log_sync(kind: str, msg: Message) -> None:
        sync.rpush(log_key, f"{kind} {msg.id} {PID} {time.time():.3f}")

    async def ok(msg: Message) -> None:
        await log_async("S", msg)
        pause = float(msg.payload.get("sleep", 0))
        if pause:
            await asyncio.sleep(pause)
        await log_async("D", msg)

    def sync_ok(msg: Message) -> None:
        log_sync("S", msg)
        if msg.deliveries == 1 or not msg.payload.get("first_only"):
            time.sleep(float(msg.payload.get("sleep", 0)))
        log_sync("D", msg)

    async def raising(msg: Message) -> None:
        await log_async("S", msg)
        raise RuntimeError("handler exploded")

    async def unprintable(msg: Message) -> None:
        await log_async("S", msg)
        raise Unprintable()

    def sync_unprintable(msg: Message) -> None:
        log_sync("S", msg)
        raise Unprintable()

    async def hang(msg: Message) -> None:
        await log_async("S", msg)
        await asyncio.Event().wait()

    async def unencodable(msg: Message) -> dict[str, Any]:
        await log_async("S", msg)
        return {"value": object()}

    def base_exc(msg: Message) -> None:
        log_sync("S", msg)
        raise Outlandish("not an Exception")

    q.register_handler("ok", ok)
    q.register_handler("sync_ok", sync_ok)
    q.register_handler("thread_ok", sync_ok, in_thread=True)
    q.register_handler("raise", raising)
    q.register_handler("unprintable", unprintable)
    q.register_handler("sync_unprintable", sync_unprintable)
    q.register_handler("hang", hang)
    q.register_handler("unencodable", unencodable)
    q.register_handler("base_exc", base_exc)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        async with q:
            print(f"ready {PID}", flush=True)
            await stop.wait()
    finally:
        await r.aclose()
        sync.close()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    url, queue, log_url, log_key, config = sys.argv[1:6]
    uvloop.run(main(url, queue, log_url, log_key, orjson.loads(config)))
