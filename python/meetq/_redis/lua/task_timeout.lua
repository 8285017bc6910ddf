-- task_timeout.lua: Ends a dispatched task TIMEOUT, only if it has not ended already.
--
-- Run by the dispatcher that owns the task when its deadline passes on the timer wheel
-- (and by get_task_status for a task past its deadline). Atomic against the worker's
-- final outcome script: whichever runs first records the outcome the task keeps. The
-- stored body is marked (first byte "t"), so the queue drops the task unstarted and the
-- worker's final script knows an outcome is recorded.
-- KEYS:
--   1 the task's done hash (meetq:{Q}:done:<second>, the second its id names)
--   2 the queue's msg hash (meetq:{Q}:msg)
-- ARGV:
--   1 the task id  2 error text for the timeout  3 result_ttl_ms
-- Returns {'timeout'} when this call ended the task, {'missing'} when the task is neither
-- queued nor recorded, else {'final', the recorded reply object (JSON)}.
local id = ARGV[1]
local rec = redis.pcall('HGET', KEYS[1], id)
if type(rec) == 'string' then return {'final', rec} end
local body = redis.call('HGET', KEYS[2], id)
if not body then return {'missing'} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local sec = tonumber(string.match(id, '^[^@]*%.(%d+)@'))
if not sec then return redis.error_reply('ERR task_timeout: not a dispatched task id') end
local expires = sec * 1000 + 1000 + tonumber(ARGV[3])
if expires <= now then return {'timeout'} end -- past its record's lifetime: nothing to keep
if type(rec) == 'table' then redis.call('DEL', KEYS[1]) end -- not a hash: not ours
-- marked: the queue drops it unstarted, the worker's final script keeps this outcome
redis.call('HSET', KEYS[2], id, 't' .. string.sub(body, 2))
redis.call('HSET', KEYS[1], id, '{"id":' .. cjson.encode(id)
  .. ',"status":"timeout","result":null,"error":' .. cjson.encode(ARGV[2])
  .. ',"processed_at":' .. string.format('%.6f', now / 1000) .. '}', id .. '\0r', body)
redis.call('PEXPIREAT', KEYS[1], expires)
return {'timeout'}
