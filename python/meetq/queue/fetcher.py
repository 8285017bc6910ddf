"""`Fetcher`: the one fetcher of a queue in this process, and its `AckBatch`.

A state machine with four states (`state`):

    FETCHING  a dequeue (with the pending acks) is in flight on the fetch connection;
              while messages keep coming the next one is sent before this batch is
              handed out, so Redis works while the handlers run
    WAITING   idle: one write of [BLPOP doorbell, EVALSHA dequeue] waits on the doorbell
              connection, so the dequeue runs inside Redis the moment a publisher rings,
              with no extra round trip; acks made meanwhile are flushed at most
              `ack_delay` later. One future is awaited, which the doorbell reply, the first
              ack's timer or stop() completes
    BACKOFF   a call failed: wait `backoff(attempt)`, then FETCHING again
    STOPPED   not running (before start, after stop)

Both calls are plain futures of the connections (no task, no timer per call: the
connections' reply timeouts catch a silent server). The fetcher does not run handlers: it
hands each dequeue reply to `deliver`. The queue runs `run()` under its supervisor, so a
fetcher that dies is logged and restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

from redis.exceptions import NoScriptError

from meetq._redis import scripts
from meetq._redis.cluster import key_slot
from meetq._redis.keys import QueueKeys
from meetq._redis.links import Endpoint, Link
from meetq._redis.retry import Outage
from meetq.queue.config import QueueConfig
from meetq.queue.leases import Leases

log = logging.getLogger("meetq.queue.fetcher")

FETCHING: Final = "fetching"
WAITING: Final = "waiting"
BACKOFF: Final = "backoff"
STOPPED: Final = "stopped"

ACK_CHUNK = 2000
"""(id, token) pairs of acks per dequeue call at most."""


def dequeue_args(config: QueueConfig, n: int, acks: list[str]) -> list[Any]:
    """The dequeue script's ARGV: fetch up to `n`, apply the (id, token) pairs `acks`; the
    last one is how long the reply of a message the script finishes itself is kept."""
    return [
        n,
        config.lease_ms,
        config.max_deliveries,
        *config.dlq_args,
        len(acks) // 2,
        *acks,
        config.result_ttl_ms,
    ]


class AckBatch:
    """Acks waiting for the next dequeue: a flat [id, token, id, token, ...] list.

    The first ack of a batch (or a batch as large as a fetch) calls `on_due`, which wakes
    an idle fetcher to arm its flush timer; later ones ride along."""

    def __init__(self, leases: Leases, config: QueueConfig, on_due: Callable[[], None]) -> None:
        self.pending: list[str] = []
        self.since = 0.0
        """When the oldest pending ack was made (monotonic)."""
        self._leases = leases
        self._full = 2 * config.fetch_max
        self._on_due = on_due

    def __len__(self) -> int:
        return len(self.pending) // 2

    def add(self, mid: str, token: str) -> None:
        pending = self.pending
        if not pending:
            self.since = time.monotonic()
        pending += (mid, token)
        if len(pending) == 2 or len(pending) >= self._full:
            self._on_due()

    def take(self) -> list[str]:
        """The next chunk to send. A finished message stays held (its lease renewed) until
        its ack goes out, so a slow flush cannot let the lease lapse."""
        acks = self.pending
        if len(acks) > 2 * ACK_CHUNK:
            self.pending = acks[2 * ACK_CHUNK :]
            acks = acks[: 2 * ACK_CHUNK]
        else:
            self.pending = []
        forget = self._leases.forget
        for i in range(0, len(acks), 2):
            forget(acks[i], acks[i + 1])
        return acks

    def untake(self, acks: list[str]) -> None:
        """Puts acks whose call failed back in line (and their leases under renewal)."""
        self.pending = acks + self.pending
        held = self._leases.held
        for i in range(0, len(acks), 2):
            held.setdefault(acks[i], acks[i + 1])


class Fetcher:
    """Leases messages of one queue for this process; see the module docstring."""

    def __init__(
        self,
        endpoint: Endpoint,
        keys: QueueKeys,
        config: QueueConfig,
        leases: Leases,
        deliver: Callable[[list[Any], float], None],
        queue_name: str,
        outage: Outage | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.config = config
        self.leases = leases
        self.acks = AckBatch(leases, config, self.kick)
        self.queue_name = queue_name
        self.state: str = STOPPED
        self.outage = outage or Outage(f"queue {queue_name!r} fetcher", config.retry_budget)
        """Reconnect policy: backoff, one warning, one error past the retry budget."""
        self.stopping = False
        self._deliver = deliver
        self._keys = keys.all
        self.slot = key_slot(keys.prefix)
        self._wake_key = keys.named("wake")
        self._block_wait = endpoint.longest_block(config.block_timeout)
        self._kick_fut: asyncio.Future[None] | None = None
        self._fetch: Link | None = None
        self._block: Link | None = None
        self._block_id: int | None = None
        self._armed = False
        """A doorbell pair is out: a freed lease needs no wake-up (see `freed`)."""

    def open(self) -> None:
        # the fetch connection only runs scripts that answer in milliseconds: a few seconds
        # of silence mean a dead path, and the fetcher must not sit on it
        self._fetch = self.endpoint.link(5.0, slot=self.slot)
        self._block = self.endpoint.link(
            self.config.block_timeout + 5.0, single=True, slot=self.slot
        )
        self.stopping = False

    async def close(self) -> None:
        """Closes both connections (each one even when the other fails to close)."""
        fetch, block = self._fetch, self._block
        self._fetch = self._block = None
        try:
            if fetch is not None:
                await fetch.close()
        finally:
            if block is not None:
                await block.close()

    @property
    def hot_link(self) -> Link | None:
        """The fetch connection (meetq's RespConnection when the server has a URL) while
        the fetcher is open: the batched final scripts of `Outcomes` ride on it too."""
        return self._fetch

    def kick(self, _: object = None) -> None:
        """Wakes an idle fetcher (new acks, stop)."""
        fut = self._kick_fut
        if fut is not None and not fut.done():
            fut.set_result(None)

    def freed(self) -> None:
        """Leases were given up (outcomes recorded): wakes the fetcher only when that may
        let it fetch, i.e. no doorbell pair is out (it was at capacity, or fetching)."""
        if not self._armed:
            self.kick()

    def stop(self) -> None:
        """Asks the fetcher to exit at its next safe point."""
        self.stopping = True
        self.kick()

    async def run(self) -> None:
        """The loop; returns once `stop()` was called and nothing is in flight."""
        loop = asyncio.get_running_loop()
        cfg = self.config
        capacity, fetch_max, ack_wait = cfg.capacity, cfg.fetch_max, cfg.ack_wait
        held = self.leases.held
        acks = self.acks
        deliver = self._deliver
        pending: asyncio.Future[list[Any]] | None = None
        command: tuple[Any, ...] = ()
        pair: asyncio.Future[list[Any]] | None = None
        pair_n = 0
        sent_acks: list[str] = []
        asked = 0
        outage = self.outage
        drained = False
        wait_ms = -1
        script = scripts.dequeue
        fetch, block = self._fetch, self._block
        assert fetch is not None and block is not None

        asked_at = pair_at = 0.0  # when the dequeue (its leases' earliest grant) was sent

        def ask(n: int) -> asyncio.Future[list[Any]]:
            nonlocal sent_acks, asked, command, asked_at
            sent_acks = acks.take()
            asked = n
            asked_at = time.monotonic()
            command = script.command(self._keys, dequeue_args(cfg, n, sent_acks))
            self.state = FETCHING
            return fetch.send_many([command])

        try:
            while True:
                if pending is None:
                    if self.stopping:
                        break
                    room = min(capacity - len(held), fetch_max)
                    acks_due = bool(acks.pending) and (
                        not drained
                        or len(acks.pending) >= 2 * fetch_max
                        or time.monotonic() - acks.since >= ack_wait
                    )
                    if acks_due or (room > 0 and not drained):
                        pending = ask(0 if pair is not None or room < 0 else room)
                    else:
                        # Idle: the pair waits for the doorbell; wake early for acks.
                        if pair is None and room > 0:
                            pair_n = room
                            pair = self._ring_and_dequeue(block, room, wait_ms)
                            self._armed = True
                            pair_at = time.monotonic()
                            pair.add_done_callback(self.kick)
                        timer = None
                        if acks.pending:
                            due = acks.since + ack_wait - time.monotonic()
                            timer = loop.call_later(max(0.0, due), self.kick)
                        if pair is None or not pair.done():
                            self.state = WAITING
                            self._kick_fut = fut = loop.create_future()
                            await fut
                            self._kick_fut = None
                        if timer is not None:
                            timer.cancel()
                        if pair is not None and pair.done():
                            finished, pair = pair, None
                            self._armed = False
                            try:
                                rung, reply = finished.result()
                                if isinstance(reply, NoScriptError):
                                    await block.load(script.source)
                                    drained = False  # the dequeue did not run: fetch now
                                    continue
                                if isinstance(reply, Exception):
                                    raise reply
                            except Exception as exc:
                                self.state = BACKOFF
                                await asyncio.sleep(outage.failed(exc))
                                drained = False  # a ring may have been lost with it
                                continue
                            got = (len(reply) - 3) // 5
                            wait_ms = reply[1]
                            drained = not (reply[2] or (got and got >= pair_n))
                            if got:
                                deliver(reply, pair_at)
                            if isinstance(rung, Exception):
                                # a replica (READONLY: the BLPOP is refused, and the
                                # dequeue says so too) or garbage in the doorbell key:
                                # an outage, with its backoff, not a spin
                                self.state = BACKOFF
                                await self._repair_wake()
                                await asyncio.sleep(outage.failed(rung))
                            else:
                                outage.succeeded()
                        continue
                try:
                    reply = (await pending)[0]
                    if isinstance(reply, NoScriptError):
                        await fetch.load(script.source)
                        pending = fetch.send_many([command])  # it did not run: same call
                        asked_at = time.monotonic()
                        continue
                    if isinstance(reply, Exception):
                        raise reply
                except asyncio.CancelledError:
                    acks.untake(sent_acks)
                    raise
                except Exception as exc:
                    acks.untake(sent_acks)
                    pending = None
                    self.state = BACKOFF
                    await asyncio.sleep(outage.failed(exc))
                    continue
                pending = None
                outage.succeeded()
                got = (len(reply) - 3) // 5
                wait_ms = reply[1]
                more = bool(reply[2] or (got and got >= asked))
                if asked or more:
                    drained = not more
                granted = asked_at
                if more and not self.stopping:
                    room = min(capacity - len(held) - got, fetch_max)
                    if room > 0:
                        pending = ask(room)
                if got:
                    deliver(reply, granted)
        finally:
            self._kick_fut = None
            if pending is not None:
                pending.cancel()
                with contextlib.suppress(BaseException):
                    await pending
                acks.untake(sent_acks)
            if pair is not None:
                await self._collect_pair(pair)
            self._armed = False
            self.state = STOPPED

    async def _repair_wake(self) -> None:
        """The doorbell key is ours and holds no data: a value of another type is removed."""
        client = self.endpoint.client
        with contextlib.suppress(Exception):
            if await client.type(self._wake_key) not in (b"list", b"none", "list", "none"):
                await client.delete(self._wake_key)

    def _ring_and_dequeue(self, block: Link, n: int, wait_ms: int) -> asyncio.Future[list[Any]]:
        """[BLPOP doorbell, EVALSHA dequeue] in one write: the future of both replies."""
        # at most half a lease: a delivery counts its lease from when this was sent
        timeout = min(self._block_wait, self.config.visibility_timeout / 2)
        if wait_ms >= 0:
            timeout = min(timeout, wait_ms / 1000)
        commands = [
            ("BLPOP", self._wake_key, round(max(timeout, 0.001), 3)),
            scripts.dequeue.command(self._keys, dequeue_args(self.config, n, [])),
        ]
        if block.is_open and self._block_id is not None:
            return block.send_many(commands)
        return asyncio.ensure_future(self._open_then_send(block, commands))

    async def _open_then_send(self, block: Link, commands: list[tuple[Any, ...]]) -> list[Any]:
        # the connection's id lets stop() unblock the wait (CLIENT UNBLOCK)
        self._block_id = await block.client_id()
        return await block.execute_many(commands)

    async def _collect_pair(self, pair: asyncio.Future[list[Any]]) -> None:
        """On stop: unblocks the doorbell wait so its dequeue runs now, and keeps what it
        leased (stop() hands it back) instead of leaving it to the visibility timeout."""
        run: Callable[..., Awaitable[Any]] = self.endpoint.client.execute_command
        deadline = time.monotonic() + self.config.block_timeout + 1.0
        while not pair.done() and time.monotonic() < deadline:
            # repeated: the BLPOP may not have reached Redis yet when stop() begins
            if self._block_id is not None:
                with contextlib.suppress(Exception):
                    await run("CLIENT", "UNBLOCK", self._block_id)
            await asyncio.wait({pair}, timeout=0.05)
        if not pair.done():
            pair.cancel()
        try:
            reply = (await pair)[1]
        except BaseException:
            return
        if isinstance(reply, list) and len(reply) > 3:
            # stopping: these are handed back unstarted, whatever their lease says
            self._deliver(reply, time.monotonic() - self.config.visibility_timeout)


__all__ = ["ACK_CHUNK", "BACKOFF", "FETCHING", "STOPPED", "WAITING", "AckBatch", "Fetcher"]
