-- fail.lua: A failed run: retry through the delayed set after delay_ms, or to the DLQ.
--
-- KEYS (every queue script gets all eleven, one hash tag, so it is Cluster-safe):
--   1..4 ready:3 .. ready:0   5 msg   6 inflight   7 delayed   8 dlq   9 dlqinfo
--   10 stats   11 wake
-- ARGV:
--   1 id  2 token  3 max_retries (-1: straight to the DLQ)  4 delay_ms  5 reason
--   6 dlq_max  7 dlq_age_ms
--   then, for a message with a reply: 8 reply_key ('' none)  9 result_ttl_ms
--   10 final status ("failed" | "timeout"): the move to the DLQ also writes the reply and
--   records the outcome (record_outcomes)
-- Returns 1 retried, 0 dead-lettered, -1 stale token (someone else owns the message now).
local id, token = ARGV[1], ARGV[2]
local max_retries, delay = tonumber(ARGV[3]), tonumber(ARGV[4])
if redis.call('HGET', K_MSG, fl(id)) ~= token then return -1 end
local now = now_ms()
redis.call('ZREM', K_INF, id)
local att, r = counters(token)
r = r + 1
redis.call('HSET', K_MSG, fl(id), unleased(att, r))
bump('failed', 1)
if max_retries >= 0 and r <= max_retries then
  redis.call('ZADD', K_DELAYED, now + delay, id)
  bump('retried', 1)
  ring()
  return 1
end
local body = redis.call('HGET', K_MSG, id)
to_dlq(id, ARGV[5], now)
if ARGV[8] then
  -- its reply (a reply that cannot be written is not retried from here: the DLQ has the
  -- reason) and the recorded outcome
  local status, ttl, at = ARGV[10] or 'failed', tonumber(ARGV[9]), secs(now)
  local reply = reply_body(id, status, 'null', ARGV[5], at)
  if ARGV[8] ~= '' and valid_reply(ARGV[8]) then
    if type(redis.pcall('RPUSH', ARGV[8], reply)) ~= 'table' then
      redis.call('PEXPIRE', ARGV[8], ttl)
    end
  end
  if body then record_outcomes({{id, status, 'null', ARGV[5], reply, body}}, ttl, now, at) end
end
trim_dlq(now, tonumber(ARGV[6]), tonumber(ARGV[7]))
return 0
