-- KEYS: room-msgs:<room>, room stream, reads:<uid>
-- ARGV[2..]: room, before (exclusive), limit -> {latest id or '', last read, {JSON...}} newest first
local ids = redis.call('ZREVRANGEBYSCORE', KEYS[1], '(' .. ARGV[3], '-inf', 'LIMIT', 0, tonumber(ARGV[4]) + 1)
local out = {}
for i, id in ipairs(ids) do out[i] = redis.call('HGET', P .. 'msg:' .. id, 'j') or '' end
return {latest(KEYS[2]), redis.call('HGET', KEYS[3], ARGV[2]) or '0', out}
