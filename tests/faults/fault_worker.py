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


class RunLogWriter:
    """Writes the run log (module docstring) from async and from plain-def handlers."""

    def __init__(self, url: str, key: str) -> None:
        self.key = key
        self.r = redis.asyncio.Redis.from_url(url, **LOG_CLIENT)
        self.sync = redis.Redis.from_url(url, **LOG_CLIENT)

    def _line(self, kind: str, run_id: str) -> str:
        return f"{kind} {run_id} {PID} {time.time():.3f}"

    async def write(self, kind: str, run_id: str) -> None:
        await self.r.rpush(self.key, self._line(kind, run_id))

    def write_sync(self, kind: str, run_id: str) -> None:
        self.sync.rpush(self.key, self._line(kind, run_id))

    async def close(self) -> None:
        await self.r.aclose()
        self.sync.close()


def service_worker(url: str, queue: str, log: RunLogWriter, config: dict[str, Any]) -> Any:
    """A ServiceWorker with one handler, "job" (the module docstring)."""
    name = config.pop("service")
    worker = ServiceWorker(url, name, queue_name=queue, **config)

    async def job(req: TaskRequest) -> dict[str, Any]:
        await log.write("S", req.id)
        await asyncio.sleep(float(req.payload.get("sleep", 0)))
        await log.write("D", req.id)
        return {"done": req.id}

    worker.register_handler("job", job)
    return worker


def message_queue(url: str, queue: str, log: RunLogWriter, config: dict[str, Any]) -> Any:
    """A RedisMessageQueue with every handler type of the module docstring."""
    q = RedisMessageQueue(url, queue, **config)

    async def ok(msg: Message) -> None:
        await log.write("S", msg.id)
        await asyncio.sleep(float(msg.payload.get("sleep", 0)))
        await log.write("D", msg.id)

    def sync_ok(msg: Message) -> None:
        log.write_sync("S", msg.id)
        if msg.deliveries == 1 or not msg.payload.get("first_only"):
            time.sleep(float(msg.payload.get("sleep", 0)))
        log.write_sync("D", msg.id)

    async def raising(msg: Message) -> None:
        await log.write("S", msg.id)
        raise RuntimeError("handler exploded")

    async def unprintable(msg: Message) -> None:
        await log.write("S", msg.id)
        raise Unprintable()

    def sync_unprintable(msg: Message) -> None:
        log.write_sync("S", msg.id)
        raise Unprintable()

    async def hang(msg: Message) -> None:
        await log.write("S", msg.id)
        await asyncio.Event().wait()

    async def unencodable(msg: Message) -> dict[str, Any]:
        await log.write("S", msg.id)
        return {"value": object()}

    def base_exc(msg: Message) -> None:
        log.write_sync("S", msg.id)
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
    return q


async def main(url: str, queue: str, log_url: str, log_key: str, config: dict[str, Any]) -> None:
    log = RunLogWriter(log_url, log_key)
    build = service_worker if "service" in config else message_queue
    component = build(url, queue, log, config)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        async with component:
            print(f"ready {PID}", flush=True)
            await stop.wait()
    finally:
        await log.close()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    url, queue, log_url, log_key, config = sys.argv[1:6]
    uvloop.run(main(url, queue, log_url, log_key, orjson.loads(config)))
