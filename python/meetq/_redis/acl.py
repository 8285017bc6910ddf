"""The least a meetq process needs from Redis, as ACL rules (`ACL SETUSER <name> on
>password <rules...>`), so an operator can give workers and publishers their own users.

- A **worker** may run every meetq command, on meetq's keys and channels only: nothing a
  message carries, and no bug, can make it touch another application's keys, and the
  admin and dangerous commands (CONFIG, FLUSHALL, KEYS, DEBUG, ...) are refused.
- A **publisher** (a dispatcher, a gateway, any service that only hands work on) may store
  and announce messages but has none of the commands that take a message out of a ready
  list or lease it (LPOP, LMPOP, BLPOP, ZREM, HDEL, ...): a dequeue run with its
  credentials is refused inside the script, so it cannot consume.

Scripts run with the caller's permissions (Redis 7 checks every `redis.call`), so the
same rules hold inside Lua. `tests/_redis/test_acl.py` runs the queue as both users.
"""

from __future__ import annotations

KEYS = ("resetkeys", "~meetq:*", "resetchannels", "&meetq:*")
"""Every meetq key and channel starts with `meetq:` (`_redis/keys.py`)."""

WORKER_RULES: tuple[str, ...] = (
    *KEYS,
    "-@all",
    "+@read",
    "+@write",
    "+@scripting",
    "+@transaction",
    "+@connection",
    "+@pubsub",
    "+@blocking",
    "+time",
    "+wait",
    "+info",
    "-@dangerous",
    "+info",  # the cluster/sentinel clients ask for the server's role
    "-script|flush",
    "-script|kill",
)

PUBLISHER_RULES: tuple[str, ...] = (
    *KEYS,
    "-@all",
    "+@connection",
    "+@transaction",
    "+evalsha",
    "+eval",
    "+script|load",
    "+time",
    "+wait",
    "+hset",
    "+hsetnx",
    "+hmget",
    "+hget",
    "+hincrby",
    "+rpush",
    "+lpush",
    "+ltrim",
    "+llen",
    "+zadd",
    "+publish",
    "+xadd",
)


def setuser_command(name: str, password: str, rules: tuple[str, ...]) -> tuple[str, ...]:
    """The ACL SETUSER command creating or resetting user `name` with `rules`."""
    return ("ACL", "SETUSER", name, "reset", "on", f">{password}", *rules)
