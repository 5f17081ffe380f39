-- KEYS: msg:<id>, room stream, room-msgs:<room>
-- ARGV[2..]: room, id, expected version, new JSON, event, event JSON, '1' if this deletes it
-- -> 1 done | 0 the version moved on (someone else changed it first: read again and retry)
local room, id = ARGV[2], ARGV[3]
if redis.call('HGET', KEYS[1], 'v') ~= ARGV[4] then return 0 end
redis.call('HSET', KEYS[1], 'j', ARGV[5], 'v', tonumber(ARGV[4]) + 1)
if ARGV[8] == '1' then
  redis.call('ZREM', KEYS[3], id)
  local file = redis.call('HGET', KEYS[1], 'f')
  if file and file ~= '' then redis.call('DEL', P .. 'file:' .. file) end
end
room_append(KEYS[2], room, ARGV[7], ARGV[6])
return 1
