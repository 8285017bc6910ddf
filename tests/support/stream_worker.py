"""A RedisStreamEventBus consumer process for the kill tests (run as a script, never imported).

usage: stream_worker.py URL SERVICE TOPIC DONE_KEY

Every event handled is RPUSHed to DONE_KEY as "<consumer>|<entry id>". Claim and
dead-consumer times of seconds, so a test sees a SIGKILLed sibling's entries claimed soon,
yet a live process stalled by a loaded machine is not mistaken for a dead one.
Prints "ready" once started; stops gracefully on SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

import redis.asyncio
import uvloop

from meetq import RedisStreamEventBus, StreamEvent


async def main(url: str, service: str, topic: str, done_key: str) -> None:
    r = redis.asyncio.Redis.from_url(url)
    bus = RedisStreamEventBus(
        url,
        service,
        start_from="0",
        claim_idle=5.0,  # well past a handler's time even on a loaded box: no false claims
        claim_interval=0.2,
        dead_consumer_after=2.0,
        block=0.5,
        batch=20,
        max_in_flight=40,
    )

    async def handle(event: StreamEvent) -> None:
        await r.rpush(done_key, f"{bus.consumer}|{event.id}")

    bus.subscribe(topic, handle)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with bus:
        print(f"ready {bus.consumer}", flush=True)
        await stop.wait()
    await r.aclose()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    uvloop.run(main(*sys.argv[1:5]))
