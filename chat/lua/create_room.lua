-- KEYS: rooms, lobby stream, room stream, room-by
-- ARGV[2..]: name, room JSON, created JSON, max rooms (0: no limit), creator id ('' for a default
-- room), creator address, rooms per person, rooms per address, room streams' key prefix
-- -> {1, reclaimed room or ''} | {-1} exists | {-2, count} full | {-3, n} person's | {-4, n} address's
local name, limit, uid, addr, SP = ARGV[2], tonumber(ARGV[5]), ARGV[6], ARGV[7], ARGV[10]
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
if uid ~= '' and mine >= tonumber(ARGV[8]) then return {-3, mine} end
if addr ~= '' and theirs >= tonumber(ARGV[9]) then return {-4, theirs} end
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
redis.call('HSET', KEYS[1], name, ARGV[3])
if uid ~= '' then redis.call('HSET', KEYS[4], name, uid .. ' ' .. addr) end
sse_append(KEYS[2], ARGV[3], 'room')
room_append(KEYS[3], name, ARGV[4], 'created')
return {1, reclaimed}
