-- KEYS: rooms, room-by, lobby stream. ARGV[2..]: name, user id, room streams' key prefix
-- -> {1} | {0} no such room | {-1} a default room | {-2} not the creator | {-3, n} n live messages
local name, uid = ARGV[2], ARGV[3]
if redis.call('HEXISTS', KEYS[1], name) == 0 then return {0} end
local by = redis.call('HGET', KEYS[2], name)
if not by then return {-1} end
if string.match(by, '^(%S*) ') ~= uid then return {-2} end
local live = redis.call('ZCARD', P .. 'room-msgs:' .. name)
if live > 0 then return {-3, live} end
drop_room(name, 'deleted', KEYS[3], ARGV[4])
return {1}
