-- requeue_dlq.lua: Moves the oldest DLQ entries back to ready, retry count reset: one page
-- (the caller loops, so a large DLQ never blocks Redis for long).
--
-- KEYS (every queue script gets all eleven, one hash tag, so it is Cluster-safe):
--   1..4 ready:3 .. ready:0   5 msg   6 inflight   7 delayed   8 dlq   9 dlqinfo
--   10 stats   11 wake
-- ARGV:
--   1 n (the page size)
-- Returns {moved back to ready, entries taken off the DLQ (moved or without a body)}.
local ids = redis.call('ZRANGE', K_DLQ, 0, tonumber(ARGV[1]) - 1)
local moved = 0
for _, id in ipairs(ids) do
  local body = redis.call('HGET', K_MSG, id)
  redis.call('ZREM', K_DLQ, id)
  redis.call('HDEL', K_DLQINFO, id)
  redis.call('HDEL', K_MSG, fl(id))
  if body then
    redis.call('RPUSH', ready_key(body), id)
    moved = moved + 1
  end
end
if moved > 0 then ring() end
return {moved, #ids}
