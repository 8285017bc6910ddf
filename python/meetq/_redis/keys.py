"""The whole Redis key schema of one `RedisMessageQueue`, at a glance.

Every key of queue Q carries the hash tag `{Q}`, so every script touches one slot and the
same code runs on Redis Cluster (queues spread across shards).

    meetq:{Q}:ready:3 .. ready:0   list   ids waiting, FIFO per priority (3 = CRITICAL)
    meetq:{Q}:msg                  hash   id -> "<priority digit>" + encoded message
                                          id\0l -> "<lease token>:<deliveries>:<retries>"
                                          ("-" for the token when not leased)
    meetq:{Q}:inflight             zset   id -> lease deadline (Redis server time, ms)
    meetq:{Q}:delayed              zset   id -> due time (server ms): delays and retry backoff
    meetq:{Q}:dlq                  zset   id -> time it died (server ms), oldest first
    meetq:{Q}:dlqinfo              hash   id -> JSON {reason, time, deliveries, retries}
    meetq:{Q}:stats                hash   published, processed, failed, retried,
                                          dead_letter, seq (last lease token)
    meetq:{Q}:wake                 list   doorbell: idle fetchers BLPOP it
    meetq:{Q}:reply:<name>         list   replies to one dispatcher process (name: REPLY_NAME);
                                          the only keys a message's reply_to may name
    meetq:{Q}:done:<second>        hash   the recorded outcomes of dispatched tasks whose
                                          deadline falls in that second (the task id names
                                          it): id -> reply object (JSON), id\0r -> the
                                          stored body; expires result_ttl after the second
    meetq:{Q}:cancel               pubsub channel: task ids just cancelled (a poke only)

A live message id is in exactly one of ready/delayed/inflight/dlq; its body stays in `msg`
until it is acked or purged. The priority digit in front of the body lets the scripts
route a promoted id without decoding the message.

The lease token and counters live beside the body in the one big `msg` hash rather than
in hashes of their own: a hash of a few hundred fields is a listpack (linear inserts), so
small per-lease hashes made every batched HSET quadratic; `msg` holds the backlog and is a
real hash table whenever it is large. Ids must not contain a NUL byte.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from meetq.errors import InvalidArgumentError

META_SEP = "\0"
"""Separator between an id and its lease-field suffix ("l") in the `msg` hash."""

REPLY_NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")
"""What the <name> of a reply key may be (the dispatcher that owns the key chooses it)."""

READY_LEVELS = (3, 2, 1, 0)
"""Priorities from highest to lowest: the order the dequeue script pops them in."""


@dataclass(frozen=True, slots=True)
class QueueKeys:
    """Key names of one queue; `all` is the KEYS list every script receives."""

    queue: str

    @property
    def prefix(self) -> str:
        return f"meetq:{{{self.queue}}}:"

    def ready(self, priority: int) -> str:
        return f"{self.prefix}ready:{priority}"

    @property
    def all(self) -> list[str]:
        p = self.prefix
        return [
            *(self.ready(level) for level in READY_LEVELS),
            p + "msg",
            p + "inflight",
            p + "delayed",
            p + "dlq",
            p + "dlqinfo",
            p + "stats",
            p + "wake",
        ]

    def named(self, name: str) -> str:
        """One of the keys above by its short name (msg, inflight, dlq, wake, ...)."""
        return self.prefix + name

    def reply(self, name: str) -> str:
        """The reply list of one dispatcher process; `name` must match `REPLY_NAME`."""
        if not REPLY_NAME.fullmatch(name):
            raise InvalidArgumentError(f"invalid reply name {name!r}")
        return f"{self.prefix}reply:{name}"

    def done(self, second: int) -> str:
        """The hash of the recorded outcomes of tasks whose deadline is in `second`."""
        return f"{self.prefix}done:{second}"

    @property
    def cancel_channel(self) -> str:
        """Pub/sub channel that pokes the queue's workers when a task is cancelled."""
        return self.prefix + "cancel"

    def is_reply(self, key: str) -> bool:
        """Whether `key` is a reply key of this queue: the only keys a reply may go to."""
        head = self.prefix + "reply:"
        return key.startswith(head) and REPLY_NAME.fullmatch(key[len(head) :]) is not None


# -- broadcast: Pub/Sub and Streams (meetq.broadcast) --------------------------------------
#
#    meetq:pubsub:probe:<instance>     channel  private publish-and-echo probe of one
#                                              RedisPubSubQueue (never a key, never stored)
#    meetq:pubsub:probe:<instance>:{<tag>}     the same on Cluster, one per shard: a shard
#                                              channel in a slot of that shard
#    meetq:stream:{T}                  stream   the events of topic T; one consumer group per
#                                              service (the group name is the service name)
#    meetq:stream:{T}:dead             stream   dead letters of T: original body, id, group,
#                                              reason, deliveries
#
# Both stream keys of a topic share the hash tag `{T}`, so the dead-letter script touches one
# slot. Channel names are the caller's; Pub/Sub channels are not keys (no slot).

PUBSUB_PROBE_PREFIX = "meetq:pubsub:probe:"


def pubsub_probe_channel(instance: str) -> str:
    """The private channel a `RedisPubSubQueue` publishes its liveness probe on."""
    return PUBSUB_PROBE_PREFIX + instance


def pubsub_shard_probe_channel(instance: str, tag: str) -> str:
    """On Redis Cluster: the probe channel of one shard's subscription connection, a shard
    channel whose hash tag `{tag}` puts it in a slot that shard serves."""
    return f"{PUBSUB_PROBE_PREFIX}{instance}:{{{tag}}}"


@dataclass(frozen=True, slots=True)
class StreamKeys:
    """Key names of one `RedisStreamEventBus` topic."""

    topic: str

    @property
    def stream(self) -> str:
        return f"meetq:stream:{{{self.topic}}}"

    @property
    def dead(self) -> str:
        return f"meetq:stream:{{{self.topic}}}:dead"
