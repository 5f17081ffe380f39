-- ARGV: prefix, instance, ttl ms, then per room: room, n, n user ids -> {room, user id, ...} not found
local P, inst, ttl, now = ARGV[1], ARGV[2], tonumber(ARGV[3]), now_ms()
local out, i = {}, 4
while i <= #ARGV do
  local room, n = ARGV[i], tonumber(ARGV[i + 1])
  local z = P .. 'presence:' .. room
  for j = 1, n do
    local member = ARGV[i + 1 + j] .. ' ' .. inst
    if redis.call('ZSCORE', z, member) then
      redis.call('ZADD', z, 'XX', now + ttl, member)
    else
      out[#out + 1] = room
      out[#out + 1] = ARGV[i + 1 + j]
    end
  end
  i = i + 2 + n
end
return out
