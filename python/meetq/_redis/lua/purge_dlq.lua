-- purge_dlq.lua: Deletes the oldest DLQ entries and their bodies: one page (the caller
-- loops until a page comes back short).
--
-- KEYS (every queue script gets all eleven, one hash tag, so it is Cluster-safe):
--   1..4 ready:3 .. ready:0   5 msg   6 inflight   7 delayed   8 dlq   9 dlqinfo
--   10 stats   11 wake
-- ARGV:
--   1 n (the page size)
-- Returns the number of entries removed.
local ids = redis.call('ZRANGE', K_DLQ, 0, tonumber(ARGV[1]) - 1)
if #ids > 0 then
  forget(ids)
  chunked('ZREM', K_DLQ, ids)
  chunked('HDEL', K_DLQINFO, ids)
end
return #ids
