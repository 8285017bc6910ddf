-- task_timeout.lua: Ends a dispatched task TIMEOUT, only if it has not ended already.
--
-- Run by the dispatcher that owns the task when its deadline passes on the timer wheel
-- (and by get_task_status for a task past its deadline). Atomic against the worker's
-- final outcome script: whichever runs first decides the status.
-- KEYS:
--   1 the task's status hash (meetq:{Q}:status:<id>)
-- ARGV:
--   1 error text for the timeout
-- Returns {'timeout'} when this call ended the task, {'missing'} when there is no such
-- hash, else {status, result, error, processed_at} of the outcome that came first.
local s = redis.call('HGET', KEYS[1], 'status')
if not s then return {'missing'} end
if s == 'completed' or s == 'failed' or s == 'timeout' or s == 'cancelled' then
  local f = redis.call('HMGET', KEYS[1], 'result', 'error', 'processed_at')
  return {s, f[1] or false, f[2] or false, f[3] or false}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('HSET', KEYS[1], 'status', 'timeout', 'error', ARGV[1],
  'processed_at', string.format('%.6f', now))
return {'timeout'}
