-- purge_dlq.lua: Deletes every DLQ entry and its body.
--
-- KEYS (every queue script gets all eleven, one hash tag, so it is Cluster-safe):
--   1..4 ready:3 .. ready:0   5 msg   6 inflight   7 delayed   8 dlq   9 dlqinfo
--   10 stats   11 wake
-- ARGV:
--   (none)
-- Returns the number of entries removed.
local ids = redis.call('ZRANGE', K_DLQ, 0, -1)
if #ids > 0 then
  forget(ids)
  redis.call('DEL', K_DLQ, K_DLQINFO)
end
return #ids
