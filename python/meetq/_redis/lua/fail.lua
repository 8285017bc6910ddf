-- fail.lua: A failed run: retry through the delayed set after delay_ms, or to the DLQ.
--
-- KEYS (every queue script gets all eleven, one hash tag, so it is Cluster-safe):
--   1..4 ready:3 .. ready:0   5 msg   6 inflight   7 delayed   8 dlq   9 dlqinfo
--   10 stats   11 wake
-- ARGV:
--   1 id  2 token  3 max_retries (-1: straight to the DLQ)  4 delay_ms  5 reason
--   6 dlq_max  7 dlq_age_ms
-- Returns 1 retried, 0 dead-lettered, -1 stale token (someone else owns the message now).
local id, token = ARGV[1], ARGV[2]
local max_retries, delay = tonumber(ARGV[3]), tonumber(ARGV[4])
if redis.call('HGET', K_MSG, fl(id)) ~= token then return -1 end
local now = now_ms()
redis.call('ZREM', K_INF, id)
local att, r = counters(token)
r = r + 1
redis.call('HSET', K_MSG, fl(id), unleased(att, r))
redis.call('HINCRBY', K_STATS, 'failed', 1)
if max_retries >= 0 and r <= max_retries then
  redis.call('ZADD', K_DELAYED, now + delay, id)
  redis.call('HINCRBY', K_STATS, 'retried', 1)
  ring()
  return 1
end
to_dlq(id, ARGV[5], now)
trim_dlq(now, tonumber(ARGV[6]), tonumber(ARGV[7]))
return 0
