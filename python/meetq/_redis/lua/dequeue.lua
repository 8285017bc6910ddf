-- dequeue.lua: Leases up to n ready ids in strict priority after applying the acks of finished
-- handlers, promoting due delayed messages and expired leases (back to the front of their
-- lists in the order they were first handed out). An id whose body task_cancel.lua or
-- task_timeout.lua marked (first byte "c" or "t" instead of the priority digit) is
-- finished here instead of delivered; it costs nothing per task otherwise: no task status
-- is read here (a deadline travels in the message, and the worker drops a delivery past it
-- unstarted).
--
-- KEYS (every queue script gets all eleven, one hash tag, so it is Cluster-safe):
--   1..4 ready:3 .. ready:0   5 msg   6 inflight   7 delayed   8 dlq   9 dlqinfo
--   10 stats   11 wake
-- ARGV:
--   1 n (ids to lease; 0 = only apply the acks)  2 lease_ms  3 max_deliveries
--   4 dlq_max  5 dlq_age_ms  6 n_acks  7.. (id, token) * n_acks
--   then, optional: result_ttl_ms (unused; kept so callers of either version agree)
-- Returns {acked, wait_ms (-1: nothing scheduled), more, (id, token, deliveries, retries, body) *}
-- where body is the stored body: the priority digit, then the encoded message.
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
    bump('processed', #done)
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
  local back = {}
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
      back[#back + 1] = {tonumber(string.match(c[2] or '', '^(%d+):')) or 0, id, c[1]}
    end
  end
  -- back to the front of their lists in the order they were handed out (a token's first
  -- field rises with every delivery), not in the zset's order of equal deadlines
  table.sort(back, function(a, b) return a[1] < b[1] end)
  for i = #back, 1, -1 do redis.call('LPUSH', ready_key(back[i][3]), back[i][2]) end
  next_lease = earliest(K_INF)
end

-- Best ready ids first. LMPOP (Redis >= 7) pops from the first non-empty list, so a
-- message of one priority costs two calls instead of four LPOPs; a list holding something
-- other than ids makes LMPOP fail, and the per-list LPOPs then skip just that list. A
-- replica refuses the pops (READONLY): that is returned as the error it is, or a fetcher
-- still connected to a demoted primary would take the refusal for an empty queue forever.
local function demoted(got)
  return type(got) == 'table' and got.err and string.find(got.err, 'READONLY', 1, true) == 1
end
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
    if demoted(got) then return got end
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
  if demoted(got) then return got end
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
  local seq = bump('seq', #ids) - #ids
  local deadline = string.format('%d', now + lease_ms)
  local zargs, hargs, cancelled, expired = {}, {}, {}, {}
  for i, id in ipairs(ids) do
    local body = got[2 * i - 1]
    if body and marked(body) then
      -- "c": cancelled, "t": timed out before it started (the outcome is recorded, the
      -- reply sent by task_cancel / the timeout's own dispatcher)
      local kind = string.byte(body, 1) == 99 and cancelled or expired
      kind[#kind + 1] = id
    elseif body then
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
      out[#out + 1] = body -- whole: the caller skips the digit (a copy here costs more)
    else
      to_dlq(id, 'missing body (ready entry without a stored message)', now)
      died = true
    end
  end
  if #zargs > 0 then
    chunked('ZADD', K_INF, zargs)
    chunked('HSET', K_MSG, hargs)
  end
  if #cancelled > 0 then
    forget(cancelled)
    bump('cancelled', #cancelled)
  end
  if #expired > 0 then
    forget(expired)
    bump('timeout', #expired)
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
