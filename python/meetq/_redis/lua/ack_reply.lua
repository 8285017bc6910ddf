-- ack_reply.lua: A successful run of a message with a reply: the reply (RPUSH + PEXPIRE),
-- the dispatcher's status hash and the ack, in one transition.
--
-- KEYS (every queue script gets all eleven, one hash tag, so it is Cluster-safe):
--   1..4 ready:3 .. ready:0   5 msg   6 inflight   7 delayed   8 dlq   9 dlqinfo
--   10 stats   11 wake
-- ARGV:
--   1 id  2 token  3 reply_key (validated by the caller; '' none)  4 result (JSON)
--   5 result_ttl_ms
-- Returns {1} acked, {-1} stale token, {0, error}: the reply could not be written and
-- nothing changed (the caller fails the message like any other failure).
local id, token = ARGV[1], ARGV[2]
if redis.call('HGET', K_MSG, fl(id)) ~= token then return {-1} end
local now = now_ms()
local err = write_outcome(id, ARGV[3], 'completed', ARGV[4], '', now, tonumber(ARGV[5]))
if err then return {0, err} end
redis.call('ZREM', K_INF, id)
forget({id})
bump('processed', 1)
return {1}
