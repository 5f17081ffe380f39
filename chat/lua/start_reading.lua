-- KEYS: reads:<uid>, rooms, seq. ARGV[2]: ttl ms
local seq = redis.call('GET', KEYS[3]) or '0'
for _, name in ipairs(redis.call('HKEYS', KEYS[2])) do redis.call('HSETNX', KEYS[1], name, seq) end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
