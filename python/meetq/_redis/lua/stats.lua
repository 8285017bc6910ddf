-- stats.lua: Queue depths and counters in one call.
--
-- KEYS (every queue script gets all eleven, one hash tag, so it is Cluster-safe):
--   1..4 ready:3 .. ready:0   5 msg   6 inflight   7 delayed   8 dlq   9 dlqinfo
--   10 stats   11 wake
-- ARGV:
--   (none)
-- Returns {len ready:3, :2, :1, :0, inflight, delayed, dlq, stats hash as a flat list}.
return {
  redis.call('LLEN', KEYS[1]), redis.call('LLEN', KEYS[2]),
  redis.call('LLEN', KEYS[3]), redis.call('LLEN', KEYS[4]),
  redis.call('ZCARD', K_INF), redis.call('ZCARD', K_DELAYED), redis.call('ZCARD', K_DLQ),
  redis.call('HGETALL', K_STATS)
}
