"""What the issue 12 fixes cost one pickup inside Redis: the dequeue script of a base
revision against the current one, and against the least a pickup script can do.

    python benchmarks/bench_reliability_pickup.py [--base d21ace2] [--calls 1000] [--repeats 7]

The current dequeue checks the status hashes of what it leases (one EXISTS per call that
leases anything), orders expired leases by their token sequence and counts through
`bump()` (a pcall'd HINCRBY). Each variant picks up one message at a time, each message
stored just before as `publish` stores it, paced 2 ms apart (as a fetcher on an idle queue
sees them); Redis' `INFO commandstats` usec per EVALSHA is the server time, the median over
the repeats. Variants take turns within each repeat (this box drifts), and a second table
leases 50 messages per call (a busy queue's batches).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "support"))

from helpers import running_redis
from meetq._redis import scripts as _scripts
from meetq._redis.keys import QueueKeys

ROOT = Path(__file__).resolve().parent.parent

MINIMAL_PICKUP = """
local id = redis.call('LPOP', KEYS[3])
if not id then return false end
redis.call('ZADD', KEYS[6], '1', id)
return {id, redis.call('HGET', KEYS[5], id)}
"""
BODY = b"1" + orjson.dumps({"id": "x", "type": "lat", "payload": {"pad": "x" * 60}})


def source_at(rev: str) -> str:
    """The dequeue script (prelude + body) as revision `rev` loads it."""

    def show(name: str) -> str:
        path = f"python/meetq/_redis/lua/{name}.lua"
        return subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{rev}:{path}"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    return show("prelude") + show("dequeue")


def run(r: redis.Redis, base: str, calls: int, repeats: int, batch: int) -> None:
    keys = QueueKeys("pickup").all
    args = [batch, 30_000, 10, 100_000, 604_800_000, 0]
    shas = {
        f"dequeue @ {base}": r.script_load(source_at(base)),
        "dequeue (current)": r.script_load(_scripts.dequeue.source),
    }
    if batch == 1:
        shas["minimal pickup"] = r.script_load(MINIMAL_PICKUP)
    ready, msg = keys[2], keys[4]
    calls_of: dict[str, Callable[[], Any]] = {
        name: functools.partial(r.evalsha, sha, len(keys), *keys, *args)
        for name, sha in shas.items()
    }
    names = list(calls_of)
    runs: dict[str, list[float]] = {name: [] for name in names}
    per = batch if batch > 1 else 1
    for rep in range(repeats):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            r.flushall()
            r.config_resetstat()
            for i in range(calls // 4):
                with r.pipeline(transaction=True) as pipe:
                    ids = [f"m{i}-{j}" for j in range(per)]
                    pipe.hset(msg, mapping=dict.fromkeys(ids, BODY)).rpush(ready, *ids)
                    pipe.execute()
                calls_of[name]()
                time.sleep(0.002)  # the pacing under test, not synchronization
            runs[name].append(r.info("commandstats")["cmdstat_evalsha"]["usec_per_call"])
    print(f"usec per EVALSHA leasing {per} message(s), 2 ms apart, median of {repeats}")
    base_usec = statistics.median(runs[names[0]])
    for name in names:
        usec = statistics.median(runs[name])
        print(f"  {name:22} {usec:8.1f}   x{usec / base_usec:5.2f} of the base")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default="d21ace2", help="revision to compare against")
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=7)
    a = ap.parse_args()
    with running_redis() as server:
        r = redis.Redis.from_url(server.url)
        try:
            for batch in (1, 50):
                run(r, a.base, a.calls, a.repeats, batch)
        finally:
            r.close()


if __name__ == "__main__":
    main()
