"""The Lua scripts of `RedisMessageQueue`: every state transition of a message is one script.

Each script receives the whole key list of `_keys.QueueKeys.all` (all under one hash tag,
so it is Cluster-safe) and reads the clock with `TIME`, so the clocks of workers never
matter. A message moves ready -> inflight (dequeue) -> gone (ack) / delayed (retry) / dlq,
and delayed -> ready, inflight -> ready (lease expired) are done lazily by every dequeue.

Lease tokens: every delivery gets a fresh token "<seq>:<deliveries>:<retries>" (`seq` is a
counter in `stats`), stored in field `id\\0l` of the `msg` hash while the message is in
flight and replaced by "-:<deliveries>:<retries>" when it leaves flight. Ack, fail, extend
and release act only when the caller's token is the current one, so an ack from a worker
whose lease expired (and whose message was delivered again) can never delete the new
delivery. One field for token and counters keeps a dequeue at two hash fields per message.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import redis
import redis.asyncio
from redis.exceptions import NoScriptError

_PRELUDE = """
local K_MSG, K_INF, K_DELAYED, K_DLQ = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local K_DLQINFO, K_STATS, K_WAKE = KEYS[9], KEYS[10], KEYS[11]

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- field id\\0l beside the body: "<token seq>:<deliveries>:<retries>" while leased,
-- "-:<deliveries>:<retries>" otherwise (no token can match it), absent = never delivered
local function fl(id) return id .. '\\0l' end
local function counters(v)
  if not v then return 0, 0 end
  local a, r = string.match(v, ':(%d+):(%d+)$')
  return tonumber(a) or 0, tonumber(r) or 0
end
local function unleased(att, ret) return '-:' .. att .. ':' .. ret end

-- the ready list of a stored body: its first byte is the priority digit
local function ready_key(body)
  local p = tonumber(string.sub(body, 1, 1))
  if p == nil or p < 0 or p > 3 then p = 1 end
  return KEYS[4 - p]
end

local function ring()
  if redis.call('LLEN', K_WAKE) == 0 then redis.call('RPUSH', K_WAKE, '1') end
end

