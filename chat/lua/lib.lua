-- Chat's Redis store: shared by every script (chat/redis_scripts.py puts it before each one, and
-- shared.backends.lua's stream library before it: sse_append, with the backend's retention).
-- ARGV[1] is the key prefix; each script's own ARGV start at [2].
-- Keys made inside a script (msg:<id>) assume one Redis server, not a Redis Cluster.
local P = ARGV[1]

local function forget(room, id)
  local key = P .. 'msg:' .. id
  local file = redis.call('HGET', key, 'f')
  if file and file ~= '' then redis.call('DEL', P .. 'file:' .. file) end
  redis.call('DEL', key)
  redis.call('ZREM', P .. 'room-msgs:' .. room, id)
end

-- An event on a room's stream: its trimmed messages leave history too (their hash, their place
-- in the room's index, their file).
local function room_append(stream, room, data, event, mark)
  return sse_append(stream, data, event, mark, function(id) forget(room, id) end)
end

local function mark(key, room, id, ttl)
  local cur = tonumber(redis.call('HGET', key, room) or '0')
  if id > cur then redis.call('HSET', key, room, id) end
  redis.call('PEXPIRE', key, ttl)
end

local function latest(stream)
  local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
  if #last > 0 then return last[1][1] end
  return ''
end

-- Rooms: P rooms (name -> JSON), P room-by (name -> "<creator id> <creator address>", user-made
-- rooms only), P room-msgs:<name>. SP is the prefix of the room streams' keys.
local function holder(by)
  local uid, addr = string.match(by, '^(%S*) (%S*)$')
  if addr and addr ~= '' then return 'a:' .. addr end
  return 'u:' .. (uid or by)
end

local function drop_room(name, why, lobby, SP)
  redis.call('HDEL', P .. 'rooms', name)
  redis.call('HDEL', P .. 'room-by', name)
  redis.call('DEL', P .. 'room-msgs:' .. name)
  sse_append(lobby, cjson.encode({name = name, reason = why}), 'room_deleted')
  room_append(SP .. name, name, cjson.encode({room = name, reason = why}), 'deleted')
end

local function idle_since(SP, name)
  return tonumber(string.match(latest(SP .. name), '^(%d+)')) or 0
end
