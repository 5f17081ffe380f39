-- KEYS: room-by, lobby stream. ARGV[2..]: idle ms, room streams' key prefix -> the rooms deleted
local t = redis.call('TIME')
local cutoff = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ARGV[2])
local out = {}
for _, name in ipairs(redis.call('HKEYS', KEYS[1])) do
  if redis.call('ZCARD', P .. 'room-msgs:' .. name) == 0 and idle_since(ARGV[3], name) < cutoff then
    drop_room(name, 'expired', KEYS[2], ARGV[3])
    out[#out + 1] = name
  end
end
return out
