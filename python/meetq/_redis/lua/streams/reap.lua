-- reap.lua: Remove a group's dead consumers (idle past the limit, holding nothing).
--
-- Removes a group's dead consumers: idle for longer than the limit and holding nothing
-- (a dead consumer's pending entries are first claimed by the live ones, XAUTOCLAIM).
--
-- KEYS: 1 the topic stream
-- ARGV:
--   ARGV[1] group   ARGV[2] idle limit (ms)   ARGV[3] the calling consumer (never removed)
-- Returns the names removed.

local stream, group = KEYS[1], ARGV[1]
local limit = tonumber(ARGV[2])
local removed = {}
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', stream, group)) do
    local info = {}
    for i = 1, #c, 2 do info[c[i]] = c[i + 1] end
    if info['name'] ~= ARGV[3] and tonumber(info['pending']) == 0
            and tonumber(info['idle']) > limit then
        redis.call('XGROUP', 'DELCONSUMER', stream, group, info['name'])
        removed[#removed + 1] = info['name']
    end
end
return removed
