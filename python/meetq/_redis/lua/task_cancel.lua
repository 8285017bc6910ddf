-- task_cancel.lua: Cancels a dispatched task unless it has ended, and tells its dispatcher.
--
-- The state is durable here: the outcome `cancelled` is recorded (record_outcomes), and the
-- task's stored body (while the queue holds it) is marked: its first byte, the priority
-- digit, becomes "c", so the queue's dequeue drops it instead of delivering it, wherever it
-- waits (ready, delayed, a lease that expires), and a worker running it cancels the run.
-- The PUBLISH only pokes the workers so a running one stops at once.
--
-- KEYS (every queue script gets all eleven, one hash tag, so it is Cluster-safe):
--   1..4 ready:3 .. ready:0   5 msg   6 inflight   7 delayed   8 dlq   9 dlqinfo
--   10 stats   11 wake
--   then, optional: 12 the dispatcher's reply list, as the task's message names it
-- ARGV:
--   1 the task id  2 result_ttl_ms (the record's and the reply list's)  3 the queue's
--   cancel channel
-- Returns 1 when this call cancelled the task, its final status when it had already
-- ended, or false when there is no such task.
local id = ARGV[1]
local key = done_key(id)
if not key then return false end -- not a dispatched task: it has no status to cancel
local rec = redis.pcall('HGET', key, id)
if type(rec) == 'string' then
  local ok, o = pcall(cjson.decode, rec)
  if ok and type(o) == 'table' and type(o.status) == 'string' then return o.status end
  return 'ended'
end
local body = redis.pcall('HGET', K_MSG, id)
if type(body) ~= 'string' then return false end
if marked(body) then return string.byte(body, 1) == 99 and 'cancelled' or 'timeout' end
local now, ttl = now_ms(), tonumber(ARGV[2])
local at = secs(now)
local reply = reply_body(id, 'cancelled', 'null', 'cancelled', at)
redis.call('HSET', K_MSG, id, 'c' .. string.sub(body, 2))
record_outcomes({{id, 'cancelled', 'null', 'cancelled', reply, body}}, ttl, now, at)
if KEYS[12] and valid_reply(KEYS[12]) then
  redis.call('RPUSH', KEYS[12], reply)
  redis.call('PEXPIRE', KEYS[12], ttl)
end
redis.call('PUBLISH', ARGV[3], id)
return 1
