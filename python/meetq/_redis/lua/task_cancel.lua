-- task_cancel.lua: Cancels a dispatched task unless it has ended, and tells its dispatcher.
--
-- The state is durable here: the status hash says cancelled, and the task's stored body
-- (while the queue holds it) is marked: its first byte, the priority digit, becomes "c",
-- so the queue's dequeue drops it instead of delivering it, wherever it waits (ready,
-- delayed, a lease that expires). The PUBLISH only pokes the workers so a running one
-- stops at once.
-- KEYS:
--   1 the task's status hash (meetq:{Q}:status:<id>)
--   2 the queue's msg hash (meetq:{Q}:msg)
--   3 (optional) the dispatcher's reply list, as the hash's reply_to names it
-- ARGV:
--   1 the task id  2 reply list TTL (ms)  3 the queue's cancel channel
-- Returns 1 when this call cancelled the task, its final status when it had already
-- ended, or false when there is no such task.
local s = redis.call('HGET', KEYS[1], 'status')
if not s then return false end
if s == 'completed' or s == 'failed' or s == 'timeout' or s == 'cancelled' then
  return s
end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('HSET', KEYS[1], 'status', 'cancelled', 'error', 'cancelled',
  'processed_at', string.format('%.6f', now))
local body = redis.pcall('HGET', KEYS[2], ARGV[1])
if type(body) == 'string' and string.byte(body, 1) ~= 99 then
  redis.call('HSET', KEYS[2], ARGV[1], 'c' .. string.sub(body, 2))
end
if KEYS[3] and redis.call('HGET', KEYS[1], 'reply_to') == KEYS[3] then
  redis.call('RPUSH', KEYS[3], cjson.encode({id = ARGV[1], status = 'cancelled',
    error = 'cancelled', processed_at = now}))
  redis.call('PEXPIRE', KEYS[3], ARGV[2])
end
redis.call('PUBLISH', ARGV[3], ARGV[1])
return 1
