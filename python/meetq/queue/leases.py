"""`Leases`: the table of messages this process holds, and the thread that renews the
ones it is really making progress on.

This is the only cross-thread code of the queue. The loop owns `held` (id -> lease token):
the fetcher adds what it leased, outcomes remove what they finished. The renewer thread
runs every third of the lease on a blocking connection of its own, so even a handler
hogging the event loop (CPU-bound sync code) cannot let its lease lapse. (For a shared
client that cannot be cloned (Sentinel, Cluster, custom pools) renewal runs as a task on
the loop instead.) But renewing everything held, unconditionally, let a wedged or dead
worker keep its messages forever (issue 12 item 2), so each lease has a state:

- fetched, not started (buffered): renewed while the event loop answers (a heartbeat the
  loop stamps every half renewal interval, not older than two intervals or a second).
  Once it stops answering (a sync handler blocking it, a stuck process) the renewer hands
  them back to the queue (release), and the loop does not start them when it comes back.
- running: renewed while within what the message allows, `QueueConfig.allowed`: its
  `timeout` (`max_handler_time` when it has none) plus one visibility timeout. A sync
  handler blocking the loop is progress within that time; past it, the lease lapses and
  another worker gets the message.
- finished, its ack or outcome on the way: renewed until that lands (it succeeded; letting
  it lapse would run it again).

A message is started only while its lease surely holds: `until` is the local (monotonic)
time its last grant or renewal lasts until, counted from when the call was sent, so a
process that was frozen (SIGSTOP) past its leases, or read a dequeue reply late, does not
run what others may have taken over meanwhile. The loop (`claim`) and the renewer (`plan`)
move a buffered lease under one lock, so it is either started here or handed back, never
both. Dict copies are atomic under the GIL, so the thread never sees a half-made change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

import redis

from meetq._redis import scripts
from meetq._redis.links import Endpoint
from meetq._redis.retry import Outage
from meetq.queue.config import QueueConfig

log = logging.getLogger("meetq.queue.leases")

CHUNK = 2000
"""(id, token) pairs per extend call."""

BUFFERED = 0.0
HANDED_BACK = -1.0
LOST = -2.0
"""Lease states besides a running run's renewal deadline (a monotonic time > 0)."""

Id = Any
"""A message id as the table keys it: text, or the raw bytes of an id that is not UTF-8."""


