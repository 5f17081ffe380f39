"""The Lua scripts of the Redis store: each change is one script, so it happens entirely or not at all.

A script runs atomically, and with ``appendonly yes`` + ``appendfsync always`` Redis writes it
to disk before it answers: a 201 means the message, its idempotency key and its event are
all stored; a 503 (Redis unreachable) means none of them were, or (reply lost) all were and a
retry with the same ``client_msg_id`` finds them.

Every script appends its event with the same retention as ``shared.backends.redis`` (trim in
batches with ``XTRIM MINID``, record the last trimmed id with ``XSETID ... MAXDELETEDID``), so
the hub's resume checks hold; a message whose ``message`` event is trimmed leaves history (its
hash, its place in the room's index and its file go with it).

Common ARGV: ``[1]`` key prefix, ``[2]`` maxlen, ``[3]`` trim slack; script-specific from ``[4]``.
Keys made inside a script (``msg:<id>``) assume one Redis server, not a Redis Cluster.
"""

from __future__ import annotations

__all__ = [
    "CHANGE",
    "CREATE_ROOM",
    "DELETE_ROOM",
    "EXPIRE_ROOMS",
    "HELLO",
    "HISTORY",
    "MARK_READ",
    "POST",
    "ROOMS",
    "START_READING",
]

_LIB = """
local P, MAXLEN, SLACK = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])

local function forget(room, id)
  local key = P .. 'msg:' .. id
  local file = redis.call('HGET', key, 'f')
  if file and file ~= '' then redis.call('DEL', P .. 'file:' .. file) end
  redis.call('DEL', key)
  redis.call('ZREM', P .. 'room-msgs:' .. room, id)
end

local function append(stream, room, fields)
  local id = redis.call('XADD', stream, '*', unpack(fields))
  local len = redis.call('XLEN', stream)
  if len > MAXLEN + SLACK then
    local drop = len - MAXLEN
    local head = redis.call('XRANGE', stream, '-', '+', 'COUNT', drop + 1)
    if room ~= '' then
      for i = 1, drop do
        local f = head[i][2]
        for j = 1, #f, 2 do
          if f[j] == 'm' then forget(room, f[j + 1]) end
        end
      end
    end
    redis.call('XTRIM', stream, 'MINID', head[drop + 1][1])
    redis.call('XSETID', stream, id, 'MAXDELETEDID', head[drop][1])
  end
  return id
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
  append(lobby, '', {'d', cjson.encode({name = name, reason = why}), 'e', 'room_deleted'})
  append(SP .. name, name, {'d', cjson.encode({room = name, reason = why}), 'e', 'deleted'})
end

local function idle_since(SP, name)
  return tonumber(string.match(latest(SP .. name), '^(%d+)')) or 0
end
"""

# KEYS: seq, sent:<uid>:<cmid>, room stream, room-msgs:<room>, reads:<uid>, rooms
# ARGV[4..]: room, uid, message JSON without its id, file id or '', sent ttl ms, reads ttl ms
# -> {0, id} already sent | {-1} the upload is gone | {-2} no such room | {1, id, json}
#
# The room is checked here, not only from an instance's cache: a Redis that lost its data has
# lost the room too (issue 13.3). A missing seq starts at Redis's clock in milliseconds, not at
# 0: after a loss, ids 1, 2, ... would name messages again that live pages still hold.
POST = (
    _LIB
    + """
local room, uid, body, file = ARGV[4], ARGV[5], ARGV[6], ARGV[7]
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
redis.call('SET', KEYS[2], sid, 'PX', ARGV[8])
redis.call('ZADD', KEYS[4], id, sid)
if file ~= '' then
  redis.call('HSET', fkey, 'msg', sid)
  redis.call('PERSIST', fkey)
end
append(KEYS[3], room, {'d', json, 'e', 'message', 'm', sid})
mark(KEYS[5], room, id, ARGV[9])
return {1, sid, json}
"""
)

# KEYS: msg:<id>, room stream, room-msgs:<room>
# ARGV[4..]: room, id, expected version, new JSON, event, event JSON, '1' if this deletes it
# -> 1 done | 0 the version moved on (someone else changed it first: read again and retry)
CHANGE = (
    _LIB
    + """
local room, id = ARGV[4], ARGV[5]
if redis.call('HGET', KEYS[1], 'v') ~= ARGV[6] then return 0 end
redis.call('HSET', KEYS[1], 'j', ARGV[7], 'v', tonumber(ARGV[6]) + 1)
if ARGV[10] == '1' then
  redis.call('ZREM', KEYS[3], id)
  local file = redis.call('HGET', KEYS[1], 'f')
  if file and file ~= '' then redis.call('DEL', P .. 'file:' .. file) end
end
append(KEYS[2], room, {'d', ARGV[9], 'e', ARGV[8]})
return 1
"""
)