local function chunked(cmd, key, list)
  for i = 1, #list, 1000 do
    redis.call(cmd, key, unpack(list, i, math.min(i + 999, #list)))
  end
end

-- deletes the bodies and counters of ids
local function forget(ids)
  local f = {}
  for _, id in ipairs(ids) do
    f[#f + 1] = id
    f[#f + 1] = fl(id)
  end
  chunked('HDEL', K_MSG, f)
end

-- drops DLQ entries beyond the count bound and older than the age bound
local function trim_dlq(now, dlq_max, dlq_age_ms)
  local drop = {}
  local n = redis.call('ZCARD', K_DLQ)
  if dlq_max > 0 and n > dlq_max then
    drop = redis.call('ZRANGE', K_DLQ, 0, n - dlq_max - 1)
  end
  if dlq_age_ms > 0 then
    local old = redis.call('ZRANGEBYSCORE', K_DLQ, '-inf', now - dlq_age_ms, 'LIMIT', 0, 1000)
    for _, id in ipairs(old) do drop[#drop + 1] = id end
  end
  if #drop > 0 then
    chunked('ZREM', K_DLQ, drop)
    chunked('HDEL', K_DLQINFO, drop)
    forget(drop)
  end
end

-- moves an id that is in none of ready/delayed/inflight into the DLQ
local function to_dlq(id, reason, now)
  local att, ret = counters(redis.call('HGET', K_MSG, fl(id)))
  redis.call('HSET', K_MSG, fl(id), unleased(att, ret))
  redis.call('ZADD', K_DLQ, now, id)
  redis.call('HSET', K_DLQINFO, id, cjson.encode({reason = reason, time = now / 1000,
    deliveries = att, retries = ret}))
  redis.call('HINCRBY', K_STATS, 'dead_letter', 1)
end
"""

# ARGV: n, lease_ms, max_deliveries, dlq_max, dlq_age_ms, n_acks, (id, token) * n_acks
# -> {acked, wait_ms (-1: nothing scheduled), more, (id, token, deliveries, retries, body)*}
DEQUEUE = """
local n, lease_ms, max_del = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local dlq_max, dlq_age = tonumber(ARGV[4]), tonumber(ARGV[5])
local n_acks = tonumber(ARGV[6])
local now = now_ms()
local acked = 0

if n_acks > 0 then
  local fields = {}
  for i = 7, 6 + 2 * n_acks, 2 do fields[#fields + 1] = fl(ARGV[i]) end
  local cur = redis.call('HMGET', K_MSG, unpack(fields))
  local done = {}
  for i = 1, n_acks do
    local j = 5 + 2 * i
    if cur[i] == ARGV[j + 1] then done[#done + 1] = ARGV[j] end
  end
  if #done > 0 then
    chunked('ZREM', K_INF, done)
    forget(done)
    redis.call('HINCRBY', K_STATS, 'processed', #done)
    acked = #done
  end
end

-- Promotions are due only when the earliest delayed entry or lease deadline has passed:
-- reading the two earliest scores first keeps an idle-path dequeue at a few calls (each
-- redis.call costs microseconds), and they give the next due time for the reply as well.
local function earliest(key)
  local e = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if e[2] then return tonumber(e[2]) end
  return nil
end
local died = false
local next_delayed, next_lease = earliest(K_DELAYED), earliest(K_INF)

if next_delayed and next_delayed <= now then
  local due = redis.call('ZRANGEBYSCORE', K_DELAYED, '-inf', now, 'LIMIT', 0, 1000)
  local bodies = redis.call('HMGET', K_MSG, unpack(due))
  chunked('ZREM', K_DELAYED, due)
  for i, id in ipairs(due) do
    if bodies[i] then
      redis.call('RPUSH', ready_key(bodies[i]), id)
    else
      to_dlq(id, 'missing body (delayed entry without a stored message)', now)
      died = true
    end
  end
  next_delayed = earliest(K_DELAYED)
end

if next_lease and next_lease <= now then
  local expired = redis.call('ZRANGEBYSCORE', K_INF, '-inf', now, 'LIMIT', 0, 1000)
  chunked('ZREM', K_INF, expired)
  for _, id in ipairs(expired) do
    local c = redis.call('HMGET', K_MSG, id, fl(id))
    local att, ret = counters(c[2])
    redis.call('HSET', K_MSG, fl(id), unleased(att, ret))
    if not c[1] then
      to_dlq(id, 'missing body (leased entry without a stored message)', now)
      died = true
    elseif max_del > 0 and att >= max_del then
      to_dlq(id, 'lease expired after ' .. att .. ' deliveries (worker lost or stuck)', now)
      died = true
    else
      redis.call('LPUSH', ready_key(c[1]), id)
    end
  end
  next_lease = earliest(K_INF)
end

-- Best ready ids first. LMPOP (Redis >= 7) pops from the first non-empty list, so a
-- message of one priority costs two calls instead of four LPOPs; a list holding something
-- other than ids makes LMPOP fail, and the per-list LPOPs then skip just that list.
local ids = {}
local first = 1
if n > 0 and (redis.REDIS_VERSION_NUM or 0) >= 0x070000 then
  while first <= 4 and #ids < n do
    local args = {5 - first}
    for i = first, 4 do args[#args + 1] = KEYS[i] end
    args[#args + 1] = 'LEFT'
    args[#args + 1] = 'COUNT'
    args[#args + 1] = n - #ids
    local got = redis.pcall('LMPOP', unpack(args))
    if not got then first = 5 break end -- all empty
    if type(got) ~= 'table' or got.err then break end
    for i = first, 4 do
      if KEYS[i] == got[1] then first = i + 1 break end
    end
    for _, id in ipairs(got[2]) do ids[#ids + 1] = id end
  end
end
for i = first, 4 do
  local want = n - #ids
  if want <= 0 then break end
  local got = redis.pcall('LPOP', KEYS[i], want)
  if type(got) == 'table' and got.err == nil then
    for _, id in ipairs(got) do ids[#ids + 1] = id end
  end
end

local out = {acked, -1, 0}
if #ids > 0 then
  local fields = {}
  for _, id in ipairs(ids) do
    fields[#fields + 1] = id
    fields[#fields + 1] = fl(id)
  end
  local got = redis.call('HMGET', K_MSG, unpack(fields))
  local seq = redis.call('HINCRBY', K_STATS, 'seq', #ids) - #ids
  local deadline = now + lease_ms
  local zargs, hargs = {}, {}
  for i, id in ipairs(ids) do
    local body = got[2 * i - 1]
    if body then
      local att, ret = counters(got[2 * i])
      att = att + 1
      local token = (seq + i) .. ':' .. att .. ':' .. ret
      zargs[#zargs + 1] = deadline
      zargs[#zargs + 1] = id
      hargs[#hargs + 1] = fl(id)
      hargs[#hargs + 1] = token
      out[#out + 1] = id
      out[#out + 1] = token
      out[#out + 1] = att
      out[#out + 1] = ret
      out[#out + 1] = string.sub(body, 2)
    else
      to_dlq(id, 'missing body (ready entry without a stored message)', now)
      died = true
    end
  end
  if #zargs > 0 then
    chunked('ZADD', K_INF, zargs)
    chunked('HSET', K_MSG, hargs)
  end
end
if died then trim_dlq(now, dlq_max, dlq_age) end

if n > 0 and #ids >= n then
  if redis.call('EXISTS', KEYS[1], KEYS[2], KEYS[3], KEYS[4]) > 0 then
    out[3] = 1
    ring()
  end
else
  local best = next_delayed
  if #out > 3 then next_lease = math.min(next_lease or math.huge, now + lease_ms) end
  if next_lease and (best == nil or next_lease < best) then best = next_lease end
  if best then out[2] = math.max(0, best - now) end
end
return out
"""

# ARGV: a priority digit, then (id, body) * n: messages of that priority, ready now;
#   or "d", then (id, delay_ms, body) * n: delayed messages. Bodies start with their
#   priority digit. -> number stored (an id already in the hash is not stored again)
# The ready path is three calls for the whole chunk (HMGET, HSET, RPUSH), not one HSETNX per
# message: per-call work inside Redis, not the wire, bounds a batch publish.
PUBLISH = """
local mode = ARGV[1]
local new = 0
if mode == 'd' then
  local now = now_ms()
  for i = 2, #ARGV, 3 do
    local id = ARGV[i]
    if redis.call('HSETNX', K_MSG, id, ARGV[i + 2]) == 1 then
      new = new + 1
      redis.call('ZADD', K_DELAYED, now + tonumber(ARGV[i + 1]), id)
    end
  end
else
  local p = tonumber(mode)
  if p == nil or p < 0 or p > 3 or #ARGV % 2 == 0 then
    return redis.error_reply('ERR publish: bad arguments')
  end
  local ids = {}
  for i = 2, #ARGV, 2 do ids[#ids + 1] = ARGV[i] end
  if #ids == 0 then return 0 end
  local have = redis.call('HMGET', K_MSG, unpack(ids))
  local known = false
  for i = 1, #ids do
    if have[i] then known = true break end
  end
  local push = {}
  if known then
    for i = 2, #ARGV, 2 do
      if redis.call('HSETNX', K_MSG, ARGV[i], ARGV[i + 1]) == 1 then push[#push + 1] = ARGV[i] end
    end
  elseif redis.call('HSET', K_MSG, unpack(ARGV, 2)) == #ids then
    push = ids
  else
    -- an id repeats within the call: queue it once, with its first body
    local seen = {}
    for i = 2, #ARGV, 2 do
      local id = ARGV[i]
      if not seen[id] then
        seen[id] = true
        push[#push + 1] = id
        redis.call('HSET', K_MSG, id, ARGV[i + 1])
      end
    end
  end
  new = #push
  if new > 0 then chunked('RPUSH', KEYS[4 - p], push) end
end
if new > 0 then
  redis.call('HINCRBY', K_STATS, 'published', new)
  ring()
end
return new
"""

# ARGV: id, token, max_retries (-1: straight to the DLQ), delay_ms, reason, dlq_max, dlq_age_ms
# -> 1 retried, 0 dead-lettered, -1 stale token (someone else owns the message now)
FAIL = """
local id, token = ARGV[1], ARGV[2]
local max_retries, delay = tonumber(ARGV[3]), tonumber(ARGV[4])
if redis.call('HGET', K_MSG, fl(id)) ~= token then return -1 end
local now = now_ms()
redis.call('ZREM', K_INF, id)
local att, r = counters(token)
r = r + 1
redis.call('HSET', K_MSG, fl(id), unleased(att, r))
redis.call('HINCRBY', K_STATS, 'failed', 1)
if max_retries >= 0 and r <= max_retries then
  redis.call('ZADD', K_DELAYED, now + delay, id)
  redis.call('HINCRBY', K_STATS, 'retried', 1)
  ring()
  return 1
end
to_dlq(id, ARGV[5], now)
trim_dlq(now, tonumber(ARGV[6]), tonumber(ARGV[7]))
return 0
"""

# ARGV: lease_ms, (id, token) * n -> number of leases extended
EXTEND = """
local lease_ms = tonumber(ARGV[1])
local fields = {}
for i = 2, #ARGV, 2 do fields[#fields + 1] = fl(ARGV[i]) end
if #fields == 0 then return 0 end
local cur = redis.call('HMGET', K_MSG, unpack(fields))
local deadline = now_ms() + lease_ms
local n = 0
for i = 1, #fields do
  if cur[i] == ARGV[2 * i + 1] then
    redis.call('ZADD', K_INF, 'XX', deadline, ARGV[2 * i])
    n = n + 1
  end
end
return n
"""

# ARGV: (id, token) * n, in fetch order -> number returned to the front of their ready lists
RELEASE = """
local n = 0
for i = #ARGV - 1, 1, -2 do
  local id, token = ARGV[i], ARGV[i + 1]
  if redis.call('HGET', K_MSG, fl(id)) == token then
    redis.call('ZREM', K_INF, id)
    local att, ret = counters(token)
    redis.call('HSET', K_MSG, fl(id), unleased(math.max(0, att - 1), ret))
    local body = redis.call('HGET', K_MSG, id)
    if body then
      redis.call('LPUSH', ready_key(body), id)
      n = n + 1
    end
  end
end
if n > 0 then ring() end
return n
"""

# ARGV: n -> number moved from the DLQ back to ready (oldest first, retry count reset)
REQUEUE_DLQ = """
local ids = redis.call('ZRANGE', K_DLQ, 0, tonumber(ARGV[1]) - 1)
local moved = 0
for _, id in ipairs(ids) do
  local body = redis.call('HGET', K_MSG, id)
  redis.call('ZREM', K_DLQ, id)
  redis.call('HDEL', K_DLQINFO, id)
  redis.call('HDEL', K_MSG, fl(id))
  if body then
    redis.call('RPUSH', ready_key(body), id)
    moved = moved + 1
  end
end
if moved > 0 then ring() end
return moved
"""

# -> number of DLQ entries removed (bodies included)
PURGE_DLQ = """
local ids = redis.call('ZRANGE', K_DLQ, 0, -1)
if #ids > 0 then
  forget(ids)
  redis.call('DEL', K_DLQ, K_DLQINFO)
end
return #ids
"""

# -> {len ready:3, :2, :1, :0, inflight, delayed, dlq, stats hash as a flat list}
STATS = """
return {
  redis.call('LLEN', KEYS[1]), redis.call('LLEN', KEYS[2]),
  redis.call('LLEN', KEYS[3]), redis.call('LLEN', KEYS[4]),
  redis.call('ZCARD', K_INF), redis.call('ZCARD', K_DELAYED), redis.call('ZCARD', K_DLQ),
  redis.call('HGETALL', K_STATS)
}
"""


class Script:
    """One Lua script called by EVALSHA, loaded again after NOSCRIPT (e.g. a Redis restart)."""

    __slots__ = ("name", "sha", "source")

    def __init__(self, name: str, body: str) -> None:
        self.name = name
        self.source = _PRELUDE + body
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()

    async def __call__(
        self, client: redis.asyncio.Redis, keys: Sequence[str], args: Sequence[Any]
    ) -> Any:
        # script_load, not a raw "SCRIPT LOAD": RedisCluster routes it to every primary
        return await self.run(client.execute_command, keys, args, load=client.script_load)

    async def run(
        self,
        execute: Callable[..., Awaitable[Any]],
        keys: Sequence[str],
        args: Sequence[Any],
        load: Callable[[str], Awaitable[Any]] | None = None,
    ) -> Any:
        """Calls through any `execute(*command)` (redis-py or meetq's RespConnection);
        `load(source)` loads the script after NOSCRIPT (default: SCRIPT LOAD via execute)."""
        command = self.command(keys, args)
        try:
            return await execute(*command)
        except NoScriptError:
            if load is None:
                await execute("SCRIPT", "LOAD", self.source)
            else:
                await load(self.source)
            return await execute(*command)

    def call_sync(self, client: redis.Redis, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """The same call from a thread with a blocking client (the lease renewer)."""
        run: Callable[..., Any] = client.execute_command
        command = self.command(keys, args)
        try:
            return run(*command)
        except NoScriptError:
            run("SCRIPT", "LOAD", self.source)
            return run(*command)

    def command(self, keys: Sequence[str], args: Sequence[Any]) -> tuple[Any, ...]:
        """The EVALSHA command, for a batch that holds other commands too."""
        return ("EVALSHA", self.sha, len(keys), *keys, *args)


dequeue = Script("dequeue", DEQUEUE)
publish = Script("publish", PUBLISH)
fail = Script("fail", FAIL)
extend = Script("extend", EXTEND)
release = Script("release", RELEASE)
requeue_dlq = Script("requeue_dlq", REQUEUE_DLQ)
purge_dlq = Script("purge_dlq", PURGE_DLQ)
stats = Script("stats", STATS)