class Leases:
    """Held leases of one queue in this process, and their renewal."""

    def __init__(
        self, endpoint: Endpoint, keys: list[str], config: QueueConfig, queue_name: str
    ) -> None:
        self.endpoint = endpoint
        self.config = config
        self.queue_name = queue_name
        self._keys = keys
        self.held: dict[Id, str] = {}
        """id -> lease token of everything leased here and not yet finished (loop only)."""
        self.state: dict[Id, float] = {}
        """BUFFERED, HANDED_BACK, LOST, or a running run's renewal deadline; absent:
        finished, its outcome on the way."""
        self.until: dict[Id, float] = {}
        """Local (monotonic) time each lease surely lasts until."""
        self.interval = config.renew_interval
        self.stall = max(2 * self.interval, 1.0)
        """How long the loop may go without a heartbeat before it counts as not answering
        (two renewal intervals, at least a second: a loaded machine's scheduling pauses are
        not a stuck worker)."""
        self.beat = time.monotonic()
        """The loop's last heartbeat (monotonic)."""
        self._lease_s = config.visibility_timeout
        self._safety = min(0.1 * config.visibility_timeout, 0.5)
        self._lock = threading.Lock()
        self._beat_handle: asyncio.Handle | None = None
        self._sync: redis.Redis | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self.held)

    @property
    def renewing(self) -> bool:
        """Whether a renewer (thread or loop task) is running."""
        if self._thread is not None:
            return self._thread.is_alive()
        return self._task is not None and not self._task.done()

    # ---------------------------------------------------------------- the loop's side

    def leased(self, mid: Id, token: str, granted: float) -> None:
        """A delivery arrived; `granted`: when its dequeue was sent (monotonic)."""
        self.held[mid] = token
        self.state[mid] = BUFFERED
        self.until[mid] = granted + self._lease_s

    def claim(self, mid: Id, token: str, allowed: float) -> bool:
        """Marks a buffered message running for up to `allowed` seconds. False when it was
        handed back, lost, or its lease may have run out (it is then forgotten here)."""
        with self._lock:
            now = time.monotonic()
            if (
                self.state.get(mid) == BUFFERED
                and self.held.get(mid) == token
                and now < self.until.get(mid, 0.0) - self._safety
            ):
                self.state[mid] = now + allowed
                return True
            if self.held.get(mid) == token:
                del self.held[mid]
            self.state.pop(mid, None)
            self.until.pop(mid, None)
            return False

    def deadline(self, mid: Id) -> float:
        """The renewal deadline of a running message (0 when it is not running)."""
        st = self.state.get(mid, 0.0)
        return st if st > 0 else 0.0

    def finished(self, mid: Id) -> None:
        """Its outcome is known; its ack (or failure) is on the way: renewed until then."""
        self.state.pop(mid, None)

    def forget(self, mid: Id, token: str | None = None) -> None:
        """It left this process (acked, failed, released)."""
        if token is None or self.held.get(mid) == token:
            self.held.pop(mid, None)
        self.state.pop(mid, None)
        self.until.pop(mid, None)

    def clear(self) -> None:
        self.held.clear()
        self.state.clear()
        self.until.clear()

    def _beat(self) -> None:
        """The loop's heartbeat: buffered leases are renewed only while it is fresh."""
        self.beat = time.monotonic()
        if not self._stop.is_set():
            loop = asyncio.get_running_loop()
            self._beat_handle = loop.call_later(self.interval / 2, self._beat)

    # ---------------------------------------------------------------- the renewer's side

    def plan(self) -> tuple[list[tuple[Id, str]], list[tuple[Id, str]]]:
        """(leases to renew, buffered leases to hand back now) by the rule above."""
        now = time.monotonic()
        answering = now - self.beat < self.stall
        renew: list[tuple[Id, str]] = []
        back: list[tuple[Id, str]] = []
        with self._lock:
            for mid, token in self.held.copy().items():
                st = self.state.get(mid)
                if st is None:
                    renew.append((mid, token))
                elif st == BUFFERED:
                    if answering:
                        renew.append((mid, token))
                    else:
                        self.state[mid] = HANDED_BACK
                        back.append((mid, token))
                elif st > 0 and now < st:
                    renew.append((mid, token))
        return renew, back

    def renewed(self, pairs: Iterable[tuple[Id, str]], sent: float, lost: Iterable[Any]) -> None:
        """An extend call sent at `sent` succeeded, except for the ids in `lost` (someone
        else holds those now: a buffered one is not started)."""
        gone = {_key(x) for x in lost}
        until = sent + self._lease_s
        with self._lock:
            for mid, _ in pairs:
                if mid in gone:
                    if self.state.get(mid) == BUFFERED:
                        self.state[mid] = LOST
                elif mid in self.until:
                    self.until[mid] = until

    # ---------------------------------------------------------------- renewal

    def start(self) -> None:
        self._stop.clear()
        self.beat = time.monotonic()
        self._beat_handle = asyncio.get_running_loop().call_soon(self._beat)
        interval = max(5.0, self.config.visibility_timeout / 3)
        self._sync = self.endpoint.sync_client(interval)
        if self._sync is not None:
            self._thread = threading.Thread(
                target=self._renew_in_thread, name=f"meetq-lease-{self.queue_name}", daemon=True
            )
            self._thread.start()
        else:
            # a client we cannot clone: renew on the loop, which a handler hogging the loop
            # can delay
            self._task = asyncio.get_running_loop().create_task(self._renew_on_loop())

    async def stop(self) -> None:
        """Stops the renewer and closes its connection (always, whatever failed before)."""
        self._stop.set()
        if self._beat_handle is not None:
            self._beat_handle.cancel()
            self._beat_handle = None
        try:
            if self._task is not None:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
                self._task = None
            if self._thread is not None:
                await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 10)
                self._thread = None
        finally:
            if self._sync is not None:
                self._sync.close()
                self._sync = None

    def _extend_args(self, pairs: list[tuple[Id, str]]) -> list[Any]:
        args: list[Any] = [self.config.lease_ms]
        for pair in pairs:
            args.extend(pair)
        return args

    def _outage(self) -> Outage:
        return Outage(f"queue {self.queue_name!r} lease renewal", self.config.retry_budget)

    def _renew_in_thread(self) -> None:
        """Every renewal interval: renews what the rule allows and hands back the buffered
        messages the loop cannot start."""
        outage = self._outage()  # logs one warning per outage, one error past the budget
        sync = self._sync
        if sync is not None:
            # Connect now, not at the first renewal: a TLS handshake on a loaded machine
            # took longer than a short lease, which then lapsed before it was first renewed.
            try:
                sync.ping()
            except Exception as exc:
                outage.failed(exc)
        while not self._stop.wait(self.interval):
            sync = self._sync
            if sync is None:
                continue
            renew, back = self.plan()
            try:
                if back:
                    args = [x for pair in back for x in pair]
                    scripts.release.call_sync(sync, self._keys, args)
                    log.info(
                        "queue %s: event loop not answering; handed back %d messages",
                        self.queue_name,
                        len(back),
                    )
                for start in range(0, len(renew), CHUNK):
                    chunk = renew[start : start + CHUNK]
                    sent = time.monotonic()
                    lost = scripts.extend.call_sync(sync, self._keys, self._extend_args(chunk))
                    self.renewed(chunk, sent, lost)
            except Exception as exc:
                outage.failed(exc)
            else:
                outage.succeeded()

    async def _renew_on_loop(self) -> None:
        client = self.endpoint.client
        outage = self._outage()
        while True:
            await asyncio.sleep(self.interval)  # a period, not synchronization
            renew, _ = self.plan()  # the loop answers: nothing to hand back
            for start in range(0, len(renew), CHUNK):
                chunk = renew[start : start + CHUNK]
                sent = time.monotonic()
                try:
                    lost = await scripts.extend(client, self._keys, self._extend_args(chunk))
                except Exception as exc:
                    outage.failed(exc)
                    break
                self.renewed(chunk, sent, lost)
            else:
                outage.succeeded()


def _key(raw: Any) -> Id:
    """An id as the table keys it: text when it is UTF-8, else its bytes."""
    if isinstance(raw, bytes):
        try:
            return raw.decode()
        except UnicodeDecodeError:
            return raw
    return raw


__all__ = ["BUFFERED", "HANDED_BACK", "LOST", "Leases"]
