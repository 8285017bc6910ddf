-- task_cancel.lua: Cancels a dispatched task unless it has ended, and tells its dispatcher.
--
-- The state is durable here: the outcome `cancelled` is recorded in the task's done hash,
-- and the task's stored body (while the queue holds it) is marked: its first byte, the
-- priority digit, becomes "c", so the queue's dequeue drops it instead of delivering it,
-- wherever it waits (ready, delayed, a lease that expires), and a worker running it
-- cancels the run. The PUBLISH only pokes the workers so a running one stops at once.
-- KEYS:
--   1 the task's done hash (meetq:{Q}:done:<second>, the second its id names)
--   2 the queue's msg hash (meetq:{Q}:msg)
--   3 (optional) the dispatcher's reply list, as the task's message names it
-- ARGV:
--   1 the task id  2 result_ttl_ms (the record's and the reply list's)  3 the queue's
--   cancel channel
-- Returns 1 when this call cancelled the task, its final status when it had already
-- ended, or false when there is no such task.
local id = ARGV[1]
local rec = redis.pcall('HGET', KEYS[1], id)
if type(rec) == 'string' then
  local ok, o = pcall(cjson.decode, rec)
  if ok and type(o) == 'table' and type(o.status) == 'string' then return o.status end
  return 'ended'
end
local body = redis.pcall('HGET', KEYS[2], id)
if type(body) ~= 'string' then return false end
if string.byte(body, 1) == 99 then return 'cancelled' end
local sec = tonumber(string.match(id, '^[^@]*%.(%d+)@'))
if not sec then return false end -- not a dispatched task: it has no status to cancel
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local ttl = tonumber(ARGV[2])
redis.call('HSET', KEYS[2], id, 'c' .. string.sub(body, 2))
local reply = '{"id":' .. cjson.encode(id) .. ',"status":"cancelled","result":null,'
  .. '"error":"cancelled","processed_at":' .. string.format('%.6f', now / 1000) .. '}'
local expires = sec * 1000 + 1000 + ttl
if expires > now then
  if type(rec) == 'table' then redis.call('DEL', KEYS[1]) end -- not a hash: not ours
  redis.call('HSET', KEYS[1], id, reply, id .. '\0r', body)
  redis.call('PEXPIREAT', KEYS[1], expires)
end
local head = string.sub(KEYS[2], 1, #KEYS[2] - 3) .. 'reply:'
local name = KEYS[3] and string.sub(KEYS[3], #head + 1)
if name and string.sub(KEYS[3], 1, #head) == head and #name >= 1 and #name <= 100
    and string.match(name, '^[%w%._%-]+$') then
  redis.call('RPUSH', KEYS[3], reply)
  redis.call('PEXPIRE', KEYS[3], ttl)
end
redis.call('PUBLISH', ARGV[3], id)
return 1
