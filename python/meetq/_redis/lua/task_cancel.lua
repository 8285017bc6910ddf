-- task_cancel.lua: Cancels a dispatched task unless it has ended, and tells its dispatcher.
--
-- The state is durable here: a pending task is dropped by the queue's dequeue when it sees
-- status 'cancelled'; the PUBLISH only pokes the workers so a running one stops at once.
-- KEYS:
--   1 the task's status hash (meetq:{Q}:status:<id>)
--   2 (optional) the dispatcher's reply list, as the hash's reply_to names it
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
if KEYS[2] and redis.call('HGET', KEYS[1], 'reply_to') == KEYS[2] then
  redis.call('RPUSH', KEYS[2], cjson.encode({id = ARGV[1], status = 'cancelled',
    error = 'cancelled', processed_at = now}))
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
redis.call('PUBLISH', ARGV[3], ARGV[1])
return 1
