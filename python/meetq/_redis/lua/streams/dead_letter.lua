-- dead_letter.lua: One entry a group gave up on goes to the dead-letter stream, acked for
-- that group only.
--
-- Moves one entry a group gave up on (a handler failed on its last allowed delivery, or
-- its body does not decode) to the topic's dead-letter stream, with the reason, and
-- acknowledges it for that group only: the other services still get it.
--
-- KEYS: 1 the topic stream   2 its dead-letter stream
-- ARGV:
--   ARGV[1] group   ARGV[2] entry id   ARGV[3] reason   ARGV[4] deliveries
--   ARGV[5] dead-letter maxlen (approximate)
--   ARGV[6] "1" to acknowledge with XACKDEL ... ACKED (Redis 8.2+), else XACK
--
-- Returns 1 when the entry was still pending for the group (and is dead-lettered now),
-- 0 when it was not (acknowledged or dead-lettered already: nothing is written).

local stream, dead = KEYS[1], KEYS[2]
local group, id = ARGV[1], ARGV[2]
if #redis.call('XPENDING', stream, group, id, id, 1) == 0 then
    return 0
end
local body = ''
local entry = redis.call('XRANGE', stream, id, id)[1]
if entry then
    local fields = entry[2]
    for i = 1, #fields, 2 do
        if fields[i] == 'd' then body = fields[i + 1] end
    end
end
redis.call('XADD', dead, 'MAXLEN', '~', ARGV[5], '*', 'id', id, 'group', group,
           'reason', ARGV[3], 'deliveries', ARGV[4], 'd', body)
if ARGV[6] == '1' then
    redis.call('XACKDEL', stream, group, 'ACKED', 'IDS', 1, id)
else
    redis.call('XACK', stream, group, id)
end
return 1
