-- KEYS: seq, sent:<uid>:<cmid>, room stream, room-msgs:<room>, reads:<uid>, rooms
-- ARGV[2..]: room, uid, message JSON without its id, file id or '', sent ttl ms, reads ttl ms
-- -> {0, id} already sent | {-1} the upload is gone | {-2} no such room | {1, id, json}
--
-- The room is checked here, not only from an instance's cache: a Redis that lost its data has
-- lost the room too (issue 13.3). A missing seq starts at Redis's clock in milliseconds, not at
-- 0: after a loss, ids 1, 2, ... would name messages again that live pages still hold.
local room, uid, body, file = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local old = redis.call('GET', KEYS[2])
if old then return {0, old} end
if redis.call('HEXISTS', KEYS[6], room) == 0 then return {-2} end
local fkey = P .. 'file:' .. file
if file ~= '' and redis.call('EXISTS', fkey) == 0 then return {-1} end
if redis.call('EXISTS', KEYS[1]) == 0 then
  local now = redis.call('TIME')
  redis.call('SET', KEYS[1], string.format('%d', tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)))
end
local id = redis.call('INCR', KEYS[1])
local sid = string.format('%d', id)
local json = '{"id":' .. sid .. ',' .. string.sub(body, 2)
redis.call('HSET', P .. 'msg:' .. sid, 'j', json, 'v', 1, 'room', room, 'a', uid, 'f', file)
redis.call('SET', KEYS[2], sid, 'PX', ARGV[6])
redis.call('ZADD', KEYS[4], id, sid)
if file ~= '' then
  redis.call('HSET', fkey, 'msg', sid)
  redis.call('PERSIST', fkey)
end
room_append(KEYS[3], room, json, 'message', sid)
mark(KEYS[5], room, id, ARGV[7])
return {1, sid, json}
