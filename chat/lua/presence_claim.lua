-- KEYS: name:<folded>, name-of:<user>. ARGV: user id, folded name, ttl ms, prefix -> 1 | 0 taken
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
local old = redis.call('GET', KEYS[2])
if old and old ~= ARGV[2] and redis.call('GET', ARGV[4] .. 'name:' .. old) == ARGV[1] then
  redis.call('DEL', ARGV[4] .. 'name:' .. old)
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
return 1
