-- ack_reply.lua: Finished runs, any number in one call: for each, its reply, its recorded
-- outcome (record_outcomes: the dispatcher's task status) and the ack, in one transition.
-- A member is a run that succeeded (status "completed") or a delivery dropped unstarted
-- because its deadline had passed ("timeout"). The worker encodes each member's reply
-- object; the members for one reply list go out as ONE list element, the JSON array of
-- their replies, so a batch costs one RPUSH element and no JSON work in Lua. Members are
-- independent: one that cannot be written changes nothing of its own and the others still
-- complete.
--
-- KEYS (every queue script gets all eleven, one hash tag, so it is Cluster-safe):
--   1..4 ready:3 .. ready:0   5 msg   6 inflight   7 delayed   8 dlq   9 dlqinfo
--   10 stats   11 wake
-- ARGV:
--   1 result_ttl_ms  2 n  3 processed_at (epoch seconds, text: the recorded outcomes' field)
--   then (id, token, reply_key ('' = none), status, result (JSON), error ('' = none),
--   reply (the JSON object pushed to reply_key)) * n
-- Returns one entry per member, in order: 1 acked, -1 stale token (nothing changed), or
-- the error (a string) that kept its reply from being written (nothing changed; the caller
-- fails that member like any other failure).
local ttl, n, at = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local out = {}
local fields = {}
for i = 1, n do
  local id = ARGV[7 * i - 3]
  fields[2 * i - 1] = fl(id)
  fields[2 * i] = id
end
local cur = {}  -- lease token, body of each member
if n > 0 then cur = redis.call('HMGET', K_MSG, unpack(fields)) end
-- the members whose lease is current, grouped by reply list (one element per list)
local lists, order, valid = {}, {}, {['']=true}
for i = 1, n do
  local j = 7 * i - 3
  local reply_key = ARGV[j + 2]
  local ok = valid[reply_key]
  if ok == nil then
    ok = valid_reply(reply_key)
    valid[reply_key] = ok
  end
  if cur[2 * i - 1] ~= ARGV[j + 1] then
    out[i] = -1
  elseif not ok then
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
local done, counts, outcomes = {}, {}, {}
for _, reply_key in ipairs(order) do
  local group = lists[reply_key]
  local err = nil
  if reply_key ~= '' then
    local bodies = {}
    for k, i in ipairs(group) do bodies[k] = ARGV[7 * i + 3] end
    local pushed = redis.pcall('RPUSH', reply_key, '[' .. table.concat(bodies, ',') .. ']')
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
      local j = 7 * i - 3
      local status = ARGV[j + 3]
      local body = cur[2 * i]
      if body then
        outcomes[#outcomes + 1] = {ARGV[j], status, ARGV[j + 4], ARGV[j + 5], ARGV[j + 6], body}
      end
      out[i] = 1
      done[#done + 1] = ARGV[j]
      counts[status] = (counts[status] or 0) + 1
    end
  end
end
if #done > 0 then
  record_outcomes(outcomes, ttl, tonumber(at) * 1000, at)
  chunked('ZREM', K_INF, done)
  forget(done)
  for status, c in pairs(counts) do
    if status == 'completed' then bump('processed', c) else bump(status, c) end
  end
end
return out
