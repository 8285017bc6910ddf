-- ack_reply.lua: Successful runs of messages with a reply, any number in one call: for each,
-- the reply (RPUSH + PEXPIRE), the dispatcher's status hash and the ack, in one
-- transition. Members are independent: one that cannot be written changes nothing of its
-- own and the others still complete.
--
-- KEYS (every queue script gets all eleven, one hash tag, so it is Cluster-safe):
--   1..4 ready:3 .. ready:0   5 msg   6 inflight   7 delayed   8 dlq   9 dlqinfo
--   10 stats   11 wake
-- ARGV:
--   1 result_ttl_ms  2 n
--   then (id, token, reply_key, result (JSON)) * n
-- Returns one entry per member, in order: 1 acked, -1 stale token (nothing changed), or
-- the error (a string) that kept its reply from being written (nothing changed; the caller
-- fails that member like any other failure).
local ttl, n = tonumber(ARGV[1]), tonumber(ARGV[2])
local now = now_ms()
local out = {}
local fields = {}
for i = 1, n do fields[i] = fl(ARGV[4 * i - 1]) end
local cur = {}
if n > 0 then cur = redis.call('HMGET', K_MSG, unpack(fields)) end
-- the members whose lease is current, grouped by reply list (one RPUSH per list)
local lists, order = {}, {}
for i = 1, n do
  local j = 4 * i - 1
  local reply_key = ARGV[j + 2]
  if cur[i] ~= ARGV[j + 1] then
    out[i] = -1
  elseif reply_key ~= '' and not valid_reply(reply_key) then
    out[i] = 'invalid reply_to'
  else
    local group = lists[reply_key]
    if not group then
      group = {}
      lists[reply_key] = group
      order[#order + 1] = reply_key
    end
    group[#group + 1] = i
  end
end
local done = {}
for _, reply_key in ipairs(order) do
  local group = lists[reply_key]
  local err = nil
  if reply_key ~= '' then
    local bodies = {}
    for k, i in ipairs(group) do
      local j = 4 * i - 1
      bodies[k] = reply_body(ARGV[j], 'completed', ARGV[j + 3], '', now)
    end
    local pushed = redis.pcall('RPUSH', reply_key, unpack(bodies))
    if type(pushed) == 'table' then
      err = pushed.err or 'reply not written'
    else
      redis.call('PEXPIRE', reply_key, ttl)
    end
  end
  for _, i in ipairs(group) do
    if err then
      out[i] = err
    else
      local j = 4 * i - 1
      write_status(ARGV[j], 'completed', ARGV[j + 3], '', now)
      out[i] = 1
      done[#done + 1] = ARGV[j]
    end
  end
end
if #done > 0 then
  chunked('ZREM', K_INF, done)
  forget(done)
  bump('processed', #done)
end
return out
