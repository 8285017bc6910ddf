-- prelude.lua: shared by every queue script (prepended when scripts.py loads them).
local K_MSG, K_INF, K_DELAYED, K_DLQ = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local K_DLQINFO, K_STATS, K_WAKE = KEYS[9], KEYS[10], KEYS[11]

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- field id\0l beside the body: "<token seq>:<deliveries>:<retries>" while leased,
-- "-:<deliveries>:<retries>" otherwise (no token can match it), absent = never delivered
local function fl(id) return id .. '\0l' end
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
