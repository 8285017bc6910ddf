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

-- the doorbell; a foreign value in its key is replaced (it is ours, and holds no data)
local function ring()
  local n = redis.pcall('LLEN', K_WAKE)
  if type(n) == 'table' then
    redis.call('DEL', K_WAKE)
    n = 0
  end
  if n == 0 then redis.call('RPUSH', K_WAKE, '1') end
end

-- a counter in `stats`; garbage a foreign client wrote there is replaced, not fatal
local function bump(field, n)
  local v = redis.pcall('HINCRBY', K_STATS, field, n)
  if type(v) == 'table' then
    if redis.call('TYPE', K_STATS).ok ~= 'hash' then redis.call('DEL', K_STATS) end
    -- the token sequence restarts above anything the old one can have reached
    if field == 'seq' then n = now_ms() * 1000 + n end
    redis.call('HSET', K_STATS, field, n)
    return n
  end
  return v
end

local function chunked(cmd, key, list)
  for i = 1, #list, 1000 do
    redis.call(cmd, key, unpack(list, i, math.min(i + 999, #list)))
  end
end

-- replies and task outcomes: keys of this queue's hash slot
local PREFIX = string.sub(K_MSG, 1, #K_MSG - 3)
local FINAL = {completed = true, failed = true, timeout = true, cancelled = true}

-- reply_to may only name a reply key of this queue: PREFIX .. 'reply:' .. [A-Za-z0-9._-]{1,100}
local function valid_reply(key)
  if type(key) ~= 'string' then return false end
  local head = PREFIX .. 'reply:'
  if string.sub(key, 1, #head) ~= head then return false end
  local name = string.sub(key, #head + 1)
  return #name >= 1 and #name <= 100 and string.match(name, '^[%w%._%-]+$') ~= nil
end

local function secs(ms) return string.format('%.3f', ms / 1000) end

-- the reply body of `id`'s final outcome (err '' = none); `at`: processed_at as text
local function reply_body(id, status, result_json, err, at)
  local e = cjson.null
  if err ~= '' then e = err end
  return '{"id":' .. cjson.encode(id) .. ',"status":"' .. status .. '","result":'
    .. result_json .. ',"error":' .. cjson.encode(e) .. ',"processed_at":' .. at .. '}'
end

-- A dispatched task's final outcome is recorded in the `done:<second>` hash of its
-- deadline's second, which its id names (<unique>.<second>@<queue>): field id -> its
-- reply object, field id\0r -> the stored body (the request). No key per task: a batch
-- of outcomes is one HLEN, HSET and PEXPIREAT per second of deadlines. The hash expires
-- result_ttl after that second (a task's outcome outlives its deadline by at least
-- result_ttl). An id that names no second (not a dispatcher's) records nothing.
-- Whoever records an outcome while the body is stored marks the body (its first byte,
-- the priority digit, becomes "c" for a cancel, "t" for a timeout), so the final script
-- reads a record only for a marked body: a digit means none exists.
local function done_key(id)
  local sec = string.match(id, '^[^@]*%.(%d+)@')
  if sec then return PREFIX .. 'done:' .. sec, tonumber(sec) * 1000 end
  return nil, nil
end

-- whether a stored body is marked: an outcome (cancel, timeout) is recorded already
local function marked(body)
  local b = string.byte(body, 1)
  return b == 99 or b == 116
end

-- the record of a late outcome where one is already recorded: the first final status
-- stays (a result after a timeout or cancel is recorded under it), the rest is the new one
local function kept(old, id, result_json, err, at)
  local ok, o = pcall(cjson.decode, old)
  if not ok or type(o) ~= 'table' or not FINAL[o.status] then return nil end
  if err == '' and type(o.error) == 'string' then err = o.error end
  return reply_body(id, o.status, result_json, err, at)
end

-- records outcomes {id, status, result_json, err, reply (or nil), body} (one HSET and
-- PEXPIREAT per done hash), each unless its hash has expired; `at` processed_at (text)
local function record_outcomes(outcomes, ttl_ms, now, at)
  local groups, order = {}, {}
  for _, o in ipairs(outcomes) do
    local key, base = done_key(o[1])
    if key and base + 1000 + ttl_ms > now then
      local g = groups[key]
      if not g then
        g = {expires = base + 1000 + ttl_ms}
        groups[key] = g
        order[#order + 1] = key
      end
      g[#g + 1] = o
    end
  end
  for _, key in ipairs(order) do
    local g = groups[key]
    local f = {}
    for _, o in ipairs(g) do
      local rec = nil
      if marked(o[6]) then
        local old = redis.pcall('HGET', key, o[1])
        if type(old) == 'string' then rec = kept(old, o[1], o[3], o[4], at) end
      end
      f[#f + 1] = o[1]
      f[#f + 1] = rec or o[5] or reply_body(o[1], o[2], o[3], o[4], at)
      f[#f + 1] = o[1] .. '\0r'
      f[#f + 1] = o[6]
    end
    if type(redis.pcall('HLEN', key)) == 'table' then
      redis.call('DEL', key) -- not a hash (a foreign value): replaced
    end
    chunked('HSET', key, f)
    redis.call('PEXPIREAT', key, g.expires)
  end
end

-- the stored message as a table (json or msgpack), or nil
local function decoded(body)
  local raw = string.sub(body, 2)
  local ok, m = pcall(cjson.decode, raw)
  if not ok then ok, m = pcall(cmsgpack.unpack, raw) end
  if ok and type(m) == 'table' then return m end
  return nil
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
  bump('dead_letter', 1)
end