# KEYS: rooms, lobby stream, room stream, room-by
# ARGV[4..]: name, room JSON, created JSON, max rooms (0: no limit), creator id ('' for a default
# room), creator address, rooms per person, rooms per address, room streams' key prefix
# -> {1, reclaimed room or ''} | {-1} exists | {-2, count} full | {-3, n} person's | {-4, n} address's
CREATE_ROOM = (
    _LIB
    + """
local name, limit, uid, addr, SP = ARGV[4], tonumber(ARGV[7]), ARGV[8], ARGV[9], ARGV[12]
if redis.call('HEXISTS', KEYS[1], name) == 1 then return {-1} end
local by = redis.call('HGETALL', KEYS[4])
local mine, theirs, held = 0, 0, {}
for i = 1, #by, 2 do
  local u, a = string.match(by[i + 1], '^(%S*) (%S*)$')
  if uid ~= '' and u == uid then mine = mine + 1 end
  if addr ~= '' and a == addr then theirs = theirs + 1 end
  local h = holder(by[i + 1])
  held[h] = (held[h] or 0) + 1
end
if uid ~= '' and mine >= tonumber(ARGV[10]) then return {-3, mine} end
if addr ~= '' and theirs >= tonumber(ARGV[11]) then return {-4, theirs} end
local count = redis.call('HLEN', KEYS[1])
local reclaimed = ''
if limit > 0 and count >= limit then
  if mine > 0 or theirs > 0 then return {-2, count} end
  local best, best_n, best_t = nil, -1, 0
  for i = 1, #by, 2 do
    if redis.call('ZCARD', P .. 'room-msgs:' .. by[i]) == 0 then
      local n, t = held[holder(by[i + 1])], idle_since(SP, by[i])
      if n > best_n or (n == best_n and t < best_t) then best, best_n, best_t = by[i], n, t end
    end
  end
  if not best then return {-2, count} end
  drop_room(best, 'reclaimed', KEYS[2], SP)
  reclaimed = best
end
redis.call('HSET', KEYS[1], name, ARGV[5])
if uid ~= '' then redis.call('HSET', KEYS[4], name, uid .. ' ' .. addr) end
append(KEYS[2], '', {'d', ARGV[5], 'e', 'room'})
append(KEYS[3], name, {'d', ARGV[6], 'e', 'created'})
return {1, reclaimed}
"""
)

# KEYS: rooms, room-by, lobby stream. ARGV[4..]: name, user id, room streams' key prefix
# -> {1} | {0} no such room | {-1} a default room | {-2} not the creator | {-3, n} n live messages
DELETE_ROOM = (
    _LIB
    + """
local name, uid = ARGV[4], ARGV[5]
if redis.call('HEXISTS', KEYS[1], name) == 0 then return {0} end
local by = redis.call('HGET', KEYS[2], name)
if not by then return {-1} end
if string.match(by, '^(%S*) ') ~= uid then return {-2} end
local live = redis.call('ZCARD', P .. 'room-msgs:' .. name)
if live > 0 then return {-3, live} end
drop_room(name, 'deleted', KEYS[3], ARGV[6])
return {1}
"""
)

# KEYS: room-by, lobby stream. ARGV[4..]: idle ms, room streams' key prefix -> the rooms deleted
EXPIRE_ROOMS = (
    _LIB
    + """
local t = redis.call('TIME')
local cutoff = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ARGV[4])
local out = {}
for _, name in ipairs(redis.call('HKEYS', KEYS[1])) do
  if redis.call('ZCARD', P .. 'room-msgs:' .. name) == 0 and idle_since(ARGV[5], name) < cutoff then
    drop_room(name, 'expired', KEYS[2], ARGV[5])
    out[#out + 1] = name
  end
end
return out
"""
)

# KEYS: lobby stream. ARGV[4]: hello JSON. The lobby log is never empty: pages need an id.
HELLO = (
    _LIB
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then append(KEYS[1], '', {'d', ARGV[4], 'e', 'hello'}) end
return 1
"""
)

# KEYS: room-msgs:<room>, room stream, reads:<uid>
# ARGV[4..]: room, before (exclusive), limit -> {latest id or '', last read, {JSON...}} newest first
HISTORY = (
    _LIB
    + """
local ids = redis.call('ZREVRANGEBYSCORE', KEYS[1], '(' .. ARGV[5], '-inf', 'LIMIT', 0, tonumber(ARGV[6]) + 1)
local out = {}
for i, id in ipairs(ids) do out[i] = redis.call('HGET', P .. 'msg:' .. id, 'j') or '' end
return {latest(KEYS[2]), redis.call('HGET', KEYS[3], ARGV[4]) or '0', out}
"""
)

# KEYS: rooms, reads:<uid>, lobby stream -> {lobby latest id or '', {room JSON, unread, ...}}
ROOMS = (
    _LIB
    + """
local rooms = redis.call('HGETALL', KEYS[1])
local out = {}
for i = 1, #rooms, 2 do
  local last = redis.call('HGET', KEYS[2], rooms[i]) or '0'
  out[#out + 1] = rooms[i + 1]
  out[#out + 1] = redis.call('ZCOUNT', P .. 'room-msgs:' .. rooms[i], '(' .. last, '+inf')
end
return {latest(KEYS[3]), out}
"""
)

# KEYS: reads:<uid>. ARGV[4..]: room, message id, ttl ms
MARK_READ = (
    _LIB
    + """
mark(KEYS[1], ARGV[4], tonumber(ARGV[5]), ARGV[6])
return 1
"""
)

# KEYS: reads:<uid>, rooms, seq. ARGV[4]: ttl ms
START_READING = (
    _LIB
    + """
local seq = redis.call('GET', KEYS[3]) or '0'
for _, name in ipairs(redis.call('HKEYS', KEYS[2])) do redis.call('HSETNX', KEYS[1], name, seq) end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""
)
