-- release.lua: Hands leased messages back to the front of their ready lists (not a delivery).
--
-- KEYS (every queue script gets all eleven, one hash tag, so it is Cluster-safe):
--   1..4 ready:3 .. ready:0   5 msg   6 inflight   7 delayed   8 dlq   9 dlqinfo
--   10 stats   11 wake
-- ARGV:
--   1.. (id, token) * n, in fetch order
-- Returns the number returned to their ready lists.
local n = 0
for i = #ARGV - 1, 1, -2 do
  local id, token = ARGV[i], ARGV[i + 1]
  if redis.call('HGET', K_MSG, fl(id)) == token then
    redis.call('ZREM', K_INF, id)
    local att, ret = counters(token)
    redis.call('HSET', K_MSG, fl(id), unleased(math.max(0, att - 1), ret))
    local body = redis.call('HGET', K_MSG, id)
    if body then
      redis.call('LPUSH', ready_key(body), id)
      n = n + 1
    end
  end
end
if n > 0 then ring() end
return n
