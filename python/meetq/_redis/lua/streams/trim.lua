-- trim.lua: Trim a topic stream behind everything its groups still need.
--
-- Trims a topic stream behind everything a group still needs: for each group, its oldest
-- pending entry, or (nothing pending) the entry after the last one it was handed. Entries
-- older than the minimum over all groups were acknowledged by every group. Approximate
-- (`~`): only whole stream nodes go, so an entry still needed is never removed. A stream
-- without groups is left alone. (Redis 8.2+ does this per ack with XACKDEL ... ACKED.)
--
-- KEYS: 1 the topic stream
-- ARGV: none
-- Returns the number of entries removed.

local stream = KEYS[1]
local groups = redis.call('XINFO', 'GROUPS', stream)
if #groups == 0 then
    return 0
end
local best_ms, best_seq = nil, nil
for _, g in ipairs(groups) do
    local info = {}
    for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
    local ms, seq
    if tonumber(info['pending']) > 0 then
        local oldest = redis.call('XPENDING', stream, info['name'])[2]
        local a, b = string.match(oldest, '^(%d+)-(%d+)$')
        ms, seq = tonumber(a), tonumber(b)
    else
        local a, b = string.match(info['last-delivered-id'], '^(%d+)-(%d+)$')
        ms, seq = tonumber(a), tonumber(b) + 1
    end
    if best_ms == nil or ms < best_ms or (ms == best_ms and seq < best_seq) then
        best_ms, best_seq = ms, seq
    end
end
return redis.call('XTRIM', stream, 'MINID', '~', string.format('%d-%d', best_ms, best_seq))
