-- extend.lua: Extends the leases whose token is still current.
--
-- KEYS (every queue script gets all eleven, one hash tag, so it is Cluster-safe):
--   1..4 ready:3 .. ready:0   5 msg   6 inflight   7 delayed   8 dlq   9 dlqinfo
--   10 stats   11 wake
-- ARGV:
--   1 lease_ms  2.. (id, token) * n
-- Returns the ids whose token is not current (their lease is lost: someone else has them).
local lease_ms = tonumber(ARGV[1])
local fields = {}
for i = 2, #ARGV, 2 do fields[#fields + 1] = fl(ARGV[i]) end
if #fields == 0 then return {} end
local cur = redis.call('HMGET', K_MSG, unpack(fields))
local deadline = now_ms() + lease_ms
local lost = {}
for i = 1, #fields do
  if cur[i] == ARGV[2 * i + 1] then
    redis.call('ZADD', K_INF, 'XX', deadline, ARGV[2 * i])
  else
    lost[#lost + 1] = ARGV[2 * i]
  end
end
return lost
