-- publish.lua: Stores messages that are not stored yet (dedupe on id) and queues them.
--
-- KEYS (every queue script gets all eleven, one hash tag, so it is Cluster-safe):
--   1..4 ready:3 .. ready:0   5 msg   6 inflight   7 delayed   8 dlq   9 dlqinfo
--   10 stats   11 wake
-- ARGV:
--   1 a priority digit, then (id, body) * n: messages of that priority, ready now;
--     or "d", then (id, delay_ms, body) * n: delayed messages.
--   Bodies start with their priority digit.
-- Returns the number stored (an id already in the hash is not stored again).
-- The ready path is three calls for the whole chunk (HMGET, HSET, RPUSH), not one HSETNX
-- per message: per-call work inside Redis, not the wire, bounds a batch publish.
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
  bump('published', new)
  ring()
end
return new
