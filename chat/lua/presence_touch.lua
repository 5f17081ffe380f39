-- ARGV: prefix, ttl ms (0: release), user ids. Renews (or drops) the names these users hold.
local P, ttl = ARGV[1], tonumber(ARGV[2])
local function keep(key)
  if ttl > 0 then redis.call('PEXPIRE', key, ttl) else redis.call('DEL', key) end
end
for i = 3, #ARGV do
  local folded = redis.call('GET', P .. 'name-of:' .. ARGV[i])
  if folded and redis.call('GET', P .. 'name:' .. folded) == ARGV[i] then keep(P .. 'name:' .. folded) end
  keep(P .. 'name-of:' .. ARGV[i])
end
return 1
