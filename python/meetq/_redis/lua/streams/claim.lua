-- claim.lua: XAUTOCLAIM a group's entries idle past min_idle (a dead or wedged consumer's);
-- those delivered more than max_deliveries times go to the dead-letter stream instead.
--
-- KEYS: 1 the topic stream   2 its dead-letter stream
-- ARGV:
--   ARGV[1] group      ARGV[2] consumer       ARGV[3] min idle (ms)   ARGV[4] cursor
--   ARGV[5] count      ARGV[6] max deliveries ARGV[7] dead-letter maxlen (approximate)
--   ARGV[8] "1" to acknowledge with XACKDEL ... ACKED (Redis 8.2+), else XACK
--
-- Returns {next cursor, {{id, deliveries, {field, value, ...}}, ...}, dead-lettered count}.
-- Entries deleted from the stream while pending are dropped from the group by XAUTOCLAIM.

local stream, dead = KEYS[1], KEYS[2]
local group, consumer = ARGV[1], ARGV[2]
local max_deliveries = tonumber(ARGV[6])
local claimed = redis.call('XAUTOCLAIM', stream, group, consumer, ARGV[3], ARGV[4],
                           'COUNT', ARGV[5])
local out, dead_count = {}, 0
for _, entry in ipairs(claimed[2]) do
    local id, fields = entry[1], entry[2]
    local info = redis.call('XPENDING', stream, group, id, id, 1)[1]
    local deliveries = info and tonumber(info[4]) or 1
    if deliveries > max_deliveries then
        local body = ''
        for i = 1, #fields, 2 do
            if fields[i] == 'd' then body = fields[i + 1] end
        end
        redis.call('XADD', dead, 'MAXLEN', '~', ARGV[7], '*', 'id', id, 'group', group,
                   'reason', 'not acknowledged after ' .. (deliveries - 1) ..
                   ' deliveries (its consumers died or hung)',
                   'deliveries', deliveries - 1, 'd', body)
        if ARGV[8] == '1' then
            redis.call('XACKDEL', stream, group, 'ACKED', 'IDS', 1, id)
        else
            redis.call('XACK', stream, group, id)
        end
        dead_count = dead_count + 1
    else
        out[#out + 1] = {id, deliveries, fields}
    end
end
return {claimed[1], out, dead_count}
