-- task_timeout.lua: Ends a dispatched task TIMEOUT, only if no outcome is recorded yet.
--
-- Run by the dispatcher that owns the task when its deadline passes on the timer wheel
-- (and by get_task_status for a task past its deadline). Atomic against the worker's
-- final outcome script: whichever runs first records the outcome the task keeps. The
-- stored body is marked (first byte "t"), so the queue drops the task unstarted and the
-- worker's final script knows an outcome is recorded (record_outcomes).
--
-- KEYS (every queue script gets all eleven, one hash tag, so it is Cluster-safe):
--   1..4 ready:3 .. ready:0   5 msg   6 inflight   7 delayed   8 dlq   9 dlqinfo
--   10 stats   11 wake
-- ARGV:
--   1 the task id  2 error text for the timeout  3 result_ttl_ms
-- Returns {'timeout'} when this call ended the task, {'missing'} when the task is neither
-- queued nor recorded, else {'final', the recorded reply object (JSON)}.
local id = ARGV[1]
local key = done_key(id)
if not key then return redis.error_reply('ERR task_timeout: not a dispatched task id') end
local rec = redis.pcall('HGET', key, id)
if type(rec) == 'string' then return {'final', rec} end
local body = redis.call('HGET', K_MSG, id)
if not body then return {'missing'} end
local now = now_ms()
redis.call('HSET', K_MSG, id, 't' .. string.sub(body, 2))
record_outcomes({{id, 'timeout', 'null', ARGV[2], nil, body}}, tonumber(ARGV[3]), now, secs(now))
return {'timeout'}
