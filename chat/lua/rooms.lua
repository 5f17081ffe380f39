-- KEYS: rooms, reads:<uid>, lobby stream -> {lobby latest id or '', {room JSON, unread, ...}}
local rooms = redis.call('HGETALL', KEYS[1])
local out = {}
for i = 1, #rooms, 2 do
  local last = redis.call('HGET', KEYS[2], rooms[i]) or '0'
  out[#out + 1] = rooms[i + 1]
  out[#out + 1] = redis.call('ZCOUNT', P .. 'room-msgs:' .. rooms[i], '(' .. last, '+inf')
end
return {latest(KEYS[3]), out}
